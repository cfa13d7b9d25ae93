// The load test's upstream, run as its own process so its CPU is measured apart from the
// proxy's and it never shares an event loop with the harness. It must be cheap per request
// so that it does not cap the comparison: a fixed, precomputed body per listener, no body
// parsing, keep-alive held open across runs.
//
//   node loadtest/upstream.ts --names v1,v2,v3 [--cert FILE --key FILE]
//
// Prints one JSON line with the ports it bound: {"http":{"v1":P,...},"https":P,"h2":P}.
// Exits on SIGTERM or when its stdin closes, so it never outlives the harness.
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    names: { type: 'string', default: 'v1' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});

// Node's default keep-alive timeout (5 s) would drop the proxies' pooled connections between
// runs and make the first requests of the next run pay for new connections.
const KEEPALIVE_MS = 120_000;

interface Reply { body: Buffer; headers: Record<string, string> }

function replyFor(name: string): Reply {
  const body = Buffer.from(`ok from ${name}\n`);
  return { body, headers: { 'content-type': 'text/plain', 'content-length': String(body.length), 'x-upstream': name } };
}

// Requests carry no body in the load test; the reply goes out at once and any body that
// does arrive is drained by node, so nothing here waits on 'end'.
function makeHandler(reply: Reply) {
  return function answer(_req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void {
    (res as http.ServerResponse).writeHead(200, reply.headers);
    res.end(reply.body);
  };
}

function listen(server: http.Server | https.Server | http2.Http2SecureServer): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

async function main(): Promise<void> {
  const names = String(values.names).split(',').filter(Boolean);
  const servers: (http.Server | https.Server | http2.Http2SecureServer)[] = [];
  const ports: { http: Record<string, number>; https?: number; h2?: number } = { http: {} };
  for (const name of names) {
    const s = http.createServer({ keepAliveTimeout: KEEPALIVE_MS }, makeHandler(replyFor(name)));
    s.headersTimeout = KEEPALIVE_MS + 1000;
    servers.push(s);
    ports.http[name] = await listen(s);
  }
  if (values.cert && values.key) {
    const tls = { cert: readFileSync(values.cert), key: readFileSync(values.key) };
    const reply = replyFor(names[0]);
    const s1 = https.createServer({ ...tls, keepAliveTimeout: KEEPALIVE_MS }, makeHandler(reply));
    servers.push(s1);
    ports.https = await listen(s1);
    const s2 = http2.createSecureServer({ ...tls, allowHTTP1: true, maxSessionMemory: 64 }, makeHandler(reply));
    servers.push(s2);
    ports.h2 = await listen(s2);
  }
  process.stdout.write(JSON.stringify(ports) + '\n');
  const stop = () => {
    for (const s of servers) {
      (s as http.Server).closeAllConnections?.();
      s.close();
    }
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

main().catch((e: Error) => {
  process.stderr.write(`loadtest upstream: ${e.message}\n`);
  process.exit(1);
});

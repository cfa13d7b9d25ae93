// Real upstream servers on loopback for tests: they echo what they received as JSON, so a
// test can assert what the gateway actually sent (path after rewrite, headers after edits).
//
// Per-request controls, sent by the test as request headers:
//   x-echo-status: 503        answer with that status
//   x-echo-delay-ms: 200      wait before answering
//   x-echo-header: k=v        add a response header (repeatable, comma-separated)
// A test needing more passes `handler`, which may take over a request (return true).
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import type { Pem } from './certs.ts';

export interface EchoReply {
  name: string;
  method: string;
  path: string;
  authority: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  httpVersion: string;
}

export interface Upstream {
  name: string;
  port: number;
  /** Requests received, in order. */
  received: EchoReply[];
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, body: string) => boolean;

export interface EchoOptions {
  name?: string;
  /** http1 (default), h2c (HTTP/2 without TLS), h2 (HTTP/2 over TLS, needs `tls`), https (HTTP/1.1 over TLS). */
  protocol?: 'http1' | 'h2c' | 'h2' | 'https';
  tls?: Pem;
  host?: string;
  handler?: Handler;
  /** Answer WebSocket upgrades by echoing each message back prefixed with the server name. */
  websocket?: boolean;
}

export async function startEcho(opts: EchoOptions = {}): Promise<Upstream> {
  const name = opts.name ?? 'echo';
  const received: EchoReply[] = [];
  const onRequest = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = { ...req.headers } as Record<string, string | string[] | undefined>;
      const authority = String(req.headers[':authority'] ?? req.headers.host ?? '');
      const reply: EchoReply = { name, method: req.method ?? '', path: req.url ?? '', authority, headers, body, httpVersion: req.httpVersion };
      received.push(reply);
      if (opts.handler?.(req, res, body)) return;
      const status = Number(req.headers['x-echo-status'] ?? 200);
      const delay = Number(req.headers['x-echo-delay-ms'] ?? 0);
      const extra = String(req.headers['x-echo-header'] ?? '');
      const send = () => {
        if (res.writableEnded || res.destroyed) return;
        const out: Record<string, string> = { 'content-type': 'application/json', 'x-upstream': name };
        for (const kv of extra.split(',').filter(Boolean)) {
          const i = kv.indexOf('=');
          out[kv.slice(0, i).trim()] = kv.slice(i + 1).trim();
        }
        (res as http.ServerResponse).writeHead(status, out);
        res.end(JSON.stringify(reply));
      };
      if (delay > 0) setTimeout(send, delay); else send();
    });
  };

  const protocol = opts.protocol ?? 'http1';
  let server: http.Server | http2.Http2Server | http2.Http2SecureServer;
  if (protocol === 'h2c') server = http2.createServer(onRequest);
  else if (protocol === 'h2') server = http2.createSecureServer({ cert: opts.tls!.certPem, key: opts.tls!.keyPem, allowHTTP1: true }, onRequest);
  else if (protocol === 'https') server = (await import('node:https')).createServer({ cert: opts.tls!.certPem, key: opts.tls!.keyPem }, onRequest);
  else server = http.createServer(onRequest);

  let wss: WebSocketServer | null = null;
  if (opts.websocket) {
    wss = new WebSocketServer({ server: server as http.Server });
    wss.on('connection', (ws, req) => {
      ws.send(`${name} connected ${req.url}`);
      ws.on('message', (m, isBinary) => ws.send(isBinary ? m : `${name}: ${m.toString()}`));
    });
  }

  const sessions = new Set<http2.Http2Session>();
  server.on('session', (s: http2.Http2Session) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, opts.host ?? '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    name,
    port,
    received,
    close: () => new Promise<void>((resolve) => {
      wss?.clients.forEach((c) => c.terminate());
      wss?.close();
      for (const s of sessions) s.destroy();
      (server as http.Server).closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

/** A port that was free a moment ago (listen on 0, close). Good enough on loopback in tests. */
export async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

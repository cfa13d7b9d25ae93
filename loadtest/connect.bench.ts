// Throughput of a CONNECT tunnel through the egress proxy against a direct connection to the
// same server, for a 100 MB download (issue 5: the tunnel must reach ≥ 80% of direct).
//
// Two payloads, each measured direct and tunnelled, interleaved A B A B so machine drift
// hits both equally; the best of the rounds is kept (a transfer can only be slowed by noise):
//   tcp  a plain TCP server on loopback, allowed by a ServiceEntry `addresses` entry (TCP).
//   tls  a TLS server for `bulk.example.test` (resolved to 127.0.0.1 by --resolve), allowed
//        by an HTTPS entry; the client's SNI is checked by the proxy before any byte flows.
// The client speaks first in both (a short request line), as TLS clients do.
//
// Run: npm run bench:connect  (BENCH_MB=100 BENCH_ROUNDS=3 to change; `-- --write-readme`
// puts the table in README's Performance section, between its connect markers)
import { execFileSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { selfSigned } from './certs.ts';
import { BIN, ROOT, writeConfig } from './meshgate.ts';
import { freePort, waitFor } from './util.ts';
import { replaceConnectSection } from './report.ts';

const MB = Number(process.env.BENCH_MB ?? 100);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TOTAL = MB * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
const HOST = 'bulk.example.test';

/** Waits for the client's first line, then sends TOTAL bytes and closes. */
function serveBulk(sock: net.Socket): void {
  sock.once('data', () => {
    let left = TOTAL;
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!sock.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) { sock.once('drain', pump); return; }
      }
      sock.end();
    };
    pump();
  });
  sock.on('error', () => {});
}

/** Reads until the server closes; resolves with the bytes received and the seconds taken. */
function download(sock: net.Socket, start: bigint): Promise<{ bytes: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    sock.on('data', (d: Buffer) => { bytes += d.length; });
    sock.on('end', () => resolve({ bytes, seconds: Number(process.hrtime.bigint() - start) / 1e9 }));
    sock.on('error', reject);
    sock.write('GET bulk\n');
  });
}

/** Opens a tunnel: resolves with the socket once the proxy answered 200. */
function connectTunnel(proxyPort: number, authority: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(proxyPort, '127.0.0.1');
    s.setNoDelay(true);
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.removeListener('data', onData);
      if (!/^HTTP\/1\.[01] 200/.test(head)) { s.destroy(); reject(new Error(`CONNECT ${authority}: ${head.split('\r\n')[0]}`)); return; }
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      if (rest.length > 0) s.unshift(rest);
      resolve(s);
    };
    s.on('data', onData);
    s.on('error', reject);
    s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

function tlsOver(socket: net.Socket | null, port: number, ca: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const opts: tls.ConnectionOptions = { servername: HOST, ca, ...(socket === null ? { host: '127.0.0.1', port } : { socket }) };
    const t = tls.connect(opts, () => resolve(t));
    t.on('error', reject);
  });
}

async function once(kind: 'tcp' | 'tls', path: 'direct' | 'tunnel', ports: { tcp: number; tls: number; proxy: number }, ca: string): Promise<number> {
  const start = process.hrtime.bigint();
  let sock: net.Socket;
  if (kind === 'tcp') {
    sock = path === 'direct' ? net.connect(ports.tcp, '127.0.0.1') : await connectTunnel(ports.proxy, `127.0.0.1:${ports.tcp}`);
  } else {
    const tunnel = path === 'direct' ? null : await connectTunnel(ports.proxy, `${HOST}:${ports.tls}`);
    sock = await tlsOver(tunnel, ports.tls, ca);
  }
  const r = await download(sock, start);
  sock.destroy();
  if (r.bytes !== TOTAL) throw new Error(`${kind} ${path}: received ${r.bytes} of ${TOTAL} bytes`);
  return TOTAL / 1024 / 1024 / r.seconds;
}

async function main(): Promise<void> {
  const pem = selfSigned(HOST);
  const tcpServer = net.createServer(serveBulk);
  const tlsServer = tls.createServer({ cert: pem.certPem, key: pem.keyPem }, serveBulk);
  const ports = { tcp: await freePort(), tls: await freePort(), proxy: await freePort() };
  await new Promise<void>((r) => tcpServer.listen(ports.tcp, '127.0.0.1', r));
  await new Promise<void>((r) => tlsServer.listen(ports.tls, '127.0.0.1', r));

  const dir = await mkdtemp(join(tmpdir(), 'meshgate-connect-'));
  await writeConfig(dir, {
    'egress.yaml': `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bulk-tls}
spec:
  hosts: [${HOST}]
  ports: [{number: ${ports.tls}, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bulk-tcp}
spec:
  hosts: [bulk-tcp.example.test]
  addresses: [127.0.0.1/32]
  ports: [{number: ${ports.tcp}, name: tcp, protocol: TCP}]
  resolution: NONE
`,
  });
  const admin = await freePort();
  const health = await freePort();
  const child = spawn(BIN, [
    'up', '--config', dir, '--egress', '--proxy-port', String(ports.proxy), '--resolve', `${HOST}=127.0.0.1`,
    '--admin-port', String(admin), '--health-port', String(health), '--metrics-port', 'off', '--discovery-port', String(await freePort()),
    '--debug-port', String(await freePort()), '--log-level', 'warn',
  ], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${health}/healthz/ready`).catch(() => null))?.status === 200, 20_000, 'meshgate ready');
    const load = loadavg();
    const rows: { kind: string; direct: number; tunnel: number }[] = [];
    for (const kind of ['tcp', 'tls'] as const) {
      const best = { direct: 0, tunnel: 0 };
      for (let i = 0; i < ROUNDS; i++) {
        for (const path of ['direct', 'tunnel'] as const) best[path] = Math.max(best[path], await once(kind, path, ports, pem.certPem));
      }
      rows.push({ kind, ...best });
    }
    console.log(`CONNECT tunnel vs direct, ${MB} MB download, best of ${ROUNDS} (MB/s)`);
    console.log('kind   direct   tunnel  ratio');
    for (const r of rows) console.log(`${r.kind.padEnd(4)} ${r.direct.toFixed(0).padStart(8)} ${r.tunnel.toFixed(0).padStart(8)} ${(r.tunnel / r.direct).toFixed(2).padStart(6)}`);
    if (process.argv.includes('--write-readme')) await writeReadme(rows, load);
  } finally {
    child.kill('SIGTERM');
    tcpServer.close();
    tlsServer.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The README block: generated, like the load-test table above it. */
async function writeReadme(rows: { kind: string; direct: number; tunnel: number }[], load: number[]): Promise<void> {
  const commit = execFileSync('git', ['rev-parse', '--short=10', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  const lines = [
    `_Generated by \`npm run bench:connect -- --write-readme\` on ${new Date().toISOString().slice(0, 10)}; regenerate, do not edit by hand._`,
    '',
    `Egress CONNECT tunnel against a direct connection to the same loopback server, ${MB} MB download, best of ${ROUNDS} rounds, interleaved. ` +
      '`tcp`: opaque bytes allowed by a ServiceEntry `addresses` entry; `tls`: a TLS server whose ClientHello SNI the proxy checks before relaying. ' +
      `Machine: ${cpus().length} cores (${cpus()[0]?.model.trim() ?? '?'}), node ${process.version}; meshgate ${commit}${dirty ? ' with uncommitted changes' : ''}; load average at start ${load.map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    '| payload | direct MB/s | tunnel MB/s | tunnel/direct |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.kind} | ${r.direct.toFixed(0)} | ${r.tunnel.toFixed(0)} | ${(r.tunnel / r.direct).toFixed(2)} |`),
  ];
  const path = join(ROOT, 'README.md');
  await writeFile(path, replaceConnectSection(await readFile(path, 'utf8'), lines.join('\n')));
  console.log('README.md CONNECT section updated');
}

await main();

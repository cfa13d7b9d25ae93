// The proxy's admin port (Envoy's :15000) and health port (Istio's :15021). Admin serves
// config and internal state, so it listens on localhost unless told otherwise
// [ISTIO-SECURITY-2026-001]; health is for the kubelet/load balancer and listens on all
// addresses. Plain node:http: a handful of read-only GET endpoints need no framework.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AdminSource {
  version(): string | null;
  configDump(): unknown;
  listeners(): unknown;
  clusters(): unknown;
  problems(): unknown;
  serverInfo(): unknown;
  /** A config is applied and every listener of it is bound. */
  ready(): boolean;
  /** The egress forward proxy: mode, entries, per-host decisions of every process. */
  egress?(): Promise<unknown>;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), 'cache-control': 'no-store' });
  res.end(s);
}

function sendText(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function adminRequest(src: AdminSource, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'method not allowed\n');
  const path = (req.url ?? '/').split('?')[0];
  try {
    switch (path) {
      case '/config_dump': return sendJson(res, 200, src.configDump());
      case '/clusters': return sendJson(res, 200, src.clusters());
      case '/listeners': return sendJson(res, 200, src.listeners());
      case '/problems': return sendJson(res, 200, src.problems());
      case '/server_info': return sendJson(res, 200, src.serverInfo());
      case '/egress': {
        if (src.egress === undefined) return sendText(res, 404, 'not found\n');
        // Gathers every process's counts (--concurrency): answered when they are in.
        src.egress().then((v) => sendJson(res, 200, v), (e: Error) => sendText(res, 500, `${e.message}\n`));
        return;
      }
      case '/ready': return src.ready() ? sendText(res, 200, 'LIVE\n') : sendText(res, 503, 'PRE_INITIALIZING\n');
      case '/': return sendText(res, 200, 'meshgate admin: /config_dump /clusters /listeners /problems /server_info /egress /ready\n');
      default: return sendText(res, 404, 'not found\n');
    }
  } catch (e) {
    sendText(res, 500, `${(e as Error).message}\n`);
  }
}

function healthRequest(src: AdminSource, req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/healthz/ready') return sendText(res, 404, 'not found\n');
  if (src.ready()) sendText(res, 200, '');
  else sendText(res, 503, 'not ready: no config applied yet\n');
}

function listen(server: http.Server, port: number, host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.removeListener('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export async function startAdmin(src: AdminSource, address: string, port: number): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => adminRequest(src, req, res));
  server.keepAliveTimeout = 5_000;
  try {
    return { server, port: await listen(server, port, address) };
  } catch (e) {
    throw new Error(`admin port ${address}:${port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export async function startHealth(src: AdminSource, port: number): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => healthRequest(src, req, res));
  server.keepAliveTimeout = 5_000;
  try {
    return { server, port: await listen(server, port, undefined) };
  } catch (e) {
    throw new Error(`health port ${port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

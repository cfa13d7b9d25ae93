// A stand-in for the downstream half of the data plane, for tests of gateway/upstream: a
// real HTTP/1.1 or h2c server on loopback whose handler turns each request into an
// UpstreamRequest (the way the real downstream half does) and calls `upstreams.forward`.
// Also compiled clusters with defaults, so a test states only what it is about.
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { DEFAULT_CONNECTION_POOL } from '../../api/proxyconfig.ts';
import type { Cluster, Endpoint } from '../../api/proxyconfig.ts';
import type { DownstreamReq, DownstreamRes, ForwardResult, HeaderMap, ResponseHooks, UpstreamRequest, Upstreams } from '../../gateway/upstream/types.ts';

export function makeCluster(name: string, ports: (number | Partial<Endpoint>)[], over: Partial<Cluster> = {}): Cluster {
  return {
    name,
    service: `${name}.default.svc.cluster.local`,
    port: 80,
    subset: null,
    protocol: 'http1',
    dns: false,
    tls: null,
    endpoints: ports.map((p) => (typeof p === 'number'
      ? { address: '127.0.0.1', port: p, labels: {}, weight: 1 }
      : { address: '127.0.0.1', port: 0, labels: {}, weight: 1, ...p })),
    lb: { kind: 'ROUND_ROBIN' },
    connectionPool: { ...DEFAULT_CONNECTION_POOL },
    outlierDetection: null,
    sources: [`test/${name}`],
    ...over,
  };
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);

export interface DownstreamOptions {
  upstreams: Upstreams;
  /** Cluster to forward to; a function picks per request. */
  cluster: string | ((req: DownstreamReq) => string);
  protocol?: 'http1' | 'h2c';
  /** Route settings per request (timeouts, retries); default none. */
  route?: (req: DownstreamReq) => Partial<UpstreamRequest>;
  /** Read the body into a Buffer first, as the downstream half does for routes that retry or mirror. */
  bufferBody?: boolean | ((req: DownstreamReq) => boolean);
  /** Mirror every request to this cluster. */
  mirror?: string;
  hooks?: ResponseHooks;
}

export interface Downstream {
  port: number;
  url: string;
  results: ForwardResult[];
  /** Resolves with the next ForwardResult (already collected ones first). */
  nextResult(): Promise<ForwardResult>;
  close(): Promise<void>;
}

export function upstreamRequestOf(req: DownstreamReq, body: Buffer | null): UpstreamRequest {
  const headers: HeaderMap = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || k.startsWith(':') || HOP.has(k)) continue;
    if (k === 'te' && v !== 'trailers') continue;
    headers[k] = v as string | string[];
  }
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const contentType = String(req.headers['content-type'] ?? '');
  return {
    method: req.method ?? 'GET',
    path: url,
    authority: String(req.headers[':authority'] ?? req.headers.host ?? ''),
    headers,
    body,
    timeoutMs: null,
    retries: null,
    hashHeaders: req.headers,
    sourceIp: req.socket?.remoteAddress ?? '',
    query: q === -1 ? '' : url.slice(q + 1),
    grpc: contentType.startsWith('application/grpc'),
  };
}

export async function startDownstream(opts: DownstreamOptions): Promise<Downstream> {
  const results: ForwardResult[] = [];
  const waiters: ((r: ForwardResult) => void)[] = [];
  let taken = 0;
  const hooks: ResponseHooks = opts.hooks ?? { onHeaders() {} };
  const record = (r: ForwardResult) => {
    results.push(r);
    const w = waiters.shift();
    if (w) { taken++; w(r); }
  };
  const handle = async (req: DownstreamReq, res: DownstreamRes) => {
    let body: Buffer | null = null;
    if (typeof opts.bufferBody === 'function' ? opts.bufferBody(req) : opts.bufferBody) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = Buffer.concat(chunks);
    }
    const up = { ...upstreamRequestOf(req, body), ...(opts.route?.(req) ?? {}) };
    const cluster = typeof opts.cluster === 'string' ? opts.cluster : opts.cluster(req);
    if (opts.mirror) opts.upstreams.mirror(opts.mirror, up);
    record(await opts.upstreams.forward(cluster, req, res, up, hooks));
  };
  const server = opts.protocol === 'h2c'
    ? http2.createServer((req, res) => void handle(req, res))
    : http.createServer((req, res) => void handle(req, res));
  if (opts.protocol !== 'h2c') {
    (server as http.Server).on('upgrade', (req: http.IncomingMessage, socket, head: Buffer) => {
      const up = { ...upstreamRequestOf(req, null), ...(opts.route?.(req) ?? {}) };
      // The upgrade tunnel needs its hop-by-hop headers back.
      up.headers = { ...up.headers, connection: 'Upgrade', upgrade: String(req.headers.upgrade) };
      const cluster = typeof opts.cluster === 'string' ? opts.cluster : opts.cluster(req);
      void opts.upstreams.upgrade(cluster, req, socket, head, up).then(record);
    });
  }
  const sessions = new Set<http2.Http2Session>();
  server.on('session', (s: http2.Http2Session) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    results,
    nextResult: () => {
      if (taken < results.length) return Promise.resolve(results[taken++]);
      return new Promise((resolve) => waiters.push(resolve));
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sessions) s.destroy();
      (server as http.Server).closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

/** Makes a request with node:http (fresh connection each time unless `agent` given); resolves with status, headers, body. */
export function get(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer; agent?: http.Agent } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; trailers: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? 'GET', headers: init.headers, agent: init.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), trailers: res.trailers as Record<string, string> }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

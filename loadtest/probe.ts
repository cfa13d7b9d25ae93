// Before anything is measured, each target answers a burst of real requests with node's own
// clients: every answer must be 200 from the expected upstreams. That catches a proxy that
// is fast because it answers 404, and proves nginx and meshgate route the same way (for
// `headers`, both split between v1 and v3 and never pick v2).
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import type { Protocol, RequestSpec } from './scenarios.ts';

export interface ProbeResult { statuses: Record<string, number>; upstreams: Record<string, number> }

function tally(r: ProbeResult, status: number, body: string): void {
  r.statuses[status] = (r.statuses[status] ?? 0) + 1;
  const m = /^ok from (\S+)/.exec(body);
  if (m) r.upstreams[m[1]] = (r.upstreams[m[1]] ?? 0) + 1;
}

function h1Once(mod: typeof http | typeof https, opts: https.RequestOptions): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = mod.request(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

export async function probe(protocol: Protocol, port: number, request: RequestSpec, count: number, ca: string): Promise<ProbeResult> {
  const r: ProbeResult = { statuses: {}, upstreams: {} };
  if (protocol === 'h2') {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: request.host });
    try {
      for (let i = 0; i < count; i++) {
        const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const s = session.request({ ':path': request.path, ':authority': request.host, ...request.headers });
          let status = 0;
          let body = '';
          s.setEncoding('utf8');
          s.on('response', (h) => { status = Number(h[':status']); });
          s.on('data', (c: string) => { body += c; });
          s.on('end', () => resolve({ status, body }));
          s.on('error', reject);
          s.setTimeout(5000, () => s.close(http2.constants.NGHTTP2_CANCEL));
          s.end();
        });
        tally(r, status, body);
      }
    } finally {
      session.close();
    }
    return r;
  }
  const mod = protocol === 'https' ? https : http;
  const agent = new mod.Agent({ keepAlive: true, maxSockets: 1, ...(protocol === 'https' ? { ca, servername: request.host } : {}) });
  try {
    for (let i = 0; i < count; i++) {
      const { status, body } = await h1Once(mod, { host: '127.0.0.1', port, path: request.path, agent, headers: { host: request.host, ...request.headers } });
      tally(r, status, body);
    }
  } finally {
    agent.destroy();
  }
  return r;
}

/** A sentence naming what is wrong, or null when the probe saw only 200s from the expected upstreams. */
export function probeProblem(r: ProbeResult, expect: string[]): string | null {
  const bad = Object.entries(r.statuses).filter(([s]) => s !== '200');
  if (bad.length) return `answered ${bad.map(([s, n]) => `${n}× ${s}`).join(', ')}`;
  const seen = Object.keys(r.upstreams).sort();
  const unexpected = seen.filter((n) => !expect.includes(n));
  const missing = expect.filter((n) => !seen.includes(n));
  if (unexpected.length || missing.length) return `reached upstreams ${JSON.stringify(r.upstreams)}, expected exactly ${expect.join(', ')}`;
  return null;
}

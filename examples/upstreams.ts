// Small upstream services for the examples, on the loopback ports that services.yaml
// names, so the README's curl lines work as printed.
import http from 'node:http';

interface Example { port: number; handle(req: http.IncomingMessage, body: string): { status?: number; type: string; body: string } }

const reviews = (version: string, stars: string) => (): { type: string; body: string } => ({
  type: 'application/json',
  body: JSON.stringify({ service: 'reviews', version, reviews: [{ reviewer: 'Reviewer1', text: 'An extremely entertaining play by Shakespeare.', rating: stars }] }) + '\n',
});

export const EXAMPLES: Record<string, Example> = {
  productpage: { port: 19081, handle: (req) => ({ type: 'text/plain', body: `productpage v1: you asked for ${req.url}\n` }) },
  'reviews-v1': { port: 19082, handle: reviews('v1', '') },
  'reviews-v2': { port: 19083, handle: reviews('v2', '★★★★☆ (black)') },
  'reviews-v3': { port: 19084, handle: reviews('v3', '★★★★☆ (red)') },
  // What httpbin's /anything does: echo the request back.
  httpbin: {
    port: 19085,
    handle: (req, body) => ({ type: 'application/json', body: JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }, null, 2) + '\n' }),
  },
};

export async function startExampleUpstreams(host = '127.0.0.1'): Promise<() => Promise<void>> {
  const servers: http.Server[] = [];
  for (const [name, ex] of Object.entries(EXAMPLES)) {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const out = ex.handle(req, Buffer.concat(chunks).toString('utf8'));
        res.writeHead(out.status ?? 200, { 'content-type': out.type, 'x-served-by': name });
        res.end(out.body);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`example upstream ${name} cannot listen on ${host}:${ex.port}: ${err.message}`)));
      server.listen(ex.port, host, () => resolve());
    });
    servers.push(server);
  }
  return async () => {
    await Promise.all(servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); })));
  };
}

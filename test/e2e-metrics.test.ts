// `gateway --concurrency 2` + `pilot`: one scrape of the first process's metrics port counts
// the requests every process served (each counts its own; the scrape gathers the workers'
// over IPC and sums them), so a dashboard sees the gateway, not one process of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { edgeGateway, loopbackService } from './helpers/config.ts';
import { startEcho, freePort } from './helpers/upstream.ts';
import { tempDir } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, scrape, waitReady } from './helpers/meshgate.ts';
import { parseProm, total } from './helpers/prometheus.ts';

const config = (port: number, upstream: number) => `${edgeGateway(port)}---
${loopbackService('app', 'app.internal', upstream)}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - match: [{uri: {prefix: /app}}]
    route: [{destination: {host: app.internal}}]
`;

/** One request on a fresh connection, so the kernel picks a process for each. */
function freshGet(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

/** Sum of the samples of one metric whose labels include `where`. */

test('gateway --concurrency 2: one scrape counts the requests of both processes exactly', async (t) => {
  const up = await startEcho({ name: 'app' });
  const dir = await tempDir();
  const port = await freePort();
  await dir.write('c.yaml', config(port, up.port));
  const discovery = await freePort();
  const pilot = run(['pilot', '--config', dir.path, '--discovery-port', String(discovery), '--debug-port', String(await freePort())]);
  const ports = await gatewayPorts();
  const gw = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, '--concurrency', '2', ...portFlags(ports)]);
  t.after(async () => {
    await Promise.all([gw.stop(), pilot.stop()]);
    await up.close();
    await dir.cleanup();
  });
  await waitReady(gw, ports.health);
  // Ready means the first process applied the version; the worker follows within moments.
  await new Promise((r) => setTimeout(r, 300));

  const ok = 40;
  const missing = 7;
  for (let i = 0; i < ok; i++) assert.equal(await freshGet(port, `/app/${i}`), 200);
  for (let i = 0; i < missing; i++) assert.equal(await freshGet(port, `/nothing/${i}`), 404);
  assert.equal(up.received.length, ok);

  const samples = parseProm(await scrape(ports.metrics));
  assert.equal(total(samples, 'istio_requests_total', { destination_service: 'app.internal', response_code: '200', response_flags: '-' }), ok);
  assert.equal(total(samples, 'istio_requests_total', { destination_service: 'unknown', response_code: '404', response_flags: 'NR' }), missing);
  assert.equal(total(samples, 'istio_request_duration_milliseconds_count', {}), ok + missing);
  // Counted once in the sum, not once per process: the serving version is the gateway's.
  assert.equal(total(samples, 'meshgate_config_version_info', {}), 1);
  // Repeated scrapes agree (nothing is reset or counted twice by scraping).
  assert.equal(total(parseProm(await scrape(ports.metrics)), 'istio_requests_total', {}), ok + missing);
});

// `meshgate up` as a user runs it: a real process on a folder of YAML, real upstreams,
// real clients. Hot reload, invalid edits, and what the admin and health ports say.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEcho, freePort, type Upstream } from './helpers/upstream.ts';
import { tempDir, eventually, type TempDir } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady, configDump, type Proc, type GatewayPorts } from './helpers/meshgate.ts';

const gateway = (port: number) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: ${port}, name: http, protocol: HTTP}
    hosts: ["*"]
`;

const services = (v1: number, v2: number) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {http: ${v1}}
    labels: {version: v1}
  - address: 127.0.0.1
    ports: {http: ${v2}}
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`;

const routes = (subset: string, extra = '') => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - match:
    - uri: {prefix: /reviews}
    route:
    - destination: {host: reviews, subset: ${subset}}
${extra}`;

describe('meshgate up', () => {
  let dir: TempDir;
  let v1: Upstream;
  let v2: Upstream;
  let proc: Proc;
  let ports: GatewayPorts;
  let http: number;

  before(async () => {
    v1 = await startEcho({ name: 'v1' });
    v2 = await startEcho({ name: 'v2' });
    http = await freePort();
    ports = await gatewayPorts();
    dir = await tempDir();
    await dir.write('gateway.yaml', gateway(http));
    await dir.write('services.yaml', services(v1.port, v2.port));
    await dir.write('routes.yaml', routes('v1'));
    proc = run(['up', '--config', dir.path, ...portFlags(ports),
      '--discovery-port', String(await freePort()), '--debug-port', String(await freePort())]);
    await waitReady(proc, ports.health);
  });

  after(async () => {
    await proc?.stop();
    await v1?.close();
    await v2?.close();
    await dir?.cleanup();
  });

  test('routes by the VirtualService and answers 404 when nothing matches', async () => {
    const r = await fetch(`http://127.0.0.1:${http}/reviews/1`);
    assert.equal(r.status, 200);
    const body = (await r.json()) as { name: string; path: string; headers: Record<string, string> };
    assert.equal(body.name, 'v1');
    assert.equal(body.path, '/reviews/1');
    assert.ok(body.headers['x-request-id'], 'x-request-id generated');
    assert.equal(body.headers['x-forwarded-proto'], 'http');
    const miss = await fetch(`http://127.0.0.1:${http}/ratings`);
    assert.equal(miss.status, 404);
  });

  test('admin port dumps the compiled config and its version', async () => {
    const dump = await configDump(ports.admin);
    assert.match(dump.version, /^[0-9a-f]{16}$/);
    assert.equal(dump.config.listeners[0].port, http);
    assert.ok(dump.config.clusters.some((c) => c.name === 'outbound|9080|v1|reviews.default.svc.cluster.local'));
  });

  test('an edited file applies within a second, without failing requests in flight', async () => {
    const before = (await configDump(ports.admin)).version;
    let failures = 0;
    let sent = 0;
    const seen = new Set<string>();
    const deadline = Date.now() + 4000;
    let stop = false;
    // Two clients keep requests flowing (bounded by time and count) while the config changes.
    const load = async () => {
      while (!stop && Date.now() < deadline && sent < 5000) {
        sent++;
        try {
          const r = await fetch(`http://127.0.0.1:${http}/reviews/x`);
          const b = (await r.json()) as { name: string };
          if (r.status !== 200) failures++;
          seen.add(b.name);
        } catch {
          failures++;
        }
      }
    };
    const loaders = [load(), load()];
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await dir.write('routes.yaml', routes('v2'));
    await eventually(async () => (await configDump(ports.admin)).version !== before, 3000, 'new version applied');
    const applyMs = Date.now() - t0;
    await eventually(async () => ((await (await fetch(`http://127.0.0.1:${http}/reviews/x`)).json()) as { name: string }).name === 'v2', 1000, 'v2 serving');
    stop = true;
    await Promise.all(loaders);
    assert.ok(applyMs < 1000, `applied in ${applyMs} ms`);
    assert.equal(failures, 0, `${failures} of ${sent} requests failed during the reload`);
    assert.ok(seen.has('v1') && seen.has('v2'), 'traffic moved from v1 to v2');
  });

  test('an invalid edit is rejected by name and the last good config keeps serving', async () => {
    await dir.write('routes.yaml', routes('v2'));
    const good = (await configDump(ports.admin)).version;
    await dir.write('routes.yaml', routes('v1', '    timeout: 5 seconds\n'));
    const problems: string = await eventually(async () => {
      const r = await fetch(`http://127.0.0.1:${ports.admin}/problems`);
      const text = await r.text();
      return /5 seconds/.test(text) ? text : '';
    }, 3000, 'the problem on the admin port');
    assert.match(problems, /MG_CONFIG_DURATION/);
    assert.match(problems, /routes\.yaml/);
    assert.match(problems, /VirtualService\/default\/reviews/);
    assert.match(problems, /spec\.http\[0\]\.timeout/);
    assert.match(proc.output(), /5 seconds/, 'and in the log');
    assert.equal((await configDump(ports.admin)).version, good, 'no new version');
    const b = (await (await fetch(`http://127.0.0.1:${http}/reviews/x`)).json()) as { name: string };
    assert.equal(b.name, 'v2', 'the last good route still serves');
  });

  test('malformed YAML is reported with its line and nothing that was serving breaks', async () => {
    await dir.write('routes.yaml', routes('v2'));
    await dir.write('routes.yaml', 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: ["*"\n');
    await eventually(() => /MG_CONFIG_YAML/.test(proc.output()), 3000, 'YAML error logged');
    assert.match(proc.output(), /routes\.yaml:\d+:\d+/);
    const r = await fetch(`http://127.0.0.1:${http}/reviews/x`);
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { name: string }).name, 'v2');
  });

  test('removing a file removes its routes', async () => {
    await dir.write('routes.yaml', routes('v2'));
    await eventually(async () => (await fetch(`http://127.0.0.1:${http}/reviews/x`)).status === 200, 3000, 'route back');
    await dir.remove('routes.yaml');
    await eventually(async () => (await fetch(`http://127.0.0.1:${http}/reviews/x`)).status === 404, 3000, 'route gone')
      .catch((err: Error) => { throw new Error(`${err.message}\n${proc.output().slice(-3000)}`); });
    await dir.write('routes.yaml', routes('v1'));
    await eventually(async () => (await fetch(`http://127.0.0.1:${http}/reviews/x`)).status === 200, 3000, 'route restored');
  });
});

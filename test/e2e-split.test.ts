// Pilot and gateways as separate processes: each gateway runs only the Gateways that
// select its labels, and keeps serving when pilot goes away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEcho, freePort } from './helpers/upstream.ts';
import { tempDir, eventually } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady, configDump } from './helpers/meshgate.ts';

const config = (ingressPort: number, internalPort: number, upstream: number) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: ${ingressPort}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: istio-system}
spec:
  selector: {app: internal-gateway}
  servers:
  - port: {number: ${internalPort}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.example.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${upstream}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: app.example.internal}}]
    headers: {response: {set: {x-gateway: public}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: internal}
spec:
  hosts: ["*"]
  gateways: [istio-system/internal]
  http:
  - route: [{destination: {host: app.example.internal}}]
    headers: {response: {set: {x-gateway: internal}}}
`;

test('pilot + two gateways: each serves only what selects it, and survives pilot restarts', async (t) => {
  const up = await startEcho({ name: 'app' });
  const dir = await tempDir();
  const ingressPort = await freePort();
  const internalPort = await freePort();
  await dir.write('config.yaml', config(ingressPort, internalPort, up.port));
  const discovery = await freePort();
  const debug = await freePort();
  const pilotArgs = ['pilot', '--config', dir.path, '--discovery-port', String(discovery), '--debug-port', String(debug)];
  let pilot = run(pilotArgs);
  const a = await gatewayPorts();
  const b = await gatewayPorts();
  const ingress = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, ...portFlags(a), '--id', 'ingress-1']);
  const internal = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, '--labels', 'app=internal-gateway', ...portFlags(b), '--id', 'internal-1']);
  t.after(async () => {
    await Promise.all([pilot.stop(), ingress.stop(), internal.stop()]);
    await up.close();
    await dir.cleanup();
  });
  await waitReady(ingress, a.health);
  await waitReady(internal, b.health);

  const ingressDump = await configDump(a.admin);
  const internalDump = await configDump(b.admin);
  assert.deepEqual(ingressDump.config.listeners.map((l) => l.port), [ingressPort]);
  assert.deepEqual(internalDump.config.listeners.map((l) => l.port), [internalPort]);

  const r1 = await fetch(`http://127.0.0.1:${ingressPort}/x`);
  assert.equal(r1.headers.get('x-gateway'), 'public');
  const r2 = await fetch(`http://127.0.0.1:${internalPort}/x`);
  assert.equal(r2.headers.get('x-gateway'), 'internal');

  // Pilot shows both proxies and their acknowledged versions.
  const syncz = (await (await fetch(`http://127.0.0.1:${debug}/debug/syncz`)).json()) as { id: string; acked: string }[];
  assert.deepEqual(syncz.map((s) => s.id).sort(), ['ingress-1', 'internal-1']);
  assert.equal(syncz.find((s) => s.id === 'ingress-1')!.acked, ingressDump.version);

  // Pilot goes away: the gateways keep serving their last config.
  await pilot.stop();
  const r3 = await fetch(`http://127.0.0.1:${ingressPort}/x`);
  assert.equal(r3.status, 200);
  const info = (await (await fetch(`http://127.0.0.1:${a.admin}/server_info`)).json()) as { discovery: { connected: boolean } };
  assert.equal(info.discovery.connected, false);

  // A config change while pilot is down, then pilot comes back: the gateways reconnect and get it.
  await dir.write('config.yaml', config(ingressPort, internalPort, up.port).replace('x-gateway: public', 'x-gateway: public-v2'));
  pilot = run(pilotArgs);
  await eventually(async () => (await fetch(`http://127.0.0.1:${ingressPort}/x`)).headers.get('x-gateway') === 'public-v2', 15_000, 'gateway reconnected and applied the change');
  assert.equal((await fetch(`http://127.0.0.1:${internalPort}/x`)).headers.get('x-gateway'), 'internal');
});

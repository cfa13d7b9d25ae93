// Pilot with a mesh config file and an egress proxy connected: edits to the mesh config and
// to the ServiceEntries reach the proxy as new versions, a broken mesh config keeps the last
// good one, and proxies that are not egress proxies never see an egress section.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startPilot } from './pilot.ts';
import type { ConfigMessage } from '../api/discovery.ts';
import { tempDir, eventually } from '../test/helpers/tmp.ts';

const silent = { info() {}, warn() {}, error() {} };

const serviceEntry = (name: string, host: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}}
spec:
  hosts: [${host}]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
`;

interface Client { ws: WebSocket; messages: ConfigMessage[] }

async function proxy(port: number, node: object): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/discovery`);
  const messages: ConfigMessage[] = [];
  ws.on('message', (d) => {
    const msg = JSON.parse(d.toString()) as ConfigMessage;
    messages.push(msg);
    ws.send(JSON.stringify({ type: 'ack', version: msg.version, nonce: msg.nonce }));
  });
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  ws.send(JSON.stringify({ type: 'hello', node, version: null }));
  return { ws, messages };
}

const last = (c: Client) => c.messages.at(-1);

test('pilot: mesh config and ServiceEntry changes are pushed to an egress proxy as new versions', async (t) => {
  const config = await tempDir();
  const state = await tempDir();
  t.after(async () => { await config.cleanup(); await state.cleanup(); });
  await config.write('api.yaml', serviceEntry('api', 'api.example.com'));
  await config.write('files.yaml', serviceEntry('files', 'files.example.com'));
  const meshFile = join(state.path, 'mesh.yaml');
  await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n');

  const pilot = await startPilot({ configDir: config.path, meshConfigFile: meshFile, discoveryPort: 0, debugPort: 0, log: silent });
  t.after(() => pilot.close());
  const egress = await proxy(pilot.discoveryPort, { id: 'egress-1', namespace: 'istio-system', labels: { istio: 'egressgateway' }, egress: true });
  const ingress = await proxy(pilot.discoveryPort, { id: 'ingress-1', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
  t.after(() => { egress.ws.close(); ingress.ws.close(); });

  const first = await eventually(() => last(egress), 3000, 'first push');
  assert.deepEqual({ mode: first.config.egress?.policy.mode, audit: first.config.egress?.policy.audit }, { mode: 'REGISTRY_ONLY', audit: false });
  assert.deepEqual(first.config.egress?.policy.entries.map((e) => e.hosts[0]), ['api.example.com', 'files.example.com']);
  assert.deepEqual(first.config.egress?.outbound.map((l) => l.name), ['outbound_80']);
  assert.ok(first.config.clusters.some((c) => c.name === 'PassthroughCluster'));
  const ingressFirst = await eventually(() => last(ingress), 3000, 'ingress push');
  assert.equal('egress' in ingressFirst.config, false, 'an ingress proxy gets no egress section');

  // Audit on, mode opened: a new version within about a second.
  await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: ALLOW_ANY\nmeshgate:\n  egressAudit: true\n');
  const opened = await eventually(() => {
    const m = last(egress)!;
    return m.config.egress?.policy.mode === 'ALLOW_ANY' && m.config.egress.policy.audit ? m : null;
  }, 3000, 'mesh config change pushed');
  assert.notEqual(opened.version, first.version);

  // A broken mesh config: reported to the proxy and on the debug port, the last good one stays.
  await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: CLOSED\n');
  const broken = await eventually(() => {
    const m = last(egress)!;
    return m.problems.some((p) => p.includes('MG_CONFIG_SCHEMA')) ? m : null;
  }, 3000, 'mesh config problem pushed');
  assert.equal(broken.version, opened.version, 'the config itself is unchanged');
  assert.ok(broken.problems.some((p) => /^error MG_CONFIG_SCHEMA \S*mesh\.yaml:2:3 MeshConfig outboundTrafficPolicy\.mode: string "CLOSED" is not a mode/.test(p)), broken.problems.join('\n'));
  assert.ok(broken.problems.some((p) => /last valid one keeps applying \(outboundTrafficPolicy\.mode ALLOW_ANY, egress audit on\)/.test(p)), broken.problems.join('\n'));
  const debug = (await (await fetch(`http://127.0.0.1:${pilot.debugPort}/debug/problems`)).json()) as string[];
  assert.ok(debug.some((p) => p.includes('"CLOSED" is not a mode')), debug.join('\n'));

  // A ServiceEntry removed: its host leaves the allowlist in a new version.
  await config.remove('files.yaml');
  const removed = await eventually(() => {
    const m = last(egress)!;
    return m.config.egress?.policy.entries.length === 1 ? m : null;
  }, 3000, 'ServiceEntry removal pushed');
  assert.deepEqual(removed.config.egress?.policy.entries.map((e) => e.source), ['serviceentry/default/api']);
  assert.notEqual(removed.version, opened.version);
  assert.equal(removed.config.egress?.policy.mode, 'ALLOW_ANY', 'still the last good mesh config');
  assert.equal(removed.problems.filter((p) => p.includes('"CLOSED" is not a mode')).length, 1, 'each problem once');

  // Fixed again: the problem goes away.
  await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n');
  const fixed = await eventually(() => {
    const m = last(egress)!;
    return m.config.egress?.policy.mode === 'REGISTRY_ONLY' ? m : null;
  }, 3000, 'fixed mesh config pushed');
  assert.equal(fixed.problems.some((p) => p.includes('MeshConfig')), false, fixed.problems.join('\n'));
  assert.equal('egress' in last(ingress)!.config, false);
});

test('pilot: a mesh config that is broken at start means the defaults, reported', async (t) => {
  const config = await tempDir();
  t.after(() => config.cleanup());
  await config.write('api.yaml', serviceEntry('api', 'api.example.com'));
  const state = await tempDir();
  t.after(() => state.cleanup());
  await state.write('mesh.yaml', 'meshgate:\n  egressAudit: sometimes\n');
  const pilot = await startPilot({ configDir: config.path, meshConfigFile: join(state.path, 'mesh.yaml'), discoveryPort: 0, debugPort: null, log: silent });
  t.after(() => pilot.close());
  assert.deepEqual(pilot.store.state.snapshot.mesh, { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' }, egressAudit: false });
  const lines = pilot.store.state.problems.map((p) => `${p.severity} ${p.code} ${p.message}`);
  assert.ok(lines.some((l) => /^error MG_CONFIG_SCHEMA must be true or false, not string "sometimes"/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /^error MG_CONFIG_INVALID the mesh config was rejected; the defaults apply until it is fixed/.test(l)), lines.join('\n'));
});

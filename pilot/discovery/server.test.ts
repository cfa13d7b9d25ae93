import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ConfigStore } from '../store.ts';
import { DiscoveryServer } from './server.ts';
import { parseConfigText } from '../../api/load.ts';
import type { ConfigMessage } from '../../api/discovery.ts';
import { eventually } from '../../test/helpers/tmp.ts';

const config = (prefix: string) => parseConfigText('c.yaml', `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: "${prefix}"}}]
    directResponse: {status: 200, body: {string: "${prefix}"}}
`);

interface Client { ws: WebSocket; messages: ConfigMessage[]; closed: Promise<number> }

async function connect(port: number): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/discovery`);
  const messages: ConfigMessage[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString()) as ConfigMessage));
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  return { ws, messages, closed };
}

const ingress = { id: 'gw-1', namespace: 'istio-system', labels: { istio: 'ingressgateway' } };

async function setup(t: import('node:test').TestContext) {
  const store = new ConfigStore();
  store.update(config('/v1'));
  const server = new DiscoveryServer({ store, port: 0, debounceMs: 50 });
  const port = await server.start();
  t.after(() => server.close());
  return { store, server, port };
}

test('discovery: a proxy gets its config on hello, and its ACK is recorded', async (t) => {
  const { server, port } = await setup(t);
  const c = await connect(port);
  c.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: null }));
  const msg = await eventually(() => c.messages[0], 2000, 'first push');
  assert.equal(msg.type, 'config');
  assert.equal(msg.config.version, msg.version);
  assert.equal(msg.config.proxy.id, 'gw-1');
  assert.equal(msg.config.listeners.length, 1);
  assert.equal(msg.config.listeners[0].port, 8080);
  c.ws.send(JSON.stringify({ type: 'ack', version: msg.version, nonce: msg.nonce }));
  await eventually(() => server.proxies()[0]?.acked === msg.version, 2000, 'ack recorded');
  c.ws.close();
});

test('discovery: a burst of config changes is one push; an unchanged config is not re-sent', async (t) => {
  const { store, port } = await setup(t);
  const c = await connect(port);
  c.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: null }));
  await eventually(() => c.messages.length === 1, 2000, 'first push');
  for (let i = 2; i <= 6; i++) store.update(config(`/v${i}`));
  await eventually(() => c.messages.length >= 2, 2000, 'second push');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(c.messages.length, 2, 'five changes in a burst make one push');
  assert.match(JSON.stringify(c.messages[1].config), /\/v6/);
  store.update(config('/v6'));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(c.messages.length, 2, 'same content, no push');
  c.ws.close();
});

test('discovery: a reconnecting proxy that already runs the current version is not pushed again', async (t) => {
  const { port } = await setup(t);
  const a = await connect(port);
  a.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: null }));
  const first = await eventually(() => a.messages[0], 2000, 'push');
  a.ws.close();
  const b = await connect(port);
  b.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: first.version }));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(b.messages.length, 0);
  b.ws.close();
});

test('discovery: NACK reasons are kept per proxy', async (t) => {
  const { server, port } = await setup(t);
  const c = await connect(port);
  c.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: null }));
  const msg = await eventually(() => c.messages[0], 2000, 'push');
  c.ws.send(JSON.stringify({ type: 'nack', version: msg.version, nonce: msg.nonce, error: 'listener 0.0.0.0_8080: port in use' }));
  await eventually(() => server.proxies()[0]?.nack === 'listener 0.0.0.0_8080: port in use', 2000, 'nack recorded');
  assert.equal(server.proxies()[0].acked, null);
  c.ws.close();
});

test('discovery: hostile clients are disconnected and pilot keeps serving others', async (t) => {
  const { port } = await setup(t);
  const bad = [
    'not json{',
    JSON.stringify({ type: 'ack', version: 'x', nonce: 'y' }), // before hello
    JSON.stringify({ type: 'hello', node: { id: 'x', namespace: 'Not Valid', labels: {} } }),
    JSON.stringify({ type: 'hello', node: { id: 'x', namespace: 'ns', labels: { a: 1 } } }),
    JSON.stringify(null),
    JSON.stringify({ type: 'hello', node: ingress, padding: 'x'.repeat(100_000) }), // over the size cap
  ];
  for (const m of bad) {
    const c = await connect(port);
    c.ws.send(m);
    const code = await c.closed;
    assert.ok(code === 1008 || code === 1009, `closed with policy/size code for ${m.slice(0, 40)}: ${code}`);
    assert.equal(c.messages.length, 0);
  }
  const good = await connect(port);
  good.ws.send(JSON.stringify({ type: 'hello', node: ingress, version: null }));
  await eventually(() => good.messages[0], 2000, 'push to a well-behaved proxy');
  good.ws.close();
});

// A large config must translate through indexes, not pairwise scans. This asserts the
// shape of the result for 1,000 VirtualServices × 10 routes; timing is left to benchmarks,
// but an O(n²) step would make this file take long enough to notice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type {
  ConfigSnapshot, DestinationRuleResource, GatewayResource, HTTPRoute, ServiceEntryResource, VirtualServiceResource,
} from '../../api/istio.ts';
import { translate } from './index.ts';

const VS_COUNT = 1000;
const ROUTES = 10;
const SERVICES = 50;

function meta(name: string, namespace: string) {
  return { name, namespace };
}
const source = (doc: number) => ({ file: 'generated.yaml', line: 1, doc });

function generate(): ConfigSnapshot {
  const gateways: GatewayResource[] = [{
    apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: meta('gw', 'istio-system'), source: source(0),
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [
        { port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
        { port: { number: 443, name: 'https', protocol: 'HTTPS' }, hosts: ['*.example.com'], tls: { mode: 'SIMPLE', serverCertificate: '/c.pem', privateKey: '/k.pem' } },
      ],
    },
  }];
  const serviceEntries: ServiceEntryResource[] = [];
  const destinationRules: DestinationRuleResource[] = [];
  for (let s = 0; s < SERVICES; s++) {
    serviceEntries.push({
      apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: meta(`svc-${s}`, 'apps'), source: source(1),
      spec: {
        hosts: [`svc-${s}`], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 8080, name: 'http' }],
        endpoints: [{ address: `10.0.${s}.1`, labels: { version: 'v1' } }, { address: `10.0.${s}.2`, labels: { version: 'v2' } }],
      },
    });
    destinationRules.push({
      apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: meta(`svc-${s}`, 'apps'), source: source(2),
      spec: { host: `svc-${s}`, subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] },
    });
  }
  const virtualServices: VirtualServiceResource[] = [];
  for (let i = 0; i < VS_COUNT; i++) {
    const http: HTTPRoute[] = [];
    for (let r = 0; r < ROUTES; r++) {
      http.push({
        match: [{ uri: { prefix: `/r${r}` }, headers: { 'x-tenant': { exact: `t${i}` } } }],
        route: [
          { destination: { host: `svc-${(i + r) % SERVICES}`, subset: 'v1' }, weight: 90 },
          { destination: { host: `svc-${(i + r) % SERVICES}`, subset: 'v2' }, weight: 10 },
        ],
      });
    }
    virtualServices.push({
      apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: meta(`vs-${i}`, 'apps'), source: source(3),
      spec: { hosts: [`host-${i}.example.com`], gateways: ['istio-system/gw'], http },
    });
  }
  return { gateways, virtualServices, destinationRules, serviceEntries, secrets: [], requestAuthentications: [], authorizationPolicies: [], rateLimitPolicies: [] };
}

test('1,000 VirtualServices × 10 routes: one virtual host per host per port, every route, shared clusters', () => {
  const { config, problems } = translate(generate(), { id: 'p', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
  assert.deepEqual(problems, []);
  assert.deepEqual(config.listeners.map((l) => l.name), ['0.0.0.0_80', '0.0.0.0_443']);
  for (const l of config.listeners) {
    assert.equal(l.virtualHosts.length, VS_COUNT);
    let routes = 0;
    for (const v of l.virtualHosts) {
      assert.equal(v.routes.length, ROUTES);
      routes += v.routes.length;
    }
    assert.equal(routes, VS_COUNT * ROUTES);
  }
  // exact domains sorted by name
  const names = config.listeners[0].virtualHosts.map((v) => v.name);
  assert.deepEqual(names, [...names].sort());
  assert.equal(config.clusters.length, SERVICES * 2);
  assert.ok(config.clusters.every((c) => c.endpoints.length === 1));
});

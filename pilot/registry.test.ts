import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../api/load.ts';
import { toSnapshot } from '../api/validate.ts';
import { buildRegistry, endpointPort } from './registry.ts';

function registryOf(yaml: string) {
  const { resources, problems } = parseConfigText('registry.yaml', yaml);
  assert.deepEqual(problems, []);
  return buildRegistry(toSnapshot(resources));
}

describe('buildRegistry', () => {
  test('a STATIC ServiceEntry gives qualified, lower-cased hosts with its ports and endpoints', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [Reviews, API.Example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: http, targetPort: 8080}
  - {number: 9090, name: grpc-admin}
  - {number: 9091, name: web}
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
    ports: {http: 7000}
    weight: 4
  - address: 10.0.0.2
`);
    assert.deepEqual(reg.services.map((s) => s.hostname), ['api.example.com', 'reviews.shop.svc.cluster.local']);
    const svc = reg.lookup('REVIEWS.shop.svc.cluster.local')!;
    assert.equal(svc.namespace, 'shop');
    assert.equal(svc.source, 'serviceentry/shop/reviews');
    assert.equal(svc.resolution, 'STATIC');
    assert.equal(svc.location, 'MESH_INTERNAL');
    // protocol upper-cased when given, read from the name prefix when not, TCP otherwise
    assert.deepEqual(svc.ports, [
      { number: 9080, name: 'http', protocol: 'HTTP', targetPort: 8080 },
      { number: 9090, name: 'grpc-admin', protocol: 'GRPC', targetPort: null },
      { number: 9091, name: 'web', protocol: 'TCP', targetPort: null },
    ]);
    assert.deepEqual(svc.endpoints, [
      { address: '10.0.0.1', ports: { http: 7000 }, labels: { version: 'v1' }, weight: 4 },
      { address: '10.0.0.2', ports: {}, labels: {}, weight: 1 },
    ]);
    // per-endpoint port, else targetPort, else the service port
    assert.equal(endpointPort(svc.endpoints[0], svc.ports[0]), 7000);
    assert.equal(endpointPort(svc.endpoints[1], svc.ports[0]), 8080);
    assert.equal(endpointPort(svc.endpoints[1], svc.ports[1]), 9090);
  });

  test('defaults follow Istio: resolution NONE, location MESH_EXTERNAL', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: github}
spec:
  hosts: [github.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
`);
    const svc = reg.lookup('github.com')!;
    assert.equal(svc.resolution, 'NONE');
    assert.equal(svc.location, 'MESH_EXTERNAL');
    // NONE connects to the destination asked for: for a named host, the host itself.
    assert.deepEqual(svc.endpoints, [{ address: 'github.com', ports: {}, labels: {}, weight: 1 }]);
  });

  test('DNS without endpoints resolves each host itself; DNS with endpoints keeps them', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: apt}
spec:
  hosts: [deb.debian.org, security.debian.org]
  ports: [{number: 80, name: http}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vendor}
spec:
  hosts: [api.vendor.io]
  ports: [{number: 80, name: http}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: eu.vendor.io}]
`);
    assert.deepEqual(reg.lookup('deb.debian.org')!.endpoints, [{ address: 'deb.debian.org', ports: {}, labels: {}, weight: 1 }]);
    assert.deepEqual(reg.lookup('security.debian.org')!.endpoints.map((e) => e.address), ['security.debian.org']);
    assert.deepEqual(reg.lookup('api.vendor.io')!.endpoints.map((e) => e.address), ['eu.vendor.io']);
  });

  test('a wildcard host covers names under it; exact hosts win; the most specific wildcard wins', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wide}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: narrow}
spec:
  hosts: ["*.api.example.com", "www.example.com"]
  ports: [{number: 8080, name: http}]
`);
    assert.equal(reg.lookup('x.example.com')!.hostname, '*.example.com');
    assert.equal(reg.lookup('a.b.example.com')!.hostname, '*.example.com');
    assert.equal(reg.lookup('v1.api.example.com')!.hostname, '*.api.example.com');
    assert.equal(reg.lookup('www.example.com')!.hostname, 'www.example.com');
    // `*.example.com` does not cover example.com itself
    assert.equal(reg.lookup('example.com'), null);
    assert.equal(reg.lookup('unknown.org'), null);
  });

  test('two ServiceEntries for one host merge; the first (oldest) wins on port and endpoint conflicts', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zz-old, namespace: a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [db.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, weight: 2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: aa-new, namespace: b, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [db.example.com]
  resolution: DNS
  ports:
  - {number: 80, name: web, protocol: HTTP2}
  - {number: 81, name: admin, protocol: HTTP}
  endpoints:
  - {address: 10.0.0.1, weight: 9}
  - {address: 10.0.0.2}
`);
    assert.equal(reg.services.length, 1);
    const svc = reg.lookup('db.example.com')!;
    assert.equal(svc.namespace, 'a');
    assert.equal(svc.resolution, 'STATIC');
    assert.equal(svc.source, 'serviceentry/a/zz-old');
    assert.deepEqual(svc.sources, ['serviceentry/a/zz-old', 'serviceentry/b/aa-new']);
    assert.deepEqual(svc.ports.map((p) => `${p.number}/${p.name}/${p.protocol}`), ['80/http/HTTP', '81/admin/HTTP']);
    assert.deepEqual(svc.endpoints.map((e) => `${e.address}*${e.weight}`), ['10.0.0.1*2', '10.0.0.2*1']);
  });

  test('short hosts in different namespaces are different services', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: a}
spec:
  hosts: [db]
  ports: [{number: 5432, name: tcp}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: b}
spec:
  hosts: [db]
  ports: [{number: 3306, name: tcp}]
`);
    assert.equal(reg.lookup('db.a.svc.cluster.local')!.ports[0].number, 5432);
    assert.equal(reg.lookup('db.b.svc.cluster.local')!.ports[0].number, 3306);
    assert.equal(reg.lookup('db'), null);
  });

  test('port names that are Object prototype keys do not leak prototype values into endpoint ports', () => {
    const reg = registryOf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: odd}
spec:
  hosts: [odd.example.com]
  resolution: STATIC
  ports:
  - {number: 80, name: constructor}
  - {number: 81, name: __proto__, targetPort: 8081}
  endpoints: [{address: 10.0.0.1}]
`);
    const svc = reg.lookup('odd.example.com')!;
    assert.equal(endpointPort(svc.endpoints[0], svc.ports[0]), 80);
    assert.equal(endpointPort(svc.endpoints[0], svc.ports[1]), 8081);
  });
});

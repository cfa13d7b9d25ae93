import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfigText } from '../../api/load.ts';
import { toSnapshot } from '../../api/validate.ts';
import { formatProblem } from '../../api/problems.ts';
import type { Problem } from '../../api/problems.ts';
import { checkReferences } from './references.ts';
import { translate } from './index.ts';

function snapshotOf(yaml: string) {
  const { resources, problems } = parseConfigText('refs.yaml', yaml);
  assert.deepEqual(problems, []);
  return toSnapshot(resources);
}

const find = (ps: Problem[], code: string, field: string): Problem | undefined => ps.find((p) => p.code === code && p.field === field);

const BROKEN = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [gw, nope, other-ns/gw, mesh]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
      gateways: [missing-too]
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v4}
      weight: 50
    - destination: {host: ratings}
      weight: 50
    mirror: {host: ghost.example.com}
    mirrors:
    - destination: {host: ratings, port: {number: 1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svcs}
spec:
  hosts: [reviews, ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http}
  - {number: 9090, name: grpc}
  endpoints: [{address: 10.0.0.1}]
`;

describe('checkReferences', () => {
  const problems = checkReferences(snapshotOf(BROKEN));

  test('a VirtualService naming a Gateway that does not exist, at VS and match level', () => {
    const p = find(problems, 'MG_REF_GATEWAY', 'spec.gateways[1]');
    assert.ok(p, formatProblem(problems[0]));
    assert.equal(p.severity, 'error');
    assert.equal(p.file, 'refs.yaml');
    assert.equal(p.resource, 'VirtualService/default/reviews');
    assert.match(p.message, /Gateway default\/nope does not exist/);
    assert.ok(p.line! > 10, 'points at the line of the field, not the file start');
    assert.match(find(problems, 'MG_REF_GATEWAY', 'spec.gateways[2]')!.message, /other-ns\/gw/);
    assert.ok(find(problems, 'MG_REF_GATEWAY', 'spec.http[0].match[0].gateways[0]'));
    // existing gateway and `mesh` are fine
    assert.equal(find(problems, 'MG_REF_GATEWAY', 'spec.gateways[0]'), undefined);
    assert.equal(find(problems, 'MG_REF_GATEWAY', 'spec.gateways[3]'), undefined);
  });

  test('an undefined subset is an error that lists the defined ones', () => {
    const p = find(problems, 'MG_REF_SUBSET', 'spec.http[1].route[0].destination.subset')!;
    assert.equal(p.severity, 'error');
    assert.match(p.message, /^subset v4 is not defined by any DestinationRule for host reviews\.default\.svc\.cluster\.local \(defined: v1, v2, v3\)/);
    assert.equal(find(problems, 'MG_REF_SUBSET', 'spec.http[0].route[0].destination.subset'), undefined);
  });

  test('a host not in the registry is a warning; mirrors are checked like routes', () => {
    const p = find(problems, 'MG_REF_HOST', 'spec.http[1].mirror.host')!;
    assert.equal(p.severity, 'warning');
    assert.match(p.message, /host ghost\.example\.com is not in the service registry/);
  });

  test('no port for a service with several, or a port it lacks, is an error', () => {
    const several = find(problems, 'MG_REF_PORT', 'spec.http[0].route[0].destination')!;
    assert.equal(several.severity, 'error');
    assert.match(several.message, /several ports \(9080, 9090\)/);
    assert.ok(find(problems, 'MG_REF_PORT', 'spec.http[1].route[1].destination'));
    assert.match(find(problems, 'MG_REF_PORT', 'spec.http[1].mirrors[0].destination.port.number')!.message, /has no port 1 /);
  });

  test('a VirtualService bound to the mesh only is still checked (analyze is proxy-independent)', () => {
    const ps = checkReferences(snapshotOf(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: shop}
spec:
  hosts: [cart]
  http:
  - route:
    - destination: {host: cart, subset: v9}
`));
    assert.deepEqual(ps.map((p) => `${p.code} ${p.field}`), [
      'MG_REF_HOST spec.http[0].route[0].destination.host',
      'MG_REF_SUBSET spec.http[0].route[0].destination.subset',
    ]);
    assert.match(ps[1].message, /cart\.shop\.svc\.cluster\.local \(no DestinationRule for this host\)/);
  });

  test('translate reports the same reference problems for what the proxy serves', () => {
    const { problems: served } = translate(snapshotOf(BROKEN), { id: 'p', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
    const all = new Set(problems.map(formatProblem));
    assert.ok(served.length >= 4);
    for (const p of served) assert.ok(all.has(formatProblem(p)), `translate-only problem: ${formatProblem(p)}`);
  });
});

const PEM_CERT = '-----BEGIN CERTIFICATE-----\\n    YQ==\\n    -----END CERTIFICATE-----';

function secret(name: string, namespace: string, entries: Record<string, string>): string {
  const lines = Object.entries(entries).map(([k, v]) => `  ${k}: "${v}"`).join('\n');
  return `---\napiVersion: v1\nkind: Secret\nmetadata: {name: ${name}, namespace: ${namespace}}\nstringData:\n${lines}\n`;
}

function gatewayWith(tls: string): string {
  return `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: ${tls}
`;
}

describe('credentialName references', () => {
  const cert = { 'tls.crt': PEM_CERT, 'tls.key': PEM_CERT.replaceAll('CERTIFICATE', 'PRIVATE KEY') };

  test('a Secret in the Gateway namespace is found; one only in another namespace is not (CVE-2021-34824)', () => {
    assert.deepEqual(checkReferences(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: c}') + secret('c', 'istio-system', cert))), []);
    const ps = checkReferences(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: c}') + secret('c', 'default', cert)));
    assert.equal(ps.length, 1);
    assert.equal(ps[0].code, 'MG_REF_SECRET');
    assert.equal(ps[0].field, 'spec.servers[0].tls.credentialName');
    assert.match(ps[0].message, /Secret istio-system\/c does not exist/);
  });

  test('a credentialName reaching into another namespace is refused even when that Secret exists', () => {
    const ps = checkReferences(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: default/c}') + secret('c', 'default', cert)));
    assert.equal(ps.length, 1);
    assert.match(ps[0].message, /must be the plain name of a Secret in namespace istio-system/);
    // and the proxy does not serve that certificate
    const { config } = translate(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: default/c}') + secret('c', 'default', cert)),
      { id: 'p', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
    assert.deepEqual(config.listeners, []);
  });

  test('a Secret without a key, or without PEM data, cannot be used', () => {
    const noKey = checkReferences(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: c}') + secret('c', 'istio-system', { 'tls.crt': PEM_CERT })));
    assert.match(noKey[0].message, /has no tls\.crt and tls\.key/);
    const notPem = checkReferences(snapshotOf(gatewayWith('{mode: SIMPLE, credentialName: c}') + secret('c', 'istio-system', { 'tls.crt': 'hello', 'tls.key': 'world' })));
    assert.match(notPem[0].message, /does not hold PEM data/);
  });

  test('MUTUAL needs a CA: ca.crt in the Secret or a <name>-cacert Secret', () => {
    const none = checkReferences(snapshotOf(gatewayWith('{mode: MUTUAL, credentialName: c}') + secret('c', 'istio-system', cert)));
    assert.match(none[0].message, /no CA certificate: .*istio-system\/c-cacert does not exist/);
    const companion = checkReferences(snapshotOf(gatewayWith('{mode: MUTUAL, credentialName: c}') + secret('c', 'istio-system', cert) + secret('c-cacert', 'istio-system', { 'ca.crt': PEM_CERT })));
    assert.deepEqual(companion, []);
    const inline = checkReferences(snapshotOf(gatewayWith('{mode: MUTUAL, credentialName: c}') + secret('c', 'istio-system', { ...cert, 'ca.crt': PEM_CERT })));
    assert.deepEqual(inline, []);
  });

  test('DestinationRule client credentials are looked up in the rule\'s namespace', () => {
    const dr = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: out, namespace: egress}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, credentialName: client}
`;
    const missing = checkReferences(snapshotOf(dr + secret('client', 'istio-system', cert)));
    assert.deepEqual(missing.map((p) => `${p.code} ${p.field}`), ['MG_REF_SECRET spec.trafficPolicy.portLevelSettings[0].tls.credentialName']);
    assert.deepEqual(checkReferences(snapshotOf(dr + secret('client', 'egress', cert))), []);
  });
});

describe('Istio samples', () => {
  // Every sample file users already have must translate without throwing; samples refer to
  // Kubernetes Services that file mode does not know (MG_REF_HOST, MG_REF_SUBSET without the
  // DestinationRule file) and to Gateways in sibling files (MG_REF_GATEWAY); nothing else.
  const root = '/work/shared/istio-samples';
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) { if (e !== 'crds') walk(p); } else if (/\.ya?ml$/.test(e)) files.push(p);
    }
  };
  try { walk(root); } catch { /* samples are not part of the repo; the test below says so */ }

  test('each sample file translates for the ingress gateway with only reference problems', () => {
    assert.ok(files.length > 10, `expected the samples in ${root}`);
    for (const f of files) {
      const { resources } = parseConfigText(f, readFileSync(f, 'utf8'));
      const snap = toSnapshot(resources);
      const { problems } = translate(snap, { id: 'p', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
      const refs = checkReferences(snap);
      for (const p of [...problems, ...refs]) {
        assert.ok(['MG_REF_HOST', 'MG_REF_SUBSET', 'MG_REF_GATEWAY'].includes(p.code), `${f}: ${formatProblem(p)}`);
      }
    }
    const bookinfo = files.find((f) => f.endsWith('bookinfo/networking/bookinfo-gateway.yaml'))!;
    const { config } = translate(toSnapshot(parseConfigText(bookinfo, readFileSync(bookinfo, 'utf8')).resources),
      { id: 'p', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
    assert.deepEqual(config.listeners.map((l) => `${l.name} ${l.virtualHosts.map((v) => v.name).join()}`), ['0.0.0.0_8080 *:8080']);
    assert.deepEqual(config.clusters.map((c) => `${c.name} ${c.endpoints.length}`), ['outbound|9080||productpage.default.svc.cluster.local 0']);
  });
});

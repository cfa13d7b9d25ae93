// `meshgate analyze` as a user runs it: exit codes and one line per problem that names
// the file, the resource, the field and the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { runToEnd, ROOT } from './helpers/meshgate.ts';
import { tempDir } from './helpers/tmp.ts';
import { analyzePaths } from '../cli/analyze.ts';
import { listConfigFiles } from '../api/load.ts';
import { formatProblem } from '../api/problems.ts';

const SAMPLES = join(ROOT, '..', 'shared', 'istio-samples');

test('analyze: the examples folder is valid (exit 0)', async () => {
  const r = await runToEnd(['analyze', 'examples']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stdout.split('\n').filter((l) => l.startsWith('error')).length, 0);
});

test('analyze: Istio\'s own samples load file by file; what is unsupported is a warning, not an error', async () => {
  assert.ok(existsSync(SAMPLES), `Istio samples expected at ${SAMPLES}`);
  const files = (await listConfigFiles(SAMPLES)).filter((f) => !f.includes(`${join('crds', '')}`));
  assert.ok(files.length > 30, `found ${files.length} sample files`);
  for (const f of files) {
    const r = await analyzePaths([f]);
    // Each sample stands alone, so routes may name hosts and subsets defined in other
    // files or in Kubernetes: reference problems are expected; nothing else may fail.
    const errors = r.problems.filter((p) => p.severity === 'error' && !p.code.startsWith('MG_REF_'));
    assert.deepEqual(errors.map(formatProblem), [], f);
  }
  const tcp = await analyzePaths([join(SAMPLES, 'tcp-echo', 'tcp-echo-all-v1.yaml')]);
  assert.ok(tcp.problems.some((p) => p.code === 'MG_CONFIG_UNSUPPORTED_FIELD' && p.field === 'spec.tcp'), tcp.problems.map(formatProblem).join('\n'));
  const cli = await runToEnd(['analyze', join(SAMPLES, 'httpbin', 'httpbin-gateway.yaml')]);
  assert.equal(cli.code, 0, cli.stdout + cli.stderr);
});

test('analyze: each problem is one line naming file:line, resource, field and reason; exit 1', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('bad.yaml', `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "/api/(v1"
    timeout: 5 seconds
    route:
    - destination:
        host: reviews
        subset: v9
---
apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata:
  name: typo
`);
  await dir.write('broken.yaml', 'kind: Gateway\napiVersion: networking.istio.io/v1\nmetadata: {name: g\n');
  const r = await runToEnd(['analyze', dir.path]);
  assert.equal(r.code, 1);
  const lines = r.stdout.trim().split('\n');
  const find = (re: RegExp) => lines.find((l) => re.test(l));
  const regex = find(/MG_CONFIG_REGEX/);
  assert.ok(regex, r.stdout);
  assert.match(regex, /bad\.yaml:11:\d+ VirtualService\/shop\/reviews spec\.http\[0\]\.match\[0\]\.uri\.regex: /);
  const duration = find(/MG_CONFIG_DURATION/);
  assert.ok(duration, r.stdout);
  assert.match(duration, /bad\.yaml:12:\d+ VirtualService\/shop\/reviews spec\.http\[0\]\.timeout: .*5 seconds/);
  assert.ok(find(/MG_CONFIG_UNKNOWN_KIND .*bad\.yaml:18.*VirtualServce/), r.stdout);
  assert.ok(find(/MG_CONFIG_YAML .*broken\.yaml:\d+:\d+/), r.stdout);
});

test('analyze: a subset no DestinationRule defines is named with the ones that exist', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('c.yaml', `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
`);
  const r = await runToEnd(['analyze', dir.path]);
  assert.equal(r.code, 1);
  const line = r.stdout.split('\n').find((l) => l.includes('MG_REF_SUBSET'));
  assert.ok(line, r.stdout);
  assert.match(line, /VirtualService\/default\/reviews spec\.http\[0\]\.route\[0\]\.destination\.subset: .*v3.*reviews\.default\.svc\.cluster\.local.*v1, v2/);
});

test('analyze: two servers on one port with different protocols conflict', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('g.yaml', `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: http, protocol: HTTP}
    hosts: [a.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/b.pem, privateKey: /etc/certs/b.key}
`);
  const r = await runToEnd(['analyze', dir.path]);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /MG_GATEWAY_PORT_CONFLICT .*8443/);
});

test('analyze: usage errors exit 2', async () => {
  const r = await runToEnd(['analyze']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /name at least one folder/);
  const missing = await runToEnd(['analyze', '/no/such/dir']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no such file/);
});

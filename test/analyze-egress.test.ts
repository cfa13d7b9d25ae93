// `meshgate analyze` for egress: ServiceEntries the allowlist cannot use, and the mesh
// config file (`--mesh-config`), checked as pilot reads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runToEnd, ROOT } from './helpers/meshgate.ts';
import { tempDir } from './helpers/tmp.ts';

const SAMPLES = join(ROOT, '..', 'shared', 'istio-samples');

test('analyze: a host with a scheme, a CIDR without a mask and a port without a protocol are named, with the fix', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('egress.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: scheme-host, namespace: egress}
spec:
  hosts: ["https://files.example.com"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: maskless, namespace: egress}
spec:
  hosts: [db.example.com]
  addresses: ["10.0.0.0/"]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: no-protocol, namespace: egress}
spec:
  hosts: [legacy.example.com]
  ports: [{number: 8080, name: web}]
  resolution: DNS
`);
  const r = await runToEnd(['analyze', dir.path]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const lines = r.stdout.trim().split('\n');
  const find = (re: RegExp) => lines.find((l) => re.test(l));
  assert.ok(find(/^error MG_CONFIG_HOST \S*egress\.yaml:5:\d+ ServiceEntry\/egress\/scheme-host spec\.hosts\[0\]: "https:\/\/files\.example\.com" has a scheme; write the bare host name "files\.example\.com"/), r.stdout);
  assert.ok(find(/^error MG_CONFIG_INVALID \S*egress\.yaml:14:\d+ ServiceEntry\/egress\/maskless spec\.addresses\[0\]: "10\.0\.0\.0\/" is not an IP address or CIDR block .*left out of the egress allowlist/), r.stdout);
  // Istio accepts a port without a protocol (it guesses from the name); the allowlist does not guess.
  assert.ok(find(/^warning MG_CONFIG_INVALID \S*egress\.yaml:22:\d+ ServiceEntry\/egress\/no-protocol spec\.ports\[0\]\.protocol: port 8080 has no protocol; set one of HTTP, .*left out of the egress allowlist/), r.stdout);
});

test('analyze: Istio\'s external samples and the googleapis egress sample have no egress problem', async () => {
  const r = await runToEnd(['analyze', join(SAMPLES, 'external'), join(SAMPLES, 'bookinfo', 'networking', 'egress-rule-google-apis.yaml')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stdout.split('\n').filter((l) => /egress allowlist/.test(l) && !/^warning MG_CONFIG_UNSUPPORTED_FIELD .* spec\.addresses:/.test(l)).length, 0, r.stdout);
});

test('analyze --mesh-config: the mesh config is checked as pilot reads it', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('good.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nmeshgate:\n  egressAudit: true\n');
  const good = await runToEnd(['analyze', '--mesh-config', join(dir.path, 'good.yaml')]);
  assert.equal(good.code, 0, good.stdout + good.stderr);
  assert.match(good.stderr, /no problems found/);

  await dir.write('istio.yaml', `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    enableTracing: true
    outboundTrafficPolicy:
      mode: ALLOW-ANY
`);
  const bad = await runToEnd(['analyze', '--mesh-config', join(dir.path, 'istio.yaml'), join(SAMPLES, 'external')]);
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  const lines = bad.stdout.trim().split('\n');
  assert.ok(lines.some((l) => /^error MG_CONFIG_SCHEMA \S*istio\.yaml:8:7 ConfigMap\/istio-system\/istio outboundTrafficPolicy\.mode: string "ALLOW-ANY" is not a mode; use REGISTRY_ONLY or ALLOW_ANY \(did you mean ALLOW_ANY\?\)$/.test(l)), bad.stdout);
  assert.ok(lines.some((l) => /^warning MG_CONFIG_UNSUPPORTED_FIELD \S*istio\.yaml:6:5 ConfigMap\/istio-system\/istio enableTracing: /.test(l)), bad.stdout);

  const missing = await runToEnd(['analyze', '--mesh-config', join(dir.path, 'nope.yaml')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--mesh-config: \S*nope\.yaml is not a file/);
});

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseMeshConfig, loadMeshConfig, defaultMeshConfig } from './meshconfig.ts';
import { formatProblem } from './problems.ts';
import { tempDir } from '../test/helpers/tmp.ts';

const lines = (r: { problems: Parameters<typeof formatProblem>[0][] }) => r.problems.map(formatProblem);

describe('mesh config: the MeshConfig document', () => {
  test('no file content means the defaults: REGISTRY_ONLY, audit off', () => {
    for (const text of ['', '# nothing yet\n', '---\n']) {
      const r = parseMeshConfig('mesh.yaml', text);
      assert.deepEqual(r.config, defaultMeshConfig());
      assert.deepEqual(r.problems, []);
    }
    assert.deepEqual(defaultMeshConfig(), { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' }, egressAudit: false });
  });

  test('outboundTrafficPolicy.mode and meshgate.egressAudit are read', () => {
    const r = parseMeshConfig('mesh.yaml', 'outboundTrafficPolicy:\n  mode: ALLOW_ANY\nmeshgate:\n  egressAudit: true\n');
    assert.deepEqual(r.config, { outboundTrafficPolicy: { mode: 'ALLOW_ANY' }, egressAudit: true });
    assert.deepEqual(r.problems, []);
    const partial = parseMeshConfig('mesh.yaml', 'outboundTrafficPolicy: {}\nmeshgate: {egressAudit: false}\n');
    assert.deepEqual(partial.config, defaultMeshConfig(), 'an absent mode is REGISTRY_ONLY');
  });

  test('other Istio fields are warnings naming the field; unknown ones get a suggestion; neither is an error', () => {
    const r = parseMeshConfig('mesh.yaml', [
      'accessLogFile: /dev/stdout',
      'enablePrometheusMerge: true',
      'outboundTrafficPolicy:',
      '  mode: REGISTRY_ONLY',
      '  egressProxy: {host: egress.example.com}',
      'trustDomian: cluster.local',
      'meshgate: {egressAudti: true}',
      '',
    ].join('\n'));
    assert.deepEqual(r.config, defaultMeshConfig(), 'warnings never reject the file');
    assert.deepEqual(lines(r), [
      'warning MG_CONFIG_UNSUPPORTED_FIELD mesh.yaml:1:1 MeshConfig accessLogFile: mesh config field accessLogFile is not implemented by meshgate; ignored',
      'warning MG_CONFIG_UNSUPPORTED_FIELD mesh.yaml:2:1 MeshConfig enablePrometheusMerge: mesh config field enablePrometheusMerge is not implemented by meshgate; ignored',
      'warning MG_CONFIG_UNSUPPORTED_FIELD mesh.yaml:5:3 MeshConfig outboundTrafficPolicy.egressProxy: outboundTrafficPolicy.egressProxy is not supported yet; ignored (point workloads at the egress proxy with HTTP_PROXY/HTTPS_PROXY)',
      'warning MG_CONFIG_UNKNOWN_FIELD mesh.yaml:6:1 MeshConfig trustDomian: unknown field "trustDomian" in the mesh config (did you mean "trustDomain"?); ignored',
      'warning MG_CONFIG_UNKNOWN_FIELD mesh.yaml:7:12 MeshConfig meshgate.egressAudti: unknown field "egressAudti" in meshgate (did you mean "egressAudit"?); ignored',
    ]);
  });

  test('an unknown mode is an error naming file, line, field and the allowed values; nothing is guessed', () => {
    for (const [mode, hint] of [['registry_only', / \(did you mean REGISTRY_ONLY\?\)$/], ['STRICT', /ALLOW_ANY$/], ['1', /ALLOW_ANY$/]] as const) {
      const r = parseMeshConfig('mesh.yaml', `outboundTrafficPolicy:\n  mode: ${mode}\n`);
      assert.equal(r.config, null, mode);
      assert.equal(r.problems.length, 1);
      const line = formatProblem(r.problems[0]);
      assert.match(line, /^error MG_CONFIG_SCHEMA mesh\.yaml:2:3 MeshConfig outboundTrafficPolicy\.mode: .* is not a mode; use REGISTRY_ONLY or ALLOW_ANY/);
      assert.match(line, hint);
    }
  });

  test('wrong types are errors: policy not a mapping, audit not a boolean, a list instead of a mapping', () => {
    const policy = parseMeshConfig('mesh.yaml', 'outboundTrafficPolicy: REGISTRY_ONLY\n');
    assert.equal(policy.config, null);
    assert.deepEqual(lines(policy), ['error MG_CONFIG_SCHEMA mesh.yaml:1:1 MeshConfig outboundTrafficPolicy: must be a mapping like {mode: REGISTRY_ONLY}, not string "REGISTRY_ONLY"']);
    const audit = parseMeshConfig('mesh.yaml', 'meshgate:\n  egressAudit: "yes"\n');
    assert.equal(audit.config, null);
    assert.deepEqual(lines(audit), ['error MG_CONFIG_SCHEMA mesh.yaml:2:3 MeshConfig meshgate.egressAudit: must be true or false, not string "yes"']);
    const list = parseMeshConfig('mesh.yaml', '- outboundTrafficPolicy: {mode: ALLOW_ANY}\n');
    assert.equal(list.config, null);
    assert.match(lines(list)[0], /^error MG_CONFIG_NOT_OBJECT mesh\.yaml:1:1 /);
  });

  test('broken YAML and several documents are errors', () => {
    const yaml = parseMeshConfig('mesh.yaml', 'outboundTrafficPolicy: {mode: ALLOW_ANY\n');
    assert.equal(yaml.config, null);
    assert.match(lines(yaml)[0], /^error MG_CONFIG_YAML mesh\.yaml:\d+:\d+ /);
    const two = parseMeshConfig('mesh.yaml', 'outboundTrafficPolicy: {mode: ALLOW_ANY}\n---\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n');
    assert.equal(two.config, null);
    assert.deepEqual(lines(two), ['error MG_CONFIG_INVALID mesh.yaml:3:1 MeshConfig a mesh config file holds one document; found 2']);
  });
});

describe('mesh config: Istio\'s istio ConfigMap', () => {
  const configMap = (mesh: string, extra = '') => `apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
${mesh.split('\n').map((l) => (l === '' ? '' : `    ${l}`)).join('\n')}
${extra}`;

  test('data.mesh is read as the MeshConfig; problems point at the line inside the ConfigMap', () => {
    const ok = parseMeshConfig('istio.yaml', configMap('defaultConfig:\n  discoveryAddress: istiod:15012\noutboundTrafficPolicy:\n  mode: ALLOW_ANY\nmeshgate:\n  egressAudit: true'));
    assert.deepEqual(ok.config, { outboundTrafficPolicy: { mode: 'ALLOW_ANY' }, egressAudit: true });
    assert.deepEqual(lines(ok), ['warning MG_CONFIG_UNSUPPORTED_FIELD istio.yaml:8:5 ConfigMap/istio-system/istio defaultConfig: mesh config field defaultConfig is not implemented by meshgate; ignored']);

    const bad = parseMeshConfig('istio.yaml', configMap('rootNamespace: istio-system\noutboundTrafficPolicy:\n  mode: CLOSED', '  meshNetworks: "networks: {}"\n'));
    assert.equal(bad.config, null);
    assert.deepEqual(lines(bad), [
      'warning MG_CONFIG_UNSUPPORTED_FIELD istio.yaml:11:3 ConfigMap/istio-system/istio data.meshNetworks: data.meshNetworks is not read by meshgate (only data.mesh is); ignored',
      'warning MG_CONFIG_UNSUPPORTED_FIELD istio.yaml:8:5 ConfigMap/istio-system/istio rootNamespace: mesh config field rootNamespace is not implemented by meshgate; ignored',
      'error MG_CONFIG_SCHEMA istio.yaml:10:7 ConfigMap/istio-system/istio outboundTrafficPolicy.mode: string "CLOSED" is not a mode; use REGISTRY_ONLY or ALLOW_ANY',
    ]);
  });

  test('a ConfigMap without data.mesh, or with something other than text there, is an error; other kinds are not mesh configs', () => {
    const none = parseMeshConfig('istio.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  other: x\n');
    assert.equal(none.config, null);
    assert.ok(lines(none).includes('error MG_CONFIG_SCHEMA istio.yaml:4:1 ConfigMap/istio-system/istio data.mesh: is required: Istio\'s mesh ConfigMap holds the MeshConfig as YAML text under data.mesh'), lines(none).join('\n'));
    const notText = parseMeshConfig('istio.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh:\n    outboundTrafficPolicy: {mode: ALLOW_ANY}\n');
    assert.equal(notText.config, null);
    assert.match(lines(notText)[0], /^error MG_CONFIG_SCHEMA istio\.yaml:5:3 ConfigMap\/default\/istio data\.mesh: must be the MeshConfig as YAML text/);
    const gw = parseMeshConfig('gw.yaml', 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n');
    assert.equal(gw.config, null);
    assert.match(lines(gw)[0], /^error MG_CONFIG_UNKNOWN_KIND gw\.yaml:2:1 MeshConfig kind: kind "Gateway" is not a mesh config/);
  });

  test('a quoted data.mesh string works; its problems point at the data.mesh key', () => {
    const r = parseMeshConfig('istio.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: "outboundTrafficPolicy: {mode: nope}"\n');
    assert.equal(r.config, null);
    assert.match(lines(r)[0], /^error MG_CONFIG_SCHEMA istio\.yaml:5:3 ConfigMap\/default\/istio outboundTrafficPolicy\.mode: /);
  });
});

test('mesh config: a file that cannot be read is an MG_CONFIG_FILE error', async (t) => {
  const dir = await tempDir();
  t.after(() => dir.cleanup());
  await dir.write('mesh.yaml', 'outboundTrafficPolicy: {mode: ALLOW_ANY}\n');
  const ok = await loadMeshConfig(join(dir.path, 'mesh.yaml'), 'mesh.yaml');
  assert.deepEqual(ok.config, { outboundTrafficPolicy: { mode: 'ALLOW_ANY' }, egressAudit: false });
  const missing = await loadMeshConfig(join(dir.path, 'gone.yaml'), 'gone.yaml');
  assert.equal(missing.config, null);
  assert.deepEqual(lines(missing), ['error MG_CONFIG_FILE gone.yaml MeshConfig the mesh config file cannot be read (ENOENT)']);
});

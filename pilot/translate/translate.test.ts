// Golden tests: every testdata/<case>.in.yaml is translated for an ingress gateway proxy (or
// the proxy and mesh config its header names) and compared with testdata/<case>.out.yaml.
// `UPDATE_GOLDEN=1` rewrites the expected files (and deletes those whose input is gone);
// review the diff like any code change.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync, unlinkSync, existsSync } from 'node:fs';
import { stringify } from 'yaml';
import { parseConfigText } from '../../api/load.ts';
import { toSnapshot } from '../../api/validate.ts';
import { formatProblem } from '../../api/problems.ts';
import type { ConfigSnapshot, Resource } from '../../api/istio.ts';
import type { ProxyIdentity } from '../../api/proxyconfig.ts';
import { parseMeshConfig } from '../../api/meshconfig.ts';
import { translate } from './index.ts';

const DIR = new URL('./testdata/', import.meta.url);
const UPDATE = process.env.UPDATE_GOLDEN === '1';

const INGRESS: ProxyIdentity = { id: 'gateway~test~istio-system', namespace: 'istio-system', labels: { istio: 'ingressgateway' } };

/**
 * A case may run as another proxy, and with a mesh config, set in its leading comment lines:
 *   # proxy-labels: istio=egressgateway,app=x
 *   # proxy-egress: true
 *   # mesh-config: {outboundTrafficPolicy: {mode: ALLOW_ANY}, meshgate: {egressAudit: true}}
 */
function header(text: string, key: string): string | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith('#')) break;
    const m = new RegExp(`^# ${key}:(.*)$`).exec(line);
    if (m) return m[1].trim();
  }
  return null;
}

function proxyFor(text: string): ProxyIdentity {
  const proxy: ProxyIdentity = { ...INGRESS };
  const labelText = header(text, 'proxy-labels');
  if (labelText !== null) {
    const labels: Record<string, string> = {};
    for (const pair of labelText.split(',')) {
      const [k, v] = pair.trim().split('=');
      if (k) labels[k] = v ?? '';
    }
    proxy.labels = labels;
  }
  if (header(text, 'proxy-egress') === 'true') proxy.egress = true;
  return proxy;
}

function snapshotFor(text: string, resources: Resource[]): ConfigSnapshot {
  const snapshot = toSnapshot(resources);
  const mesh = header(text, 'mesh-config');
  if (mesh !== null) {
    const r = parseMeshConfig('mesh-config', mesh);
    assert.deepEqual(r.problems.map(formatProblem), [], 'the mesh-config header must parse cleanly');
    snapshot.mesh = r.config!;
  }
  return snapshot;
}

function load(name: string, text: string): Resource[] {
  const { resources, problems } = parseConfigText(`testdata/${name}`, text);
  assert.deepEqual(problems.map(formatProblem), [], `${name} must load cleanly`);
  return resources;
}

function render(snapshot: ConfigSnapshot, proxy: ProxyIdentity): string {
  const { config, problems } = translate(snapshot, proxy);
  // No YAML anchors: a route shared by two virtual hosts is written out in both places.
  return stringify({ config, problems: problems.map(formatProblem) }, { aliasDuplicateObjects: false, lineWidth: 0 });
}

const inputs = readdirSync(DIR).filter((f) => f.endsWith('.in.yaml')).sort();

describe('translate golden files', () => {
  for (const file of inputs) {
    const name = file.slice(0, -'.in.yaml'.length);
    test(name, () => {
      const text = readFileSync(new URL(file, DIR), 'utf8');
      const got = render(snapshotFor(text, load(file, text)), proxyFor(text));
      const outUrl = new URL(`${name}.out.yaml`, DIR);
      if (UPDATE) {
        writeFileSync(outUrl, got);
        return;
      }
      assert.ok(existsSync(outUrl), `missing ${name}.out.yaml: run with UPDATE_GOLDEN=1 and review it`);
      assert.equal(got, readFileSync(outUrl, 'utf8'));
    });
  }

  test('every expected file has an input', () => {
    const stale = readdirSync(DIR).filter((f) => f.endsWith('.out.yaml') && !inputs.includes(f.replace(/\.out\.yaml$/, '.in.yaml')));
    if (UPDATE) for (const f of stale) unlinkSync(new URL(f, DIR));
    else assert.deepEqual(stale, [], 'stale golden files: run with UPDATE_GOLDEN=1');
  });
});

describe('translate is deterministic', () => {
  for (const file of inputs) {
    test(`${file}: same snapshot twice, any input order, snapshot untouched`, () => {
      const text = readFileSync(new URL(file, DIR), 'utf8');
      const resources = load(file, text);
      const proxy = proxyFor(text);
      const snap = snapshotFor(text, resources);
      const before = JSON.stringify(snap);
      const first = translate(snap, proxy);
      assert.deepEqual(translate(snap, proxy), first);
      assert.equal(JSON.stringify(snap), before, 'translate must not modify its input');
      // Fixed permutations rather than a random shuffle keep failures repeatable.
      const reversed = [...resources].reverse();
      const interleaved = [...resources.filter((_, i) => i % 2 === 1), ...resources.filter((_, i) => i % 2 === 0)];
      assert.deepEqual(translate(snapshotFor(text, reversed), proxy), first);
      assert.deepEqual(translate(snapshotFor(text, interleaved), proxy), first);
    });
  }
});

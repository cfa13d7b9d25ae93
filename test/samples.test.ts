// The compatibility contract: every Istio sample that uses a kind meshgate supports loads
// unchanged and validates with no error; what meshgate does not implement is a warning
// that names the field. Each file is validated on its own, as a user applies one sample at
// a time (several bookinfo files are alternative versions of the same resources).
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfigText, listConfigFiles } from '../api/load.ts';
import { validateResources } from '../api/validate.ts';
import { formatProblem, PROBLEM_CODES } from '../api/problems.ts';
import type { Problem } from '../api/problems.ts';
import type { Resource } from '../api/istio.ts';
import { SUPPORTED_KINDS } from '../api/istio.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const SAMPLES = join(repoRoot, '..', 'shared', 'istio-samples');

interface FileResult { file: string; resources: Resource[]; accepted: Resource[]; problems: Problem[] }
const results: FileResult[] = [];

function inFile(name: string): FileResult {
  const r = results.find((x) => x.file === name);
  assert.ok(r, `sample ${name} was not loaded (have: ${results.map((x) => x.file).join(', ')})`);
  return r;
}

function has(r: FileResult, code: string, field: string, resource?: string): Problem {
  const p = r.problems.find((x) => x.code === code && x.field === field && (resource === undefined || x.resource === resource));
  assert.ok(p, `expected ${code} at ${field} in ${r.file}, got:\n${r.problems.map(formatProblem).join('\n')}`);
  return p;
}

describe('Istio samples', () => {
  before(async () => {
    assert.ok(existsSync(SAMPLES), `Istio samples are missing: expected them at ${SAMPLES} (the shared folder beside the repo)`);
    const files = (await listConfigFiles(SAMPLES)).filter((f) => /\.ya?ml$/i.test(f));
    for (const f of files) {
      const name = relative(SAMPLES, f);
      const loaded = parseConfigText(name, await readFile(f, 'utf8'));
      const v = validateResources(loaded.resources);
      results.push({ file: name, resources: loaded.resources, accepted: v.accepted, problems: [...loaded.problems, ...v.problems] });
    }
  });

  test('every YAML file loads and every supported resource validates without an error', () => {
    assert.ok(results.length >= 35, `found only ${results.length} YAML files under ${SAMPLES}`);
    const supported = results.flatMap((r) => r.resources).filter((r) => r.kind in SUPPORTED_KINDS);
    assert.ok(supported.length >= 40, `found only ${supported.length} Gateway/VirtualService/DestinationRule/ServiceEntry resources`);
    for (const r of results) {
      const errors = r.problems.filter((p) => p.severity === 'error');
      assert.deepEqual(errors.map(formatProblem), [], r.file);
      assert.equal(r.accepted.length, r.resources.length, `${r.file}: every resource is accepted`);
    }
  });

  test('every warning names a field or a resource and is one the registry knows', () => {
    for (const r of results) {
      for (const p of r.problems) {
        assert.ok(p.code in PROBLEM_CODES, formatProblem(p));
        assert.ok(p.file === r.file && p.line !== undefined && p.line > 0, formatProblem(p));
        assert.ok(p.field !== undefined || p.resource !== undefined || p.code === 'MG_CONFIG_MISSING_TYPE', formatProblem(p));
      }
    }
  });

  test('TCP routes and TCP servers are warned about by name', () => {
    const tcp = inFile(join('tcp-echo', 'tcp-echo-all-v1.yaml'));
    const route = has(tcp, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.tcp', 'VirtualService/default/tcp-echo');
    assert.equal(route.severity, 'warning');
    assert.match(route.message, /TCP routes are not supported yet/);
    assert.match(has(tcp, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.servers[0].port.protocol').message, /protocol TCP is not supported yet; server ignored/);
    assert.equal(route.line, 53);
  });

  test('Deployments, Services and the CRD file itself are ignored kinds', () => {
    const bookinfo = inFile(join('bookinfo', 'platform', 'kube', 'bookinfo.yaml'));
    const ignored = bookinfo.problems.filter((p) => p.code === 'MG_CONFIG_IGNORED_KIND');
    assert.ok(ignored.some((p) => p.resource?.startsWith('Deployment/')), ignored.map(formatProblem).join('\n'));
    assert.ok(ignored.some((p) => p.resource?.startsWith('Service/')), ignored.map(formatProblem).join('\n'));
    assert.ok(ignored.every((p) => p.severity === 'warning'));
    const crds = inFile(join('crds', 'crd-all.gen.yaml'));
    assert.ok(crds.problems.length > 10);
    assert.ok(crds.problems.every((p) => p.code === 'MG_CONFIG_IGNORED_KIND' && /CustomResourceDefinition/.test(p.message)), crds.problems.slice(0, 3).map(formatProblem).join('\n'));
  });

  test('mesh-only settings are warned about and the resources kept', () => {
    const mtls = inFile(join('bookinfo', 'networking', 'destination-rule-all-mtls.yaml'));
    assert.match(has(mtls, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.trafficPolicy.tls.mode', 'DestinationRule/default/reviews').message, /ISTIO_MUTUAL/);
    const github = inFile(join('external', 'github.yaml'));
    has(github, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.addresses', 'ServiceEntry/default/github-tcp');
    // resolution NONE (the default, left out by every external/ sample) is implemented: no warning.
    assert.equal(github.problems.filter((p) => p.field === 'spec.resolution').length, 0, github.problems.map(formatProblem).join('\n'));
  });

  test('the routing samples produce no problem at all', () => {
    for (const f of [
      join('bookinfo', 'networking', 'bookinfo-gateway.yaml'),
      join('bookinfo', 'networking', 'virtual-service-reviews-jason-v2-v3.yaml'),
      join('bookinfo', 'networking', 'virtual-service-ratings-test-delay.yaml'),
      join('bookinfo', 'networking', 'virtual-service-ratings-test-abort.yaml'),
      join('httpbin', 'httpbin-gateway.yaml'),
      join('helloworld', 'helloworld-gateway.yaml'),
    ]) {
      const r = inFile(f);
      assert.ok(r.accepted.length > 0, f);
      assert.deepEqual(r.problems.map(formatProblem), [], f);
    }
  });
});

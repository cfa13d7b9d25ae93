import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigStore } from './store.ts';
import { parseConfigText } from '../api/load.ts';
import { formatProblem } from '../api/problems.ts';

const vs = (timeout: string, prefix = '/a') => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match:
    - uri:
        prefix: ${prefix}
    timeout: ${timeout}
    route:
    - destination:
        host: reviews
`;

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
`;

// Parsed once: the file source hands the store the same objects for files that did not change.
const g = parseConfigText('gateway.yaml', GATEWAY);

function load(text: string, file = 'routes.yaml') {
  const r = parseConfigText(file, text);
  return { resources: [...g.resources, ...r.resources], problems: [...g.problems, ...r.problems] };
}

test('store: an invalid edit is rejected and the last valid version keeps serving', () => {
  const store = new ConfigStore();
  const first = store.update(load(vs('5s')));
  assert.equal(first.snapshot.virtualServices.length, 1);
  assert.equal(first.problems.filter((p) => p.severity === 'error').length, 0, first.problems.map(formatProblem).join('\n'));

  const second = store.update(load(vs('5 seconds', '/b')));
  assert.equal(second.snapshot.virtualServices.length, 1, 'the resource is still there');
  const kept = second.snapshot.virtualServices[0].spec.http![0];
  assert.equal(kept.timeout, '5s', 'it is the previous version');
  const lines = second.problems.map(formatProblem);
  assert.ok(lines.some((l) => /timeout/.test(l) && /5 seconds/.test(l) && l.includes('VirtualService/default/reviews')), lines.join('\n'));
  assert.ok(lines.some((l) => /last valid version/.test(l)), lines.join('\n'));
  assert.equal(second.generation, first.generation, 'nothing changed for the proxies');

  const third = store.update(load(vs('7s')));
  assert.equal(third.snapshot.virtualServices[0].spec.http![0].timeout, '7s');
  assert.equal(third.generation, first.generation + 1);
  assert.equal(third.problems.filter((p) => p.severity === 'error').length, 0);
});

test('store: a resource that was never valid is absent; others are unaffected', () => {
  const store = new ConfigStore();
  const good = vs('1s').replace('name: reviews', 'name: good');
  const s = store.update(load(`${good}---\n${vs('soon')}`));
  assert.deepEqual(s.snapshot.virtualServices.map((v) => v.metadata.name), ['good']);
  assert.ok(s.problems.some((p) => p.severity === 'error' && p.resource === 'VirtualService/default/reviews'));
});

test('store: the same resource in two files is reported and the first one wins', () => {
  const store = new ConfigStore();
  const a = load(vs('1s'), 'a.yaml');
  const b = load(vs('2s'), 'b.yaml');
  const s = store.update({ resources: [...a.resources, ...b.resources.slice(1)], problems: [] });
  assert.equal(s.snapshot.virtualServices.length, 1);
  assert.equal(s.snapshot.virtualServices[0].spec.http![0].timeout, '1s');
  const dup = s.problems.find((p) => p.code === 'MG_CONFIG_DUPLICATE');
  assert.ok(dup);
  assert.equal(dup.file, 'b.yaml');
  assert.match(dup.message, /a\.yaml/);
});

test('store: an edit that names a subset no DestinationRule defines is rejected; the route keeps serving', () => {
  const dr = parseConfigText('dr.yaml', `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`);
  const route = (subset: string) => parseConfigText('routes.yaml', `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: reviews, subset: ${subset}}
`);
  const state = (vs: ReturnType<typeof route>) => ({ resources: [...g.resources, ...dr.resources, ...vs.resources], problems: [] });
  const store = new ConfigStore();
  const first = store.update(state(route('v1')));
  assert.equal(first.snapshot.virtualServices[0].spec.http![0].route![0].destination.subset, 'v1');

  const second = store.update(state(route('v9')));
  assert.equal(second.snapshot.virtualServices[0].spec.http![0].route![0].destination.subset, 'v1', 'the previous version serves');
  assert.equal(second.generation, first.generation);
  const lines = second.problems.map(formatProblem);
  assert.ok(lines.some((l) => l.includes('MG_REF_SUBSET') && l.includes('v9') && l.includes('spec.http[0].route[0].destination.subset')), lines.join('\n'));
  assert.ok(lines.some((l) => l.includes('MG_CONFIG_INVALID') && /last valid version/.test(l)), lines.join('\n'));

  const third = store.update(state(route('v2')));
  assert.equal(third.snapshot.virtualServices[0].spec.http![0].route![0].destination.subset, 'v2');
  assert.equal(third.problems.filter((p) => p.severity === 'error').length, 0, third.problems.map(formatProblem).join('\n'));
});

test('store: a new resource with a broken reference is applied and reported (nothing to fall back to)', () => {
  const vs = parseConfigText('routes.yaml', `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fresh}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: reviews, subset: nope}
`);
  const s = new ConfigStore().update({ resources: [...g.resources, ...vs.resources], problems: [] });
  assert.equal(s.snapshot.virtualServices.length, 1);
  assert.ok(s.problems.some((p) => p.code === 'MG_REF_SUBSET'));
});

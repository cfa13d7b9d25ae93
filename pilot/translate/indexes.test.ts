import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../api/load.ts';
import { toSnapshot } from '../../api/validate.ts';
import { buildIndexes, findDestinationRule, resolveGatewayName } from './indexes.ts';

describe('resolveGatewayName', () => {
  test('reads every form a VirtualService may use to name a Gateway', () => {
    assert.equal(resolveGatewayName('gw', 'shop'), 'shop/gw');
    assert.equal(resolveGatewayName('istio-system/gw', 'shop'), 'istio-system/gw');
    assert.equal(resolveGatewayName('./gw', 'shop'), 'shop/gw');
    assert.equal(resolveGatewayName('gw.istio-system.svc.cluster.local', 'shop'), 'istio-system/gw');
    assert.equal(resolveGatewayName('gw.istio-system', 'shop'), 'istio-system/gw');
    assert.equal(resolveGatewayName('mesh', 'shop'), 'mesh');
  });
});

describe('findDestinationRule', () => {
  const { resources } = parseConfigText('dr.yaml', `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wide, namespace: a}
spec: {host: "*.example.com"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: narrow, namespace: a}
spec: {host: "*.api.example.com"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: exact-a, namespace: a}
spec: {host: v1.api.example.com}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: exact-b, namespace: b}
spec: {host: v1.api.example.com}
`);
  const idx = buildIndexes(toSnapshot(resources));
  const name = (host: string, ns: string | null) => findDestinationRule(idx, host, ns)?.metadata.name ?? null;

  test('exact host first, then the longest wildcard', () => {
    assert.equal(name('v1.api.example.com', null), 'exact-a');
    assert.equal(name('v2.api.example.com', null), 'narrow');
    assert.equal(name('www.example.com', null), 'wide');
    assert.equal(name('example.com', null), null);
  });

  test('among rules for the same host, the one in the service namespace', () => {
    assert.equal(name('v1.api.example.com', 'b'), 'exact-b');
    assert.equal(name('v1.api.example.com', 'c'), 'exact-a');
  });
});

// The policy stage inside the data plane: what authorization sees of the request is what
// the edge forwards — internal headers a client sent are gone for policies as for routing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { listener, match, proxyConfig, route, vhost, direct } from '../test/helpers/proxyconfig.ts';
import type { AuthzPolicy } from '../api/policy.ts';

function allowWhenHeader(header: string, value: string): AuthzPolicy {
  return {
    source: `authorizationpolicy/istio-system/allow-${header}`,
    action: 'ALLOW',
    rules: [{ from: [], to: [], when: [{ key: `request.headers[${header}]`, values: [value], notValues: null }] }],
  };
}

test('a client-sent x-meshgate-*/x-envoy-* header cannot satisfy an AuthorizationPolicy condition', async (t) => {
  const dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 8080: 0 } });
  await dp.start();
  t.after(() => dp.close(0));
  const cfg = proxyConfig([listener(8080, [vhost(['*'], [route('ok', [match()], [], { action: direct(200, 'in') })])])]);
  cfg.policies.authorization = [allowWhenHeader('x-meshgate-role', 'admin'), allowWhenHeader('x-envoy-peer', 'trusted'), allowWhenHeader('x-role', 'admin')];
  await dp.apply(cfg);
  const port = dp.ports()[8080];
  const get = (headers: Record<string, string>) => fetch(`http://127.0.0.1:${port}/`, { headers }).then(async (r) => ({ status: r.status, body: await r.text() }));

  assert.deepEqual(await get({ 'x-role': 'admin' }), { status: 200, body: 'in' }, 'an ordinary header satisfies its condition');
  assert.deepEqual(await get({ 'x-meshgate-role': 'admin' }), { status: 403, body: 'RBAC: access denied' });
  assert.deepEqual(await get({ 'x-envoy-peer': 'trusted' }), { status: 403, body: 'RBAC: access denied' });
  assert.equal((await get({})).status, 403);
});

// What a Prometheus scrape of the gateway's /stats/prometheus shows after real requests
// through a DataPlane and real upstreams on loopback: Istio's metric names and labels, exact
// counts by response code, destination and Envoy flag, and the policy and config counters.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { flagString, ISTIO_BUCKETS } from './metrics.ts';
import { freePort, startEcho, type Upstream } from '../test/helpers/upstream.ts';
import { makeCluster } from '../test/helpers/downstream.ts';
import { h1, h2 } from '../test/helpers/client.ts';
import { dest, direct, exact, listener, match, prefix, proxyConfig, route, vhost } from '../test/helpers/proxyconfig.ts';
import { istioSamples, jwtRule } from '../test/helpers/jwt.ts';
import type { ProxyConfig } from '../api/proxyconfig.ts';
import type { AuthzPolicy, RateLimitPolicy } from '../api/policy.ts';
import { parseProm, total, type Sample } from '../test/helpers/prometheus.ts';

async function scrape(port: number): Promise<Sample[]> {
  const r = await h1(port, '/stats/prometheus');
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return parseProm(r.body);
}

// ---------------------------------------------------------------- the gateway under test

const REVIEWS = 'outbound|9080|v1|reviews.default.svc.cluster.local';
const DEAD = 'outbound|80||dead.example.com';
const GRPC = 'outbound|50051||greeter.apps.svc.cluster.local';

const rateLimit = (mode: 'local' | 'global', routes: string[]): RateLimitPolicy => ({
  source: 'ratelimitpolicy/default/rl',
  mode,
  shadow: false,
  hosts: [],
  routes,
  rules: [{ source: 'ratelimitpolicy/default/rl/rules/0', name: 'per-route', limit: { requests: 2, unit: 'minute', burst: 0 }, key: [], overrides: [] }],
});

const denySecure: AuthzPolicy = {
  source: 'authorizationpolicy/default/deny-secure',
  action: 'DENY',
  rules: [{ from: [], to: [{ hosts: null, notHosts: null, ports: null, notPorts: null, methods: null, notMethods: null, paths: ['/secure*'], notPaths: null }], when: [] }],
};

describe('gateway metrics on /stats/prometheus', () => {
  let reviews: Upstream;
  let greeter: Upstream;
  let deadPort: number;
  let dp: DataPlane;
  let port: number;
  let config: ProxyConfig;

  before(async () => {
    reviews = await startEcho({ name: 'reviews' });
    greeter = await startEcho({
      name: 'greeter',
      protocol: 'h2c',
      handler: (_req, res) => {
        // A gRPC error in trailers after a body, as a real server sends NOT_FOUND.
        (res as import('node:http2').Http2ServerResponse).writeHead(200, { 'content-type': 'application/grpc' });
        res.addTrailers({ 'grpc-status': '5', 'grpc-message': 'no such greeting' });
        res.end(Buffer.from([0, 0, 0, 0, 0]));
        return true;
      },
    });
    deadPort = await freePort();
    config = proxyConfig([listener(8080, [vhost(['*'], [
      route('hello', [match({ uri: exact('/hello') })], [], { action: direct(200, 'hello there') }),
      route('reviews', [match({ uri: prefix('/reviews') })], [dest(REVIEWS)]),
      route('limited', [match({ uri: prefix('/limited') })], [dest(REVIEWS)]),
      route('secure', [match({ uri: prefix('/secure') })], [dest(REVIEWS)]),
      route('dead', [match({ uri: prefix('/dead') })], [dest(DEAD)]),
      route('greeter', [match({ uri: prefix('/greet.Greeter/') })], [dest(GRPC)]),
      route('grpc-dead', [match({ uri: prefix('/dead.Svc/') })], [dest(DEAD)]),
    ])])], [
      makeCluster(REVIEWS, [reviews.port], { service: 'reviews.default.svc.cluster.local', subset: 'v1', port: 9080 }),
      makeCluster(DEAD, [deadPort], { service: 'dead.example.com' }),
      makeCluster(GRPC, [greeter.port], { service: 'greeter.apps.svc.cluster.local', port: 50051, protocol: 'http2' }),
    ]);
    config.proxy = { id: 'gateway~gw-1~istio-system', namespace: 'istio-system', labels: { istio: 'ingressgateway' } };
    config.policies = {
      jwtRules: [jwtRule({ jwks: istioSamples().jwksJson })],
      authorization: [denySecure],
      rateLimits: [rateLimit('local', ['virtualservice/default/limited'])],
      numTrustedProxies: 0,
    };
    dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: 0, portMap: { 8080: 0 }, drainMs: 200 });
    await dp.start();
    await dp.apply(config);
    port = dp.ports()[8080];
  });
  after(async () => {
    await dp.close(200);
    await Promise.all([reviews.close(), greeter.close()]);
  });

  test('requests are counted exactly, by response code, destination service and Envoy flag', async () => {
    const before = await scrape(dp.metricsPort);
    assert.equal(total(before, 'istio_requests_total'), 0, 'nothing counted before traffic');

    let reviewBytes = 0;
    for (let i = 0; i < 5; i++) {
      const r = await h1(port, `/reviews/${i}`);
      assert.equal(r.status, 200);
      reviewBytes += Buffer.byteLength(r.body);
    }
    const posted = await h1(port, '/reviews/new', { method: 'POST', body: 'eleven byte' });
    assert.equal(posted.status, 200);
    reviewBytes += Buffer.byteLength(posted.body);
    for (let i = 0; i < 2; i++) assert.equal((await h1(port, '/reviews/x', { headers: { 'x-echo-status': '503' } })).status, 503);
    for (let i = 0; i < 3; i++) assert.equal((await h1(port, `/nowhere/${i}`)).status, 404);
    assert.equal((await h1(port, '/dead')).status, 503);
    assert.equal((await h1(port, '/hello')).status, 200);

    const s = await scrape(dp.metricsPort);
    const reviewsOk = {
      reporter: 'source', destination_service: 'reviews.default.svc.cluster.local', destination_service_name: 'reviews',
      destination_service_namespace: 'default', destination_version: 'v1', response_code: '200', response_flags: '-', request_protocol: 'http',
      source_workload: 'istio-ingressgateway', source_workload_namespace: 'istio-system', connection_security_policy: 'unknown',
    };
    assert.equal(total(s, 'istio_requests_total', reviewsOk), 6);
    assert.equal(total(s, 'istio_requests_total', { destination_service: 'reviews.default.svc.cluster.local', response_code: '503', response_flags: '-' }), 2);
    assert.equal(total(s, 'istio_requests_total', { destination_service: 'unknown', response_code: '404', response_flags: 'NR' }), 3);
    assert.equal(total(s, 'istio_requests_total', { destination_service: 'dead.example.com', destination_service_name: 'dead.example.com', destination_service_namespace: 'unknown', response_code: '503', response_flags: 'UF' }), 1);
    assert.equal(total(s, 'istio_requests_total', { response_code: '200', destination_service: 'unknown' }), 1, 'the direct response has no destination');
    assert.equal(total(s, 'istio_requests_total'), 13);

    // Histograms: one observation per request, Envoy's buckets, sums that match what was sent.
    assert.equal(total(s, 'istio_request_duration_milliseconds_count'), 13);
    assert.equal(total(s, 'istio_request_duration_milliseconds_count', reviewsOk), 6);
    assert.equal(total(s, 'istio_request_duration_milliseconds_bucket', { ...reviewsOk, le: '+Inf' }), 6);
    const les = s.filter((x) => x.name === 'istio_request_duration_milliseconds_bucket' && x.labels.response_code === '404').map((x) => x.labels.le);
    assert.deepEqual(les, [...ISTIO_BUCKETS.map(String), '+Inf']);
    assert.ok(total(s, 'istio_request_duration_milliseconds_sum', reviewsOk) > 0);
    assert.equal(total(s, 'istio_response_bytes_sum', reviewsOk), reviewBytes);
    assert.equal(total(s, 'istio_request_bytes_sum', reviewsOk), 11);
    assert.equal(total(s, 'istio_request_bytes_count', reviewsOk), 6);
    assert.equal(total(s, 'istio_response_bytes_sum', { response_code: '200', destination_service: 'unknown' }), Buffer.byteLength('hello there'));
  });

  test('policy answers: 429 counts with RL and in the limiter counters, 401 and 403 by reason', async () => {
    const before = await scrape(dp.metricsPort);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await h1(port, '/limited')).status);
    assert.deepEqual(statuses, [200, 200, 429, 429]);
    assert.equal((await h1(port, '/secure/data')).status, 403);
    assert.equal((await h1(port, '/reviews/1', { headers: { authorization: 'Bearer not.a.token' } })).status, 401);
    assert.equal((await h1(port, '/reviews/1', { headers: { authorization: `Bearer ${istioSamples().demoJwt}` } })).status, 200);

    const s = await scrape(dp.metricsPort);
    assert.equal(total(s, 'istio_requests_total', { response_code: '429', response_flags: 'RL', destination_service: 'reviews.default.svc.cluster.local' }), 2);
    assert.equal(total(s, 'istio_requests_total', { response_code: '403', response_flags: '-' }), 1);
    assert.equal(total(s, 'istio_requests_total', { response_code: '401', response_flags: '-' }), 1);
    assert.equal(total(s, 'meshgate_ratelimit_decisions_total', { result: 'limited' }), 2);
    assert.equal(total(s, 'meshgate_ratelimit_decisions_total', { result: 'allowed' }), 2);
    assert.equal(total(s, 'meshgate_authz_decisions_total', { result: 'deny' }), 1);
    assert.equal(total(s, 'meshgate_jwt_authentications_total', { result: 'fail', reason: 'malformed' }), 1);
    assert.equal(total(s, 'meshgate_jwt_authentications_total', { result: 'ok' }), 1);
    // Requests refused by a later stage still passed the earlier ones: the 403 and both
    // 429s carried no token, and the 429s had been allowed by authorization.
    const delta = (name: string, labels: Record<string, string>) => total(s, name, labels) - total(before, name, labels);
    assert.equal(delta('meshgate_jwt_authentications_total', { result: 'none' }), 5);
    assert.equal(delta('meshgate_authz_decisions_total', { result: 'allow' }), 5);
    // No Redis configured for this gateway: no Redis gauge to mislead an alert.
    assert.equal(s.some((x) => x.name === 'meshgate_ratelimit_redis_up'), false);
  });

  test('gRPC: counted as grpc with the grpc-status the client got, from trailers or a local reply', async () => {
    const grpcHeaders = { 'content-type': 'application/grpc', te: 'trailers' };
    const r = await h2(port, '/greet.Greeter/Hello', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' });
    assert.equal(r.status, 200);
    const dead = await h2(port, '/dead.Svc/Hello', { method: 'POST', headers: grpcHeaders, body: '\0\0\0\0\0' });
    assert.deepEqual([dead.status, dead.headers['grpc-status']], [200, '14']);
    const s = await scrape(dp.metricsPort);
    assert.equal(total(s, 'istio_requests_total', {
      request_protocol: 'grpc', response_code: '200', grpc_response_status: '5', destination_service: 'greeter.apps.svc.cluster.local',
      destination_service_namespace: 'apps', response_flags: '-',
    }), 1);
    assert.equal(total(s, 'istio_requests_total', { request_protocol: 'grpc', response_code: '200', grpc_response_status: '14', response_flags: 'UF' }), 1);
    assert.equal(total(s, 'istio_requests_total', { request_protocol: 'http', grpc_response_status: '' }), total(s, 'istio_requests_total', { request_protocol: 'http' }));
  });

  test('config: the serving version as an info gauge, applies and rejections counted', async () => {
    let s = await scrape(dp.metricsPort);
    assert.equal(total(s, 'meshgate_config_version_info', { version: dp.version! }), 1);
    const acks = total(s, 'meshgate_config_applies_total', { result: 'ack' });
    assert.ok(acks >= 1);
    const bad: ProxyConfig = { ...config, version: 'bad-1', listeners: [config.listeners[0], config.listeners[0]] };
    await assert.rejects(dp.apply(bad));
    s = await scrape(dp.metricsPort);
    assert.equal(total(s, 'meshgate_config_applies_total', { result: 'nack' }), 1);
    assert.equal(total(s, 'meshgate_config_applies_total', { result: 'ack' }), acks);
    assert.equal(total(s, 'meshgate_config_version_info', { version: 'bad-1' }), 0, 'a rejected version never shows as serving');
  });

  test('the metrics port serves only /stats/prometheus', async () => {
    assert.equal((await h1(dp.metricsPort, '/config_dump')).status, 404);
    assert.equal((await h1(dp.metricsPort, '/stats/prometheus', { method: 'POST', body: 'x' })).status, 405);
  });
});

test('a global rate limit with Redis unreachable: meshgate_ratelimit_redis_up is 0', async () => {
  const closed = await freePort();
  const dp = new DataPlane({
    upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: 0, portMap: { 8080: 0 }, drainMs: 100,
    redis: `redis://127.0.0.1:${closed}`,
  });
  await dp.start();
  try {
    const config = proxyConfig([listener(8080, [vhost(['*'], [route('hello', [], [], { action: direct(200, 'hi') })])])]);
    config.policies = { jwtRules: [], authorization: [], rateLimits: [rateLimit('global', [])], numTrustedProxies: 0 };
    await dp.apply(config);
    const s = await scrape(dp.metricsPort);
    const gauge = s.filter((x) => x.name === 'meshgate_ratelimit_redis_up');
    assert.deepEqual(gauge.map((x) => x.value), [0]);
    // The limit still answers (from memory) while Redis is away, and says so.
    assert.equal((await h1(dp.ports()[8080], '/')).status, 200);
  } finally {
    await dp.close(100);
  }
});

test('metricsPort null: no metrics server, requests still served', async () => {
  const dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 8080: 0 } });
  await dp.start();
  try {
    assert.equal(dp.metricsPort, 0);
    await dp.apply(proxyConfig([listener(8080, [vhost(['*'], [route('hello', [], [], { action: direct(200, 'hi') })])])]));
    assert.equal((await h1(dp.ports()[8080], '/')).status, 200);
    assert.match(await dp.renderMetrics(), /istio_requests_total\{[^}]*response_code="200"[^}]*\} 1/);
  } finally {
    await dp.close(100);
  }
});

test('response flags print in one order, "-" for none', () => {
  assert.equal(flagString([], null), '-');
  assert.equal(flagString(['URX', 'UF'], null), 'UF,URX');
  assert.equal(flagString(['FI'], 'DI'), 'DI,FI');
  assert.equal(flagString([], 'DI'), 'DI');
  assert.equal(flagString(['DC', 'DC'], null), 'DC');
});

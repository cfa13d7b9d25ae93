import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRouteTable, matchRoute, parseQuery, type HeaderValues, type MatchInput } from './router.ts';
import { dest, direct, exact, listener, match, prefix, present, regex, route, vhost } from '../test/helpers/proxyconfig.ts';
import type { Route, VirtualHost } from '../api/proxyconfig.ts';

function table(vhosts: VirtualHost[]) {
  return compileRouteTable(listener(8080, vhosts));
}

function req(over: Partial<MatchInput> = {}): MatchInput {
  return { authority: 'example.com', path: '/', method: 'GET', scheme: 'http', headers: {}, query: '', port: 8080, ...over };
}

/** Name of the route a request lands on, or null for 404. */
function routed(routes: Route[], over: Partial<MatchInput> = {}): string | null {
  const r = matchRoute(table([vhost(['*'], routes)]), req(over));
  return r === null ? null : r.route.name.replace('virtualservice/default/', '');
}

describe('route match kinds', () => {
  test('uri exact, prefix and regex (regex must match the whole path)', () => {
    const routes = [
      route('exact', [match({ uri: exact('/login') })], [dest('a')]),
      route('regex', [match({ uri: regex('/items/[0-9]+') })], [dest('a')]),
      route('prefix', [match({ uri: prefix('/api') })], [dest('a')]),
    ];
    assert.equal(routed(routes, { path: '/login' }), 'exact');
    assert.equal(routed(routes, { path: '/login/x' }), null);
    assert.equal(routed(routes, { path: '/items/42' }), 'regex');
    assert.equal(routed(routes, { path: '/items/42/x' }), null, 'a partial regex match is no match');
    assert.equal(routed(routes, { path: '/apis' }), 'prefix', 'Istio prefixes are string prefixes');
  });

  test('ignoreUriCase applies to uri exact and prefix, not regex (Istio: "only in the case of exact and prefix URI matches")', () => {
    const routes = [
      route('ci', [match({ uri: exact('/admin'), ignoreUriCase: true })], [dest('a')]),
      route('ci-prefix', [match({ uri: prefix('/docs/'), ignoreUriCase: true })], [dest('a')]),
      route('ci-re', [match({ uri: regex('/re/[a-z]+'), ignoreUriCase: true })], [dest('a')]),
    ];
    assert.equal(routed(routes, { path: '/ADMIN' }), 'ci');
    assert.equal(routed(routes, { path: '/Docs/intro' }), 'ci-prefix');
    assert.equal(routed(routes, { path: '/re/abc' }), 'ci-re');
    assert.equal(routed(routes, { path: '/Re/ABC' }), null, 'a regex stays case-sensitive');
    assert.equal(routed([route('cs', [match({ uri: exact('/admin') })], [dest('a')])], { path: '/ADMIN' }), null);
  });

  test('method, scheme and authority', () => {
    const routes = [
      route('post', [match({ method: exact('POST') })], [dest('a')]),
      route('https', [match({ scheme: exact('https') })], [dest('a')]),
      route('auth', [match({ authority: prefix('api.') })], [dest('a')]),
    ];
    assert.equal(routed(routes, { method: 'POST' }), 'post');
    assert.equal(routed(routes, { scheme: 'https' }), 'https');
    assert.equal(routed(routes, { authority: 'API.example.com:8080' }), 'auth', 'authority compares case-insensitively');
    assert.equal(routed(routes), null);
  });

  test('headers exact, prefix, regex and present', () => {
    const routes = [
      route('exact', [match({ headers: [{ name: 'x-env', match: exact('prod') }] })], [dest('a')]),
      route('prefix', [match({ headers: [{ name: 'x-ver', match: prefix('v2') }] })], [dest('a')]),
      route('regex', [match({ headers: [{ name: 'x-user', match: regex('[a-z]+-[0-9]+') }] })], [dest('a')]),
      route('present', [match({ headers: [{ name: 'x-debug', match: present() }] })], [dest('a')]),
    ];
    assert.equal(routed(routes, { headers: { 'x-env': 'prod' } }), 'exact');
    assert.equal(routed(routes, { headers: { 'x-env': 'prod2' } }), null);
    assert.equal(routed(routes, { headers: { 'x-ver': 'v2.1' } }), 'prefix');
    assert.equal(routed(routes, { headers: { 'x-user': 'bob-7' } }), 'regex');
    assert.equal(routed(routes, { headers: { 'x-user': 'bob-7x' } }), null);
    assert.equal(routed(routes, { headers: { 'x-debug': '' } }), 'present');
  });

  test('a header sent several times: each value is checked, not the joined string [CVE-2026-26308]', () => {
    const routes = [route('exact', [match({ headers: [{ name: 'x-role', match: exact('admin') }] })], [dest('a')])];
    const twice: HeaderValues = { 'x-role': ['user', 'admin'] };
    assert.equal(routed(routes, { headers: twice }), 'exact', 'any one value may match');
    assert.equal(routed(routes, { headers: { 'x-role': 'user, admin' } }), null, 'a joined string is one value');
    const re = [route('re', [match({ headers: [{ name: 'x-role', match: regex('user') }] })], [dest('a')])];
    assert.equal(routed(re, { headers: { 'x-role': ['user', 'admin'] } }), 're');
  });

  test('withoutHeaders fails when any value matches', () => {
    const routes = [
      route('not-admin', [match({ withoutHeaders: [{ name: 'x-role', match: exact('admin') }] })], [dest('a')]),
      route('rest', [], [dest('a')]),
    ];
    assert.equal(routed(routes, {}), 'not-admin', 'absent header satisfies withoutHeaders');
    assert.equal(routed(routes, { headers: { 'x-role': 'user' } }), 'not-admin');
    assert.equal(routed(routes, { headers: { 'x-role': ['user', 'admin'] } }), 'rest');
    const nopresent = [route('no-debug', [match({ withoutHeaders: [{ name: 'x-debug', match: present() }] })], [dest('a')])];
    assert.equal(routed(nopresent, { headers: { 'x-debug': '1' } }), null);
  });

  test('internal headers are never matched from client values', () => {
    const routes = [route('internal', [match({ headers: [{ name: 'x-envoy-peer', match: present() }] })], [dest('a')])];
    assert.equal(routed(routes, { headers: { 'x-envoy-peer': 'x' } }), null);
  });

  test('queryParams exact, regex and present, decoded', () => {
    const routes = [
      route('q-exact', [match({ queryParams: [{ name: 'v', match: exact('a b') }] })], [dest('a')]),
      route('q-regex', [match({ queryParams: [{ name: 'id', match: regex('[0-9]+') }] })], [dest('a')]),
      route('q-present', [match({ queryParams: [{ name: 'debug', match: present() }] })], [dest('a')]),
    ];
    assert.equal(routed(routes, { query: 'v=a%20b' }), 'q-exact');
    assert.equal(routed(routes, { query: 'id=x&id=12' }), 'q-regex');
    assert.equal(routed(routes, { query: 'debug' }), 'q-present');
    assert.equal(routed(routes, { query: 'id=12x' }), null);
  });

  test('first matching route wins; entries of one route are ORed, fields ANDed', () => {
    const routes = [
      route('both', [match({ uri: prefix('/a'), method: exact('POST') })], [dest('a')]),
      route('either', [match({ uri: prefix('/b') }), match({ method: exact('PUT') })], [dest('a')]),
      route('catchall', [], [dest('a')]),
      route('never', [], [dest('a')]),
    ];
    assert.equal(routed(routes, { path: '/a', method: 'POST' }), 'both');
    assert.equal(routed(routes, { path: '/a', method: 'GET' }), 'catchall');
    assert.equal(routed(routes, { path: '/x', method: 'PUT' }), 'either');
    const r = matchRoute(table([vhost(['*'], routes)]), req({ path: '/x', method: 'PUT' }));
    assert.equal(r?.matchIndex, 1);
  });

  test('no matching route: null (404)', () => {
    assert.equal(routed([route('only', [match({ uri: exact('/x') })], [dest('a')])], { path: '/y' }), null);
  });
});

describe('virtual host selection', () => {
  const t = table([
    vhost(['api.example.com'], [route('exact', [], [], { action: direct(200) })]),
    vhost(['*.example.com'], [route('wild', [], [], { action: direct(200) })]),
    vhost(['*.b.example.com'], [route('longer-wild', [], [], { action: direct(200) })]),
    vhost(['*'], [route('star', [], [], { action: direct(200) })]),
  ]);
  const pick = (authority: string) => matchRoute(t, req({ authority }))?.route.name.replace('virtualservice/default/', '');

  test('exact beats wildcard beats *', () => {
    assert.equal(pick('api.example.com'), 'exact');
    assert.equal(pick('www.example.com'), 'wild');
    assert.equal(pick('other.org'), 'star');
  });

  test('the longest wildcard suffix wins', () => {
    assert.equal(pick('a.b.example.com'), 'longer-wild');
  });

  test('Host compares case-insensitively and without its port, IPv6 literals included [CVE-2021-39155]', () => {
    assert.equal(pick('API.Example.COM:8080'), 'exact');
    const v6 = table([vhost(['[::1]'], [route('v6', [], [], { action: direct(200) })])]);
    assert.equal(matchRoute(v6, req({ authority: '[::1]:8080' }))?.route.name, 'virtualservice/default/v6');
  });

  test('no virtual host: null (404)', () => {
    const only = table([vhost(['a.com'], [route('a', [], [], { action: direct(200) })])]);
    assert.equal(matchRoute(only, req({ authority: 'b.com' })), null);
  });
});

describe('compile errors name the route', () => {
  test('an invalid regex', () => {
    assert.throws(
      () => table([vhost(['*'], [route('bad', [match({ uri: regex('(a') })], [dest('a')])])]),
      /listener 127\.0\.0\.1_8080 virtual host \*:80: route virtualservice\/default\/bad match .* uri: invalid RE2 regex/,
    );
  });

  test('backreferences and lookaheads are not RE2', () => {
    assert.throws(() => table([vhost(['*'], [route('bad', [match({ uri: regex('(a)\\1') })], [dest('a')])])]), /invalid RE2/);
  });

  test('a CR/LF in a header value to add', () => {
    assert.throws(
      () => table([vhost(['*'], [route('crlf', [], [dest('a')], { requestHeaders: { set: [['x-a', 'v\r\nx-b: 1']], add: [], remove: [] } })])]),
      /route virtualservice\/default\/crlf headers\.request: header x-a has a value with control characters/,
    );
  });

  test('a pathological regex runs in linear time', () => {
    const t = table([vhost(['*'], [route('redos', [match({ uri: regex('/(a+)+$') })], [dest('a')])])]);
    const start = process.hrtime.bigint();
    assert.equal(matchRoute(t, req({ path: '/' + 'a'.repeat(30_000) + '!' })), null);
    assert.ok(Number(process.hrtime.bigint() - start) / 1e6 < 2000);
  });
});

test('parseQuery keeps every value and decodes', () => {
  assert.deepEqual({ ...parseQuery('a=1&a=2&b=%2Fx&c&=z') }, { a: ['1', '2'], b: ['/x'], c: [''], '': ['z'] });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeJwt } from 'jose';
import type { AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, RequestFacts } from '../api/policy.ts';
import { AuthzConfigError, RBAC_DENIED, authzProblem, compileAuthorization, validateAuthorization, type AuthInfo, type AuthzDecision, type AuthzOptions } from './authz.ts';

// ---------------------------------------------------------------- builders

function facts(over: Partial<RequestFacts> = {}): RequestFacts {
  return {
    method: 'GET', path: '/', query: '', host: 'api.example.com', port: 8080, headers: {},
    sourceIp: '10.0.0.1', remoteIp: '203.0.113.7', sni: '', peerPrincipal: '', peerNamespace: '',
    ...over,
  };
}

const NO_SOURCE: AuthzSource = {
  principals: null, notPrincipals: null, requestPrincipals: null, notRequestPrincipals: null,
  namespaces: null, notNamespaces: null, ipBlocks: null, notIpBlocks: null, remoteIpBlocks: null, notRemoteIpBlocks: null,
};
const NO_OPERATION: AuthzOperation = {
  hosts: null, notHosts: null, ports: null, notPorts: null, methods: null, notMethods: null, paths: null, notPaths: null,
};

function src(over: Partial<AuthzSource>): AuthzSource { return { ...NO_SOURCE, ...over }; }
function op(over: Partial<AuthzOperation>): AuthzOperation { return { ...NO_OPERATION, ...over }; }
function when(key: string, values: string[] | null, notValues: string[] | null = null): AuthzCondition {
  return { key, values, notValues };
}
function rule(r: { from?: Partial<AuthzSource>[]; to?: Partial<AuthzOperation>[]; when?: AuthzCondition[] } = {}): AuthzRule {
  return { from: (r.from ?? []).map(src), to: (r.to ?? []).map(op), when: r.when ?? [] };
}
function policy(action: AuthzPolicy['action'], rules: AuthzRule[], name = `${action.toLowerCase()}-1`): AuthzPolicy {
  return { source: `authorizationpolicy/default/${name}`, action, rules };
}

function auth(over: Partial<AuthInfo> = {}): AuthInfo {
  return {
    principal: 'https://issuer.example.com/alice',
    claims: { iss: 'https://issuer.example.com', sub: 'alice' },
    audiences: ['api'],
    presenter: '',
    ...over,
  };
}

function decide(policies: AuthzPolicy[], f: RequestFacts, a: AuthInfo | null = null, opts?: AuthzOptions): AuthzDecision {
  return compileAuthorization(policies, opts).authorize(f, a);
}

function status(policies: AuthzPolicy[], f: RequestFacts, a: AuthInfo | null = null, opts?: AuthzOptions): number {
  return decide(policies, f, a, opts).status;
}

/** Compile must fail with an error naming the policy and the field. */
function rejects(p: AuthzPolicy, field: string, reason: RegExp): void {
  assert.throws(() => compileAuthorization([p]), (e: unknown) => {
    assert.ok(e instanceof AuthzConfigError, String(e));
    assert.equal(e.source, p.source);
    assert.equal(e.field, field);
    assert.match(e.reason, reason);
    assert.ok(e.message.startsWith(`${p.source} ${field}: `), e.message);
    return true;
  });
}

// ---------------------------------------------------------------- the field matrix

type Req = { f: RequestFacts; a: AuthInfo | null };
interface FieldCase {
  name: string;
  /** Builds a rule from a value list; `negate` builds the not* form. */
  build: (negate: boolean) => AuthzRule;
  hit: Req;
  miss: Req;
}

function sourceCase(field: keyof AuthzSource, values: string[], hit: Req, miss: Req): FieldCase {
  const notField = ('not' + field[0].toUpperCase() + field.slice(1)) as keyof AuthzSource;
  return { name: field, build: (neg) => rule({ from: [{ [neg ? notField : field]: values }] }), hit, miss };
}
function operationCase(field: keyof AuthzOperation, values: string[], hit: Req, miss: Req): FieldCase {
  const notField = ('not' + field[0].toUpperCase() + field.slice(1)) as keyof AuthzOperation;
  return { name: field, build: (neg) => rule({ to: [{ [neg ? notField : field]: values }] }), hit, miss };
}
function whenCase(key: string, values: string[], hit: Req, miss: Req): FieldCase {
  return { name: `when ${key}`, build: (neg) => rule({ when: [neg ? when(key, null, values) : when(key, values)] }), hit, miss };
}
const r = (f: Partial<RequestFacts> = {}, a: AuthInfo | null = null): Req => ({ f: facts(f), a });

const MATRIX: FieldCase[] = [
  sourceCase('principals', ['cluster.local/ns/web/sa/frontend'],
    r({ peerPrincipal: 'spiffe://cluster.local/ns/web/sa/frontend' }), r({ peerPrincipal: 'spiffe://cluster.local/ns/web/sa/other' })),
  sourceCase('requestPrincipals', ['https://issuer.example.com/alice'], r({}, auth()), r({}, auth({ principal: 'https://issuer.example.com/bob' }))),
  sourceCase('namespaces', ['web'], r({ peerNamespace: 'web' }), r({ peerNamespace: 'batch' })),
  sourceCase('ipBlocks', ['10.0.0.0/8'], r({ sourceIp: '10.20.30.40' }), r({ sourceIp: '192.168.0.1' })),
  sourceCase('remoteIpBlocks', ['198.51.100.0/24', '2001:db8::/32'], r({ remoteIp: '2001:db8::7' }), r({ remoteIp: '203.0.113.7' })),
  operationCase('hosts', ['api.example.com'], r({ host: 'api.example.com' }), r({ host: 'www.example.com' })),
  operationCase('ports', ['8443'], r({ port: 8443 }), r({ port: 8080 })),
  operationCase('methods', ['POST', 'PUT'], r({ method: 'PUT' }), r({ method: 'GET' })),
  operationCase('paths', ['/admin', '/internal/*'], r({ path: '/internal/metrics' }), r({ path: '/public' })),
  whenCase('request.headers[x-tenant]', ['acme'], r({ headers: { 'x-tenant': ['acme'] } }), r({ headers: { 'x-tenant': ['other'] } })),
  whenCase('request.auth.claims[role]', ['admin'], r({}, auth({ claims: { role: 'admin' } })), r({}, auth({ claims: { role: 'user' } }))),
  whenCase('request.auth.claims[realm][role]', ['admin'],
    r({}, auth({ claims: { realm: { role: 'admin' } } })), r({}, auth({ claims: { realm: { role: 'user' } } }))),
  whenCase('request.auth.principal', ['https://issuer.example.com/alice'], r({}, auth()), r({}, auth({ principal: 'x/y' }))),
  whenCase('request.auth.audiences', ['billing'], r({}, auth({ audiences: ['api', 'billing'] })), r({}, auth({ audiences: ['api'] }))),
  whenCase('request.auth.presenter', ['web-app'], r({}, auth({ presenter: 'web-app' })), r({}, auth({ presenter: 'cli' }))),
  whenCase('source.ip', ['10.0.0.0/8'], r({ sourceIp: '10.1.1.1' }), r({ sourceIp: '172.16.0.1' })),
  whenCase('remote.ip', ['203.0.113.7'], r({ remoteIp: '203.0.113.7' }), r({ remoteIp: '203.0.113.8' })),
  whenCase('destination.port', ['443'], r({ port: 443 }), r({ port: 80 })),
  whenCase('connection.sni', ['*.example.com'], r({ sni: 'api.example.com' }), r({ sni: 'example.org' })),
  whenCase('source.namespace', ['web'], r({ peerNamespace: 'web' }), r({ peerNamespace: 'other' })),
  whenCase('source.principal', ['cluster.local/ns/web/sa/frontend'],
    r({ peerPrincipal: 'spiffe://cluster.local/ns/web/sa/frontend' }), r({ peerPrincipal: 'spiffe://cluster.local/ns/web/sa/x' })),
];

describe('every field and its not* form', () => {
  for (const c of MATRIX) {
    test(`${c.name}: DENY and ALLOW, plain and negated`, () => {
      const deny = [policy('DENY', [c.build(false)])];
      const denyNot = [policy('DENY', [c.build(true)])];
      const allow = [policy('ALLOW', [c.build(false)])];
      const allowNot = [policy('ALLOW', [c.build(true)])];
      assert.equal(status(deny, c.hit.f, c.hit.a), 403, 'DENY, matching request');
      assert.equal(status(deny, c.miss.f, c.miss.a), 200, 'DENY, other request');
      assert.equal(status(denyNot, c.hit.f, c.hit.a), 200, 'DENY not*, matching request');
      assert.equal(status(denyNot, c.miss.f, c.miss.a), 403, 'DENY not*, other request');
      assert.equal(status(allow, c.hit.f, c.hit.a), 200, 'ALLOW, matching request');
      assert.equal(status(allow, c.miss.f, c.miss.a), 403, 'ALLOW, other request');
      assert.equal(status(allowNot, c.hit.f, c.hit.a), 403, 'ALLOW not*, matching request');
      assert.equal(status(allowNot, c.miss.f, c.miss.a), 200, 'ALLOW not*, other request');
    });
  }
});

// ---------------------------------------------------------------- evaluation order

describe('evaluation order', () => {
  const allowAll = policy('ALLOW', [rule()], 'allow-all');
  const denyAdmin = policy('DENY', [rule({ to: [{ paths: ['/admin*'] }] })], 'deny-admin');
  const allowGet = policy('ALLOW', [rule({ to: [{ methods: ['GET'] }] })], 'allow-get');

  test('DENY beats ALLOW, and the decision names the DENY policy and rule', () => {
    const d = decide([allowAll, denyAdmin], facts({ path: '/admin/users' }));
    assert.equal(d.allowed, false);
    assert.equal(d.status, 403);
    assert.equal(d.reason, RBAC_DENIED);
    assert.equal(d.reason, 'RBAC: access denied');
    assert.equal(d.policy, 'authorizationpolicy/default/deny-admin');
    assert.equal(d.rule, 'authorizationpolicy/default/deny-admin/rules/0');
  });

  test('with ALLOW policies, a request none of them matches is denied with no deciding policy', () => {
    const d = decide([allowGet, denyAdmin], facts({ method: 'POST', path: '/orders' }));
    assert.deepEqual([d.status, d.policy, d.reason], [403, null, RBAC_DENIED]);
    const ok = decide([allowGet, denyAdmin], facts({ method: 'GET', path: '/orders' }));
    assert.deepEqual([ok.allowed, ok.status, ok.policy, ok.rule], [true, 200, 'authorizationpolicy/default/allow-get', 'authorizationpolicy/default/allow-get/rules/0']);
  });

  test('the first matching ALLOW rule is the one reported', () => {
    const p = policy('ALLOW', [rule({ to: [{ paths: ['/a'] }] }), rule({ to: [{ methods: ['GET'] }] })], 'two-rules');
    assert.equal(decide([p], facts({ path: '/b' })).rule, 'authorizationpolicy/default/two-rules/rules/1');
  });

  test('without ALLOW policies, whatever no DENY matches is allowed', () => {
    const d = decide([denyAdmin], facts({ path: '/orders' }));
    assert.deepEqual([d.allowed, d.status, d.policy, d.reason], [true, 200, null, '']);
  });

  test('no policies at all: allowed, and the authorizer says it is empty', () => {
    const a = compileAuthorization([]);
    assert.equal(a.empty, true);
    assert.equal(a.authorize(facts(), null).allowed, true);
    assert.equal(compileAuthorization([denyAdmin]).empty, false);
  });

  test('an ALLOW policy without rules allows nothing, alone; beside another ALLOW it changes nothing', () => {
    const allowNothing = policy('ALLOW', [], 'allow-nothing');
    assert.equal(status([allowNothing], facts()), 403);
    assert.equal(status([allowNothing, allowGet], facts({ method: 'GET' })), 200);
    assert.equal(status([allowNothing, allowGet], facts({ method: 'DELETE' })), 403);
  });

  test('a DENY policy without rules denies nothing', () => {
    assert.equal(status([policy('DENY', [], 'deny-nothing')], facts()), 200);
  });

  test('a rule {} matches every request: ALLOW it allows all, DENY it denies all', () => {
    assert.equal(status([policy('ALLOW', [rule()])], facts({ method: 'DELETE', path: '/x' })), 200);
    assert.equal(status([policy('DENY', [rule()])], facts()), 403);
  });

  test('AUDIT never denies, and reports every AUDIT policy that matched, denied requests included', () => {
    const auditAdmin = policy('AUDIT', [rule({ to: [{ paths: ['/admin*'] }] })], 'audit-admin');
    const auditAll = policy('AUDIT', [rule()], 'audit-all');
    const auditNothing = policy('AUDIT', [rule({ to: [{ methods: ['PATCH'] }] })], 'audit-patch');
    const ok = decide([auditAdmin, auditAll, auditNothing], facts({ path: '/admin' }));
    assert.equal(ok.allowed, true);
    assert.deepEqual(ok.audit, ['authorizationpolicy/default/audit-admin', 'authorizationpolicy/default/audit-all']);
    const denied = decide([auditAdmin, denyAdmin], facts({ path: '/admin' }));
    assert.equal(denied.status, 403);
    assert.deepEqual(denied.audit, ['authorizationpolicy/default/audit-admin']);
    assert.deepEqual(decide([auditAdmin], facts({ path: '/public' })).audit, []);
    // an AUDIT policy is not an ALLOW policy: it does not turn on default-deny
    assert.equal(status([auditNothing], facts()), 200);
  });

  test('within a rule: from entries are ORed, fields ANDed, and every when must hold', () => {
    const p = policy('ALLOW', [rule({
      from: [{ namespaces: ['web'] }, { ipBlocks: ['192.168.0.0/16'] }],
      to: [{ methods: ['GET'], paths: ['/api/*'] }],
      when: [when('request.headers[x-a]', ['1']), when('request.headers[x-b]', ['2'])],
    })]);
    const h = { 'x-a': ['1'], 'x-b': ['2'] };
    assert.equal(status([p], facts({ peerNamespace: 'web', method: 'GET', path: '/api/x', headers: h })), 200);
    assert.equal(status([p], facts({ sourceIp: '192.168.3.3', method: 'GET', path: '/api/x', headers: h })), 200);
    assert.equal(status([p], facts({ peerNamespace: 'web', method: 'POST', path: '/api/x', headers: h })), 403, 'method ANDed with path');
    assert.equal(status([p], facts({ peerNamespace: 'web', method: 'GET', path: '/api/x', headers: { 'x-a': ['1'] } })), 403, 'every when');
    assert.equal(status([p], facts({ peerNamespace: 'batch', method: 'GET', path: '/api/x', headers: h })), 403, 'no from entry');
  });

  test('values and notValues of one condition both apply', () => {
    const p = policy('ALLOW', [rule({ when: [when('request.headers[x-env]', ['prod*'], ['prod-eu'])] })]);
    assert.equal(status([p], facts({ headers: { 'x-env': ['prod-us'] } })), 200);
    assert.equal(status([p], facts({ headers: { 'x-env': ['prod-eu'] } })), 403);
  });

  test('decisions are frozen and reused, so a caller cannot corrupt the next request', () => {
    const a = compileAuthorization([denyAdmin]);
    const d1 = a.authorize(facts({ path: '/admin' }), null);
    assert.ok(Object.isFrozen(d1));
    assert.equal(a.authorize(facts({ path: '/admin' }), null), d1);
  });
});

// ---------------------------------------------------------------- value forms

describe('value forms: exact, prefix*, *suffix, *', () => {
  test('principals', () => {
    const deny = (v: string): AuthzPolicy[] => [policy('DENY', [rule({ from: [{ principals: [v] }] })])];
    const f = facts({ peerPrincipal: 'spiffe://cluster.local/ns/attacker/sa/evil' });
    assert.equal(status(deny('cluster.local/ns/attacker/sa/evil'), f), 403);
    assert.equal(status(deny('cluster.local/ns/attacker/*'), f), 403);
    assert.equal(status(deny('*/sa/evil'), f), 403);
    assert.equal(status(deny('*'), f), 403);
    assert.equal(status(deny('cluster.local/ns/attacker'), f), 200);
  });

  test('wildcard-suffix principals in DENY rules match the SPIFFE identity [CVE-2020-16844]', () => {
    const p = [policy('DENY', [rule({ from: [{ principals: ['*/ns/attacker/sa/evil', '*-untrusted'] }] })])];
    assert.equal(status(p, facts({ peerPrincipal: 'spiffe://cluster.local/ns/attacker/sa/evil' })), 403);
    assert.equal(status(p, facts({ peerPrincipal: 'spiffe://other.domain/ns/attacker/sa/evil' })), 403);
    assert.equal(status(p, facts({ peerPrincipal: 'spiffe://cluster.local/ns/a/sa/x-untrusted' })), 403);
    assert.equal(status(p, facts({ peerPrincipal: 'spiffe://cluster.local/ns/web/sa/frontend' })), 200);
  });

  test('`*` means present: principals ["*"] needs an mTLS peer, requestPrincipals ["*"] a valid token', () => {
    const needsPeer = [policy('ALLOW', [rule({ from: [{ principals: ['*'] }] })])];
    assert.equal(status(needsPeer, facts()), 403);
    assert.equal(status(needsPeer, facts({ peerPrincipal: 'spiffe://cluster.local/ns/a/sa/b' })), 200);
    const needsToken = [policy('ALLOW', [rule({ from: [{ requestPrincipals: ['*'] }] })])];
    assert.equal(status(needsToken, facts(), null), 403);
    assert.equal(status(needsToken, facts(), auth()), 200);
  });

  test('notRequestPrincipals ["*"] matches exactly the requests without a token', () => {
    const p = [policy('DENY', [rule({ from: [{ notRequestPrincipals: ['*'] }] })], 'require-jwt')];
    assert.equal(status(p, facts(), null), 403);
    assert.equal(status(p, facts(), auth()), 200);
  });

  test('requestPrincipals by issuer prefix', () => {
    const p = [policy('ALLOW', [rule({ from: [{ requestPrincipals: ['https://issuer.example.com/*'] }] })])];
    assert.equal(status(p, facts(), auth()), 200);
    assert.equal(status(p, facts(), auth({ principal: 'https://evil.example.com/alice' })), 403);
  });

  test('hosts: case-insensitive [CVE-2021-39155], port ignored, *.suffix and prefix*', () => {
    const deny = [policy('DENY', [rule({ to: [{ hosts: ['Httpbin.Foo', '*.internal.example.com', 'admin.*'] }] })])];
    assert.equal(status(deny, facts({ host: 'httpbin.foo' })), 403);
    assert.equal(status(deny, facts({ host: 'HTTPBIN.FOO' })), 403, 'an upper-case Host from a careless caller');
    assert.equal(status(deny, facts({ host: 'httpbin.foo:8080' })), 403, 'a port the data plane did not strip');
    assert.equal(status(deny, facts({ host: 'db.internal.example.com' })), 403);
    assert.equal(status(deny, facts({ host: 'admin.example.org' })), 403);
    assert.equal(status(deny, facts({ host: 'httpbin.bar' })), 200);
    const withPort = [policy('DENY', [rule({ to: [{ hosts: ['httpbin.foo:*', 'api.example.com:443'] }] })])];
    assert.equal(status(withPort, facts({ host: 'httpbin.foo' })), 403, 'a :port in the policy is stripped too');
    assert.equal(status(withPort, facts({ host: 'api.example.com' })), 403);
    const v6 = [policy('DENY', [rule({ to: [{ hosts: ['[2001:db8::1]:8080'] }] })])];
    assert.equal(status(v6, facts({ host: '[2001:db8::1]' })), 403);
  });

  test('methods are case-sensitive: a policy value `get` is not GET', () => {
    const p = [policy('ALLOW', [rule({ to: [{ methods: ['get'] }] })])];
    assert.equal(status(p, facts({ method: 'GET' })), 403);
    const deny = [policy('DENY', [rule({ to: [{ methods: ['DELETE', 'PU*'] }] })])];
    assert.equal(status(deny, facts({ method: 'PUT' })), 403);
    assert.equal(status(deny, facts({ method: 'delete' })), 200, 'the gateway refuses lower-case methods before authz');
  });

  test('paths: exact, prefix*, *suffix, *', () => {
    const deny = [policy('DENY', [rule({ to: [{ paths: ['/exact', '/pre/*', '*.php'] }] })])];
    assert.equal(status(deny, facts({ path: '/exact' })), 403);
    assert.equal(status(deny, facts({ path: '/exact/' })), 200, 'exact is exact');
    assert.equal(status(deny, facts({ path: '/pre/a/b' })), 403);
    assert.equal(status(deny, facts({ path: '/pre' })), 200);
    assert.equal(status(deny, facts({ path: '/x/index.php' })), 403);
    assert.equal(status([policy('DENY', [rule({ to: [{ paths: ['*'] }] })])], facts({ path: '/anything' })), 403);
  });

  test('path templates: {*} is one segment, {**} any number at the end', () => {
    const p = [policy('ALLOW', [rule({ to: [{ paths: ['/users/{*}/orders', '/files/{**}', '/v1/{*}/{*}/{**}/edit'] }] })])];
    const ok = (path: string): number => status(p, facts({ path }));
    assert.equal(ok('/users/42/orders'), 200);
    assert.equal(ok('/users/42/43/orders'), 403, '{*} is one segment');
    assert.equal(ok('/users//orders'), 403, '{*} is not empty');
    assert.equal(ok('/users/42/orders/x'), 403);
    assert.equal(ok('/files/'), 200);
    assert.equal(ok('/files/a/b/c.txt'), 200);
    assert.equal(ok('/files'), 403);
    assert.equal(ok('/filesystem/x'), 403);
    assert.equal(ok('/v1/a/b/edit'), 403, '{**} sits between two slashes here');
    assert.equal(ok('/v1/a/b/c/d/edit'), 200);
    // zero segments for {**}: Envoy's template matches, but merged (as an upstream may) it is
    // /v1/a/b/edit, which does not, and an ALLOW must hold for both readings
    assert.equal(ok('/v1/a/b//edit'), 403);
    assert.equal(status(p, facts({ path: '/v1/a/b//edit' }), null, { mergeSlashes: false }), 200);
  });

  test('regex metacharacters are literal everywhere [CVE-2026-39350]', () => {
    const p = [policy('ALLOW', [rule({ from: [{ principals: ['a.b*'] }], to: [{ paths: ['/v1/.+', '/(a|b)'] }], when: [when('request.headers[x-id]', ['^[0-9]+$'])] })])];
    const h = { 'x-id': ['^[0-9]+$'] };
    assert.equal(status(p, facts({ peerPrincipal: 'a.bc', path: '/v1/.+', headers: h })), 200, 'the literal strings match');
    assert.equal(status(p, facts({ peerPrincipal: 'axbc', path: '/v1/.+', headers: h })), 403, '. is not any character');
    assert.equal(status(p, facts({ peerPrincipal: 'a.bc', path: '/v1/xyz', headers: h })), 403, '.+ is not one-or-more');
    assert.equal(status(p, facts({ peerPrincipal: 'a.bc', path: '/a', headers: h })), 403, '(a|b) is not alternation');
    assert.equal(status(p, facts({ peerPrincipal: 'a.bc', path: '/v1/.+', headers: { 'x-id': ['123'] } })), 403);
  });
});

// ---------------------------------------------------------------- paths after normalisation

describe('path tricks, as the gateway hands them over (Istio BASE normalisation)', () => {
  const denyAdmin = [policy('DENY', [rule({ to: [{ paths: ['/admin', '/admin/*'] }] })], 'deny-admin')];
  const allowPublic = [policy('ALLOW', [rule({ to: [{ paths: ['/public', '/public/*'] }] })], 'allow-public')];

  test('/admin/../public arrives as /public: neither denied nor mistaken for admin', () => {
    assert.equal(status(denyAdmin, facts({ path: '/public' })), 200);
    // and the reverse trick, /public/../admin, arrives as /admin
    assert.equal(status(denyAdmin, facts({ path: '/admin' })), 403);
    assert.equal(status(allowPublic, facts({ path: '/admin' })), 403);
  });

  test('//admin (slashes kept by BASE) is still caught by a DENY on /admin', () => {
    assert.equal(status(denyAdmin, facts({ path: '//admin' })), 403);
    assert.equal(status(denyAdmin, facts({ path: '/admin//users' })), 403);
    assert.equal(status(denyAdmin, facts({ path: '///admin///users' })), 403);
    // with mergeSlashes off (the gateway merges itself), the path is compared as given
    assert.equal(status(denyAdmin, facts({ path: '//admin' }), null, { mergeSlashes: false }), 200);
  });

  test('/admin%2Fsecret and /admin%5Csecret (kept encoded by BASE) are caught by DENY /admin/* [CVE-2021-31920]', () => {
    assert.equal(status(denyAdmin, facts({ path: '/admin%2Fsecret' })), 403);
    assert.equal(status(denyAdmin, facts({ path: '/admin%2fsecret' })), 403);
    assert.equal(status(denyAdmin, facts({ path: '/admin%5Csecret' })), 403);
    assert.equal(status(denyAdmin, facts({ path: '/public%2F..%2Fadmin' })), 403, 'decoded, then dot segments');
    assert.equal(status(denyAdmin, facts({ path: '/admin%2Fsecret' }), null, { decodeSlashes: false }), 200);
    assert.equal(status(denyAdmin, facts({ path: '/administrator%2Fx' })), 200, 'only real slashes count');
  });

  test('an ALLOW does not let an encoded slash walk out of its prefix', () => {
    assert.equal(status(allowPublic, facts({ path: '/public/..%2Fadmin' })), 403);
    assert.equal(status(allowPublic, facts({ path: '/public/..%5Cadmin' })), 403);
    assert.equal(status(allowPublic, facts({ path: '/public/a%2Fb' })), 200, 'an encoded slash that stays inside is fine');
    assert.equal(status(allowPublic, facts({ path: '/public//x' })), 200);
  });

  test('a DENY notPaths cannot be escaped with an encoded or doubled slash either', () => {
    const onlyPublic = [policy('DENY', [rule({ to: [{ notPaths: ['/public/*'] }] })])];
    assert.equal(status(onlyPublic, facts({ path: '/public/x' })), 200);
    assert.equal(status(onlyPublic, facts({ path: '/public/..%2Fadmin' })), 403);
    assert.equal(status(onlyPublic, facts({ path: '/admin' })), 403);
  });

  test('/admin#x arrives without its fragment, /admin?x without its query: exact rules hold [CVE-2021-39156, CVE-2020-8595]', () => {
    const exact = [policy('DENY', [rule({ to: [{ paths: ['/admin'] }] })])];
    assert.equal(status(exact, facts({ path: '/admin' })), 403);
    assert.equal(status(exact, facts({ path: '/admin', query: 'x' })), 403);
  });

  test('/ADMIN is not /admin (case-sensitive as Istio) unless denyIgnoreCase is set for ignoreUriCase routes [istio/istio#40541]', () => {
    assert.equal(status(denyAdmin, facts({ path: '/ADMIN' })), 200);
    assert.equal(status(denyAdmin, facts({ path: '/ADMIN' }), null, { denyIgnoreCase: true }), 403);
    assert.equal(status(denyAdmin, facts({ path: '/Admin/Users' }), null, { denyIgnoreCase: true }), 403);
    // ALLOW stays exact even then: ignoring case there would allow more, not less
    assert.equal(status(allowPublic, facts({ path: '/PUBLIC' }), null, { denyIgnoreCase: true }), 403);
    const mixedCaseRule = [policy('DENY', [rule({ to: [{ paths: ['/Admin/*'] }] })])];
    assert.equal(status(mixedCaseRule, facts({ path: '/admin/x' }), null, { denyIgnoreCase: true }), 403);
  });
});

// ---------------------------------------------------------------- addresses

describe('ipBlocks and remoteIpBlocks', () => {
  const allowFrom = (blocks: string[], field: 'ipBlocks' | 'remoteIpBlocks' = 'ipBlocks'): AuthzPolicy[] =>
    [policy('ALLOW', [rule({ from: [{ [field]: blocks }] })])];

  test('/0 allows its whole family', () => {
    assert.equal(status(allowFrom(['0.0.0.0/0']), facts({ sourceIp: '8.8.8.8' })), 200);
    assert.equal(status(allowFrom(['0.0.0.0/0']), facts({ sourceIp: '2001:db8::1' })), 403);
    assert.equal(status(allowFrom(['::/0']), facts({ sourceIp: '2001:db8::1' })), 200);
  });

  test('/32 and /128 are one address', () => {
    assert.equal(status(allowFrom(['192.0.2.10/32']), facts({ sourceIp: '192.0.2.10' })), 200);
    assert.equal(status(allowFrom(['192.0.2.10/32']), facts({ sourceIp: '192.0.2.11' })), 403);
    assert.equal(status(allowFrom(['2001:db8::10/128']), facts({ sourceIp: '2001:db8::10' })), 200);
    assert.equal(status(allowFrom(['2001:db8::10/128']), facts({ sourceIp: '2001:db8::11' })), 403);
  });

  test('an IPv4 client seen by a dual-stack socket as ::ffff:a.b.c.d matches IPv4 blocks', () => {
    assert.equal(status(allowFrom(['192.0.2.0/24']), facts({ sourceIp: '::ffff:192.0.2.5' })), 200);
    assert.equal(status(allowFrom(['::ffff:192.0.2.0/120']), facts({ sourceIp: '192.0.2.5' })), 200);
    const denyV4 = [policy('DENY', [rule({ from: [{ remoteIpBlocks: ['198.51.100.0/24'] }] })])];
    assert.equal(status(denyV4, facts({ remoteIp: '::ffff:198.51.100.9' })), 403);
  });

  test('remoteIpBlocks look at the X-Forwarded-For client, ipBlocks at the peer', () => {
    const p = allowFrom(['203.0.113.0/24'], 'remoteIpBlocks');
    assert.equal(status(p, facts({ sourceIp: '10.0.0.1', remoteIp: '203.0.113.50' })), 200);
    assert.equal(status(p, facts({ sourceIp: '203.0.113.50', remoteIp: '10.0.0.1' })), 403);
  });

  test('an unparseable address matches no block and every notIpBlocks', () => {
    assert.equal(status(allowFrom(['0.0.0.0/0']), facts({ sourceIp: '' })), 403);
    assert.equal(status([policy('DENY', [rule({ from: [{ notIpBlocks: ['10.0.0.0/8'] }] })])], facts({ sourceIp: 'garbage' })), 403);
  });
});

// ---------------------------------------------------------------- headers and claims

describe('headers', () => {
  test('several values of one header are checked one by one, never joined [CVE-2026-26308]', () => {
    const deny = [policy('DENY', [rule({ when: [when('request.headers[x-role]', ['admin'])] })])];
    assert.equal(status(deny, facts({ headers: { 'x-role': ['user', 'admin'] } })), 403);
    assert.equal(status(deny, facts({ headers: { 'x-role': ['user,admin'] } })), 200, 'a comma inside one value is that value');
    const allow = [policy('ALLOW', [rule({ when: [when('request.headers[x-role]', ['admin'])] })])];
    assert.equal(status(allow, facts({ headers: { 'x-role': ['admin'] } })), 200);
    assert.equal(status(allow, facts({ headers: { 'x-role': ['admin', 'user'] } })), 403, 'ALLOW needs every value');
  });

  test('a DENY with notValues cannot be escaped by adding an allowed value', () => {
    const deny = [policy('DENY', [rule({ when: [when('request.headers[x-env]', null, ['prod'])] })])];
    assert.equal(status(deny, facts({ headers: { 'x-env': ['prod'] } })), 200);
    assert.equal(status(deny, facts({ headers: { 'x-env': ['prod', 'staging'] } })), 403);
    assert.equal(status(deny, facts({})), 403, 'absent header: not in the list');
  });

  test('header names in keys are case-insensitive; values are compared as given, trailing whitespace included', () => {
    const p = [policy('ALLOW', [rule({ when: [when('request.headers[X-Token]', ['abc'])] })])];
    assert.equal(status(p, facts({ headers: { 'x-token': ['abc'] } })), 200);
    assert.equal(status(p, facts({ headers: { 'x-token': ['abc '] } })), 403, 'the data plane trims OWS before; what is left is part of the value');
    assert.equal(status(p, facts({ headers: { 'x-token': ['ABC'] } })), 403);
  });

  test('presence (`*`) needs the header; an empty value is present', () => {
    const p = [policy('ALLOW', [rule({ when: [when('request.headers[x-api-key]', ['*'])] })])];
    assert.equal(status(p, facts({})), 403);
    assert.equal(status(p, facts({ headers: { 'x-api-key': [] } })), 403);
    assert.equal(status(p, facts({ headers: { 'x-api-key': [''] } })), 200);
  });

  test('header and claim names like constructor or __proto__ find nothing on Object.prototype', () => {
    const p = [policy('ALLOW', [rule({ when: [when('request.headers[constructor]', ['*'])] }), rule({ when: [when('request.auth.claims[__proto__]', ['*'])] }), rule({ when: [when('request.auth.claims[toString]', ['*'])] })])];
    assert.equal(status(p, facts({}), auth()), 403);
  });
});

describe('JWT claims', () => {
  const groupsToken = readFileSync(new URL('../../shared/istio-samples/jwt/groups-scope.jwt', import.meta.url), 'utf8').trim();
  const claims = decodeJwt(groupsToken) as Record<string, unknown>;
  const sample: AuthInfo = {
    principal: `${claims.iss}/${claims.sub}`, claims, audiences: [], presenter: '',
  };

  test('a groups rule matches the groups list of istio-samples/jwt/groups-scope.jwt', () => {
    assert.deepEqual(claims.groups, ['group1', 'group2']);
    const p = [policy('ALLOW', [rule({ from: [{ requestPrincipals: ['testing@secure.istio.io/testing@secure.istio.io'] }], when: [when('request.auth.claims[groups]', ['group1'])] })])];
    assert.equal(status(p, facts(), sample), 200);
    assert.equal(status(p, facts(), null), 403);
    const other = [policy('ALLOW', [rule({ when: [when('request.auth.claims[groups]', ['group3'])] })])];
    assert.equal(status(other, facts(), sample), 403);
    const notGroup = [policy('DENY', [rule({ when: [when('request.auth.claims[groups]', null, ['group2'])] })])];
    assert.equal(status(notGroup, facts(), sample), 200, 'group2 is in the list');
  });

  test('scope as a list (the sample) or a space-separated string both match one scope', () => {
    const p = [policy('ALLOW', [rule({ when: [when('request.auth.claims[scope]', ['scope2'])] })])];
    assert.equal(status(p, facts(), sample), 200);
    assert.equal(status(p, facts(), auth({ claims: { scope: 'scope1 scope2' } })), 200);
    assert.equal(status(p, facts(), auth({ claims: { scope: 'scope1 scope22' } })), 403);
    const custom = [policy('ALLOW', [rule({ when: [when('request.auth.claims[roles]', ['editor'])] })])];
    assert.equal(status(custom, facts(), auth({ claims: { roles: 'viewer editor' } })), 403, 'other claims are whole strings');
    assert.equal(status(custom, facts(), auth({ claims: { roles: 'viewer editor' } }), { spaceDelimitedClaims: ['roles'] }), 200);
  });

  test('nested claims, and claims that are not strings', () => {
    const p = [policy('ALLOW', [rule({ when: [when('request.auth.claims[realm_access][roles]', ['admin'])] })])];
    assert.equal(status(p, facts(), auth({ claims: { realm_access: { roles: ['user', 'admin'] } } })), 200);
    assert.equal(status(p, facts(), auth({ claims: { realm_access: 'admin' } })), 403);
    assert.equal(status(p, facts(), auth({ claims: { realm_access: { roles: 7 } } })), 403);
    const num = [policy('ALLOW', [rule({ when: [when('request.auth.claims[level]', ['7'])] })])];
    assert.equal(status(num, facts(), auth({ claims: { level: 7 } })), 403, 'as Istio: claim conditions compare strings');
  });

  test('a request without a token has no claims: values never match, notValues always do', () => {
    assert.equal(status([policy('ALLOW', [rule({ when: [when('request.auth.claims[iss]', ['*'])] })])], facts(), null), 403);
    assert.equal(status([policy('ALLOW', [rule({ when: [when('request.auth.claims[iss]', null, ['x'])] })])], facts(), null), 200);
  });
});

// ---------------------------------------------------------------- bad input

describe('bad policies are rejected with the policy and the field named', () => {
  const deny = (r: AuthzRule): AuthzPolicy => policy('DENY', [r], 'bad');
  const cases: [string, AuthzPolicy, string, RegExp][] = [
    ['invalid CIDR', deny(rule({ from: [{ ipBlocks: ['10.0.0.0/8', '10.0.0.0/33'] }] })), 'spec.rules[0].from[0].source.ipBlocks[1]', /not an IP address or CIDR/],
    ['host name as CIDR', deny(rule({ from: [{ notRemoteIpBlocks: ['example.com'] }] })), 'spec.rules[0].from[0].source.notRemoteIpBlocks[0]', /CIDR/],
    ['octal-looking IPv4', deny(rule({ when: [when('source.ip', ['010.0.0.1'])] })), 'spec.rules[0].when[0].values[0]', /CIDR/],
    ['bad port', deny(rule({ to: [{ ports: ['http'] }] })), 'spec.rules[0].to[0].operation.ports[0]', /port/],
    ['port out of range', deny(rule({ when: [when('destination.port', ['70000'])] })), 'spec.rules[0].when[0].values[0]', /port/],
    ['unknown when key', deny(rule({ when: [when('request.method', ['GET'])] })), 'spec.rules[0].when[0].key', /unknown attribute/],
    ['claims.a', deny(rule({ when: [when('claims.a', ['x'])] })), 'spec.rules[0].when[0].key', /unknown attribute/],
    ['request.auth.claims.a', deny(rule({ when: [when('request.auth.claims.a', ['x'])] })), 'spec.rules[0].when[0].key', /expected "\["/],
    ['unclosed claim bracket', deny(rule({ when: [when('request.auth.claims[a', ['x'])] })), 'spec.rules[0].when[0].key', /unclosed/],
    ['empty claim name', deny(rule({ when: [when('request.auth.claims[]', ['x'])] })), 'spec.rules[0].when[0].key', /empty name/],
    ['text after claim', deny(rule({ when: [when('request.auth.claims[a]b', ['x'])] })), 'spec.rules[0].when[0].key', /expected "\["/],
    ['no claim name', deny(rule({ when: [when('request.auth.claims', ['x'])] })), 'spec.rules[0].when[0].key', /needs a name/],
    ['bad header key', deny(rule({ when: [when('request.headers[x y]', ['1'])] })), 'spec.rules[0].when[0].key', /not a valid header name/],
    ['two header names', deny(rule({ when: [when('request.headers[a][b]', ['1'])] })), 'spec.rules[0].when[0].key', /one name/],
    ['destination.ip', deny(rule({ when: [when('destination.ip', ['10.0.0.1'])] })), 'spec.rules[0].when[0].key', /not supported/],
    ['when without values', deny(rule({ when: [when('source.ip', null, null)] })), 'spec.rules[0].when[0]', /values or notValues/],
    ['empty value', deny(rule({ to: [{ methods: ['GET', ''] }] })), 'spec.rules[0].to[0].operation.methods[1]', /empty value/],
    ['empty source', deny(rule({ from: [{}] })), 'spec.rules[0].from[0].source', /must not be empty/],
    ['empty operation', deny(rule({ to: [{ paths: [] }] })), 'spec.rules[0].to[0].operation', /must not be empty/],
    ['two {**}', deny(rule({ to: [{ paths: ['/a/{**}/{**}'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /only one \{\*\*\}/],
    ['{*} after {**}', deny(rule({ to: [{ paths: ['/a/{**}/{*}'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /last operator/],
    ['partial-segment template', deny(rule({ to: [{ paths: ['/a/x{*}'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /\{ or \}/],
    ['named variable', deny(rule({ to: [{ notPaths: ['/users/{id}'] }] })), 'spec.rules[0].to[0].operation.notPaths[0]', /\{ or \}/],
    ['template glob', deny(rule({ to: [{ paths: ['/a/{*}/b*'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /pchar/],
    ['template without /', deny(rule({ to: [{ paths: ['{*}/a'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /start with \//],
    ['template with //', deny(rule({ to: [{ paths: ['/a//{*}'] }] })), 'spec.rules[0].to[0].operation.paths[0]', /empty segment/],
    ['overlong value', deny(rule({ to: [{ paths: ['/' + 'a'.repeat(5000)] }] })), 'spec.rules[0].to[0].operation.paths[0]', /longer than/],
  ];
  for (const [name, p, field, reason] of cases) {
    test(name, () => rejects(p, field, reason));
  }

  test('CUSTOM and unknown actions', () => {
    rejects({ source: 'authorizationpolicy/default/ext', action: 'CUSTOM' as never, rules: [] }, 'spec.action', /CUSTOM.*not supported/);
    rejects({ source: 'authorizationpolicy/default/odd', action: 'REJECT' as never, rules: [] }, 'spec.action', /ALLOW, DENY, AUDIT/);
  });

  test('a later rule and a later policy are named by their index; all problems are listed by validateAuthorization', () => {
    const good = policy('ALLOW', [rule()], 'good');
    const bad = policy('DENY', [rule(), rule({ from: [{ ipBlocks: ['x'] }], when: [when('bogus', ['1'])] })], 'bad');
    const errors = validateAuthorization([good, bad]);
    assert.deepEqual(errors.map((e) => `${e.source} ${e.field}`), [
      'authorizationpolicy/default/bad spec.rules[1].from[0].source.ipBlocks[0]',
      'authorizationpolicy/default/bad spec.rules[1].when[0].key',
    ]);
    assert.throws(() => compileAuthorization([good, bad]), /authorizationpolicy\/default\/bad spec\.rules\[1\]\.from\[0\]\.source\.ipBlocks\[0\]: "x" is not an IP address or CIDR block \(and 1 more problem\)/);
    assert.deepEqual(validateAuthorization([good]), []);
  });

  test('as a Problem for analyze and the admin port', () => {
    const [e] = validateAuthorization([policy('DENY', [rule({ to: [{ ports: ['x'] }] })], 'p')]);
    assert.deepEqual(authzProblem(e), {
      code: 'MG_CONFIG_INVALID', severity: 'error', resource: 'AuthorizationPolicy/default/p',
      field: 'spec.rules[0].to[0].operation.ports[0]', message: '"x" is not a port number (0-65535)',
    });
  });

  test("fail-closed: a bad ALLOW allows nothing, a bad DENY denies everything, and the rest still works", () => {
    const badAllow = policy('ALLOW', [rule({ from: [{ ipBlocks: ['nope'] }] })], 'bad-allow');
    const goodAllow = policy('ALLOW', [rule({ to: [{ paths: ['/public/*'] }] })], 'good-allow');
    const a = compileAuthorization([badAllow, goodAllow], { onInvalid: 'fail-closed' });
    assert.equal(a.errors.length, 1);
    assert.equal(a.authorize(facts({ path: '/public/x' }), null).status, 200);
    assert.equal(a.authorize(facts({ path: '/private' }), null).status, 403);
    const badDeny = policy('DENY', [rule({ when: [when('request.auth.claims[a', ['x'])] })], 'bad-deny');
    const b = compileAuthorization([badDeny, goodAllow], { onInvalid: 'fail-closed' });
    const d = b.authorize(facts({ path: '/public/x' }), null);
    assert.deepEqual([d.status, d.policy], [403, 'authorizationpolicy/default/bad-deny']);
    const onlyBadAllow = compileAuthorization([badAllow], { onInvalid: 'fail-closed' });
    assert.equal(onlyBadAllow.authorize(facts(), null).status, 403);
  });

  test('fail-closed: a CUSTOM policy denies the requests its rules would have sent to the external authorizer', () => {
    const custom: AuthzPolicy = { source: 'authorizationpolicy/default/ext-authz', action: 'CUSTOM' as never, rules: [rule({ to: [{ paths: ['/admin/*'] }] })] };
    const a = compileAuthorization([custom], { onInvalid: 'fail-closed' });
    assert.match(a.errors[0].message, /CUSTOM/);
    const d = a.authorize(facts({ path: '/admin/x' }), null);
    assert.deepEqual([d.status, d.policy], [403, 'authorizationpolicy/default/ext-authz']);
    assert.equal(a.authorize(facts({ path: '/public' }), null).status, 200);
  });
});

// JWT authentication against Istio's own sample tokens and key (../shared/istio-samples/jwt/),
// with the JWKS served by a real HTTPS server on 127.0.0.1.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto';
import {
  JwtAuthenticator, unauthorizedResponse, stripCookies, stripQueryParams,
  type AuthnResult, type AuthnOk, type AuthnFail,
} from './jwt.ts';
import { JwksPool } from './jwks.ts';
import type { JwtRule } from '../api/policy.ts';
import {
  istioSamples, istioSigningKey, newSigningKey, mintToken, unsignedToken, hmacWithPublicKey,
  tamperPayload, startJwksServer, jwtRule, requestFacts, bearer, jwksOf, decodePayload,
  ISTIO_ISSUER, type JwksServer, type SigningKey,
} from '../test/helpers/jwt.ts';

const samples = istioSamples();
const PRINCIPAL = `${ISTIO_ISSUER}/${ISTIO_ISSUER}`;

let server: JwksServer;
let key: SigningKey;
const started: JwtAuthenticator[] = [];

before(async () => {
  server = await startJwksServer(samples.jwksJson);
  key = await istioSigningKey();
});
after(async () => {
  for (const a of started) a.stop();
  await server.close();
});

/** A rule fetching the sample JWKS from the local HTTPS server. */
function remoteRule(over: Partial<JwtRule> = {}, srv: JwksServer = server): JwtRule {
  return jwtRule({ jwksUri: srv.url, jwksCaPem: srv.caPem, allowPrivateJwksUri: true, ...over });
}

async function authn(rules: JwtRule[], opts: ConstructorParameters<typeof JwtAuthenticator>[1] = {}): Promise<JwtAuthenticator> {
  const a = new JwtAuthenticator(rules, opts);
  started.push(a);
  await a.start();
  return a;
}

function sync(r: AuthnResult | Promise<AuthnResult>): AuthnResult {
  assert.ok(!(r instanceof Promise), 'expected a synchronous result');
  return r;
}
function ok(r: AuthnResult | Promise<AuthnResult>): AuthnOk {
  const res = sync(r);
  assert.equal(res.outcome, 'ok', res.outcome === 'fail' ? `failed: ${res.reason}` : 'no token');
  return res as AuthnOk;
}
function failed(r: AuthnResult | Promise<AuthnResult>, reason: AuthnFail['reason']): AuthnFail {
  return assertFail(sync(r), reason);
}
function assertFail(res: AuthnResult, reason: AuthnFail['reason']): AuthnFail {
  assert.equal(res.outcome, 'fail');
  assert.equal((res as AuthnFail).reason, reason);
  assert.equal((res as AuthnFail).status, 401);
  return res as AuthnFail;
}
// A token not yet cached goes to jose, which verifies asynchronously: these await it.
async function verified(r: AuthnResult | Promise<AuthnResult>): Promise<AuthnOk> {
  const res = await r;
  assert.equal(res.outcome, 'ok', res.outcome === 'fail' ? `failed: ${res.reason}` : 'no token');
  return res as AuthnOk;
}
async function refused(r: AuthnResult | Promise<AuthnResult>, reason: AuthnFail['reason']): Promise<AuthnFail> {
  return assertFail(await r, reason);
}

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 300 && Date.now() < deadline; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('Istio sample tokens', () => {
  test('demo.jwt is accepted with principal iss/sub, and the token is stripped before proxying', async () => {
    const a = await authn([remoteRule()]);
    const r = await verified(a.authenticate(bearer(samples.demoJwt)));
    assert.equal(r.principal, PRINCIPAL);
    assert.equal(r.claims.foo, 'bar');
    assert.deepEqual(r.edits.removeHeaders, ['authorization']);
    assert.ok(server.hits() >= 1, 'JWKS fetched at start');
  });

  test('groups-scope.jwt is accepted and carries its groups claim', async () => {
    const a = await authn([remoteRule()]);
    const r = await verified(a.authenticate(bearer(samples.groupsScopeJwt)));
    assert.equal(r.principal, PRINCIPAL);
    assert.deepEqual(r.claims.groups, ['group1', 'group2']);
    assert.deepEqual(r.claims.scope, ['scope1', 'scope2']);
  });

  test('a request without any token passes authentication (Istio semantics)', async () => {
    const a = await authn([remoteRule()]);
    assert.equal(sync(a.authenticate(requestFacts())).outcome, 'none');
    // Another auth scheme in the same header is not a token either.
    assert.equal(sync(a.authenticate(requestFacts({ headers: { authorization: 'Basic dXNlcjpwYXNz' } }))).outcome, 'none');
  });

  test('the Bearer scheme matches case-insensitively', async () => {
    const a = await authn([remoteRule()]);
    await verified(a.authenticate(requestFacts({ headers: { authorization: `bearer ${samples.demoJwt}` } })));
  });
});

describe('rejections', () => {
  let a: JwtAuthenticator;
  before(async () => { a = await authn([remoteRule({ audiences: ['api.example.com', 'other.example.com'] })]); });

  test('expired token → 401 expired; 30 s past exp is still inside the 60 s skew', async () => {
    await refused(a.authenticate(bearer(await mintToken(key, {}, { expiresIn: -3600, audience: 'api.example.com' }))), 'expired');
    await verified(a.authenticate(bearer(await mintToken(key, {}, { expiresIn: -30, audience: 'api.example.com' }))));
  });

  test('not yet valid (nbf, or iat in the future) → 401 not yet valid', async () => {
    await refused(a.authenticate(bearer(await mintToken(key, {}, { notBefore: 3600, audience: 'api.example.com' }))), 'not yet valid');
    await refused(a.authenticate(bearer(await mintToken(key, {}, { issuedAt: 3600, audience: 'api.example.com' }))), 'not yet valid');
    await verified(a.authenticate(bearer(await mintToken(key, {}, { notBefore: 30, audience: 'api.example.com' }))));
    await verified(a.authenticate(bearer(await mintToken(key, {}, { issuedAt: 30, audience: 'api.example.com' }))));
  });

  test('a token from an issuer no rule names is not authenticated (ISTIO-SECURITY-2021-001)', async () => {
    const t = await mintToken(key, {}, { issuer: 'someone-else@example.com', audience: 'api.example.com' });
    failed(a.authenticate(bearer(t)), 'issuer not configured');
  });

  test('audience: any of the token\'s aud must be listed', async () => {
    await refused(a.authenticate(bearer(await mintToken(key, {}, { audience: 'evil.example.com' }))), 'audience not allowed');
    await refused(a.authenticate(bearer(await mintToken(key))), 'audience not allowed');
    const r = await verified(a.authenticate(bearer(await mintToken(key, {}, { audience: ['x.example.com', 'other.example.com'] }))));
    assert.deepEqual(r.audiences, ['x.example.com', 'other.example.com']);
  });

  test('an empty audience list accepts any audience', async () => {
    const any = await authn([remoteRule()]);
    await verified(any.authenticate(bearer(await mintToken(key, {}, { audience: 'whatever' }))));
  });

  test('tampered payload → bad signature', async () => {
    const t = tamperPayload(samples.demoJwt, { sub: 'admin@secure.istio.io' });
    await refused(a.authenticate(bearer(t)), 'bad signature');
    const any = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    await refused(any.authenticate(bearer(t)), 'bad signature');
  });

  test('alg none is never accepted, with or without a signature part', async () => {
    const inline = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const payload = { iss: ISTIO_ISSUER, sub: 'admin', exp: Math.floor(Date.now() / 1000) + 3600 };
    failed(inline.authenticate(bearer(unsignedToken(payload))), 'bad signature');
    failed(inline.authenticate(bearer(unsignedToken(payload, { alg: 'None' }) + 'c2ln')), 'bad signature');
    assert.equal(inline.stats.verifications, 0, 'alg none is refused before any crypto');
    // An RS256 header with no signature at all.
    await refused(inline.authenticate(bearer(unsignedToken(payload, { alg: 'RS256', kid: key.kid }))), 'bad signature');
  });

  test('HS256 signed with the issuer\'s RSA public key is rejected (CVE-2019-12995 class)', () => {
    const inline = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const payload = { iss: ISTIO_ISSUER, sub: 'admin', exp: Math.floor(Date.now() / 1000) + 3600 };
    failed(inline.authenticate(bearer(hmacWithPublicKey(payload, samples.publicKeyPem))), 'bad signature');
    failed(inline.authenticate(bearer(hmacWithPublicKey(payload, samples.jwksJson))), 'bad signature');
    assert.equal(inline.stats.verifications, 0, 'HMAC tokens never reach a signature check');
  });

  test('a key of another type than the token\'s alg does not verify it', async () => {
    const ec = await newSigningKey('ec-1', 'ES256');
    const inline = new JwtAuthenticator([jwtRule({ jwks: jwksOf(ec) })]);
    await verified(inline.authenticate(bearer(await mintToken(ec))));
    // RS256 token naming the EC key's kid.
    await refused(inline.authenticate(bearer(await mintToken(key, {}, { kid: 'ec-1' }))), 'bad signature');
  });

  test('garbage tokens never throw and never pass', async () => {
    const inline = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const garbage = [
      '...', 'a.b.c', 'a.b', 'a.b.c.d', '.', 'not-a-token', '\u0000\u0001.\u0002.\u0003', '💥.💥.💥',
      `${Buffer.from('[]').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.x`,
      `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('null').toString('base64url')}.x`,
      `${Buffer.from('{"alg":"RS256","crit":["exp"]}').toString('base64url')}.${Buffer.from(`{"iss":"${ISTIO_ISSUER}"}`).toString('base64url')}.x`,
      `${Buffer.from('{"alg":"RS256","kid":5}').toString('base64url')}.${Buffer.from(`{"iss":"${ISTIO_ISSUER}"}`).toString('base64url')}.x`,
      `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('{"iss":42}').toString('base64url')}.x`,
      samples.demoJwt.replace(/\.[^.]*$/, '.!!!!'),
      'A'.repeat(1024 * 1024),
      `${'a'.repeat(40_000)}.${'b'.repeat(40_000)}.${'c'.repeat(40_000)}`,
    ];
    for (let i = 0; i < 200; i++) {
      const parts = [randomBytes(1 + (i % 40)), randomBytes(1 + (i % 90)), randomBytes(1 + (i % 13))];
      garbage.push(i % 2 ? parts.map((p) => p.toString('base64url')).join('.') : parts.map((p) => p.toString('latin1')).join('.'));
    }
    for (const g of garbage) {
      const r = await inline.authenticate(requestFacts({ headers: { authorization: `Bearer ${g}` } }));
      assert.notEqual(r.outcome, 'ok', JSON.stringify(g.slice(0, 40)));
      if (r.outcome === 'fail') assert.equal(r.status, 401);
    }
    failed(inline.authenticate(bearer('...')), 'malformed');
    failed(inline.authenticate(bearer('A'.repeat(1024 * 1024))), 'malformed');
  });

  test('claims of the wrong type are malformed even under a valid signature', async () => {
    const inline = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    await refused(inline.authenticate(bearer(await mintToken(key, { exp: 'tomorrow' as unknown as number }))), 'malformed');
    await refused(inline.authenticate(bearer(await mintToken(key, { aud: [1, 2] as unknown as string[] }))), 'malformed');
    await refused(inline.authenticate(bearer(await mintToken(key, { sub: 7 as unknown as string }))), 'malformed');
    // With audiences configured, a non-string aud is still malformed, not merely not allowed.
    const strict = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson, audiences: ['api'] })]);
    await refused(strict.authenticate(bearer(await mintToken(key, { aud: [1, 2] as unknown as string[] }))), 'malformed');
  });
});

/** RS256 over any header, by hand: jose's SignJWT will not write the headers tested here. */
function signRs256(header: Record<string, unknown>, payload: Record<string, unknown>, privateKey: KeyObject | string): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

describe('verification by jose', () => {
  const claims = () => ({ iss: ISTIO_ISSUER, sub: 'u1', exp: Math.floor(Date.now() / 1000) + 3600 });

  test('crit follows jose: its own b64 extension is understood, others and unencoded payloads are refused', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const base = { alg: 'RS256', typ: 'JWT', kid: key.kid };
    // Correctly signed each time: what refuses them is the header, as jose reads it.
    const r = await verified(a.authenticate(bearer(signRs256({ ...base, crit: ['b64'], b64: true }, claims(), samples.keyPem))));
    assert.equal(r.principal, `${ISTIO_ISSUER}/u1`);
    await refused(a.authenticate(bearer(signRs256({ ...base, crit: ['exp'], exp: 1 }, claims(), samples.keyPem))), 'malformed');
    await refused(a.authenticate(bearer(signRs256({ ...base, crit: ['b64'], b64: false }, claims(), samples.keyPem))), 'malformed');
    await refused(a.authenticate(bearer(signRs256({ ...base, crit: [] }, claims(), samples.keyPem))), 'malformed');
  });

  test('a token without kid is tried against every key that fits its alg', async () => {
    const second = await newSigningKey('second-1');
    const stranger = await newSigningKey('stranger-1');
    const a = new JwtAuthenticator([jwtRule({ jwks: jwksOf(key, second) })]);
    const r = await verified(a.authenticate(bearer(await mintToken(second, {}, { kid: null, subject: 'via-second' }))));
    assert.equal(r.subject, 'via-second');
    await verified(a.authenticate(bearer(await mintToken(key, {}, { kid: null }))));
    await refused(a.authenticate(bearer(await mintToken(stranger, {}, { kid: null }))), 'bad signature');
    // A claim failure under a matching key ends the search with that reason.
    await refused(a.authenticate(bearer(await mintToken(second, {}, { kid: null, expiresIn: -3600 }))), 'expired');
  });

  test('RSA keys shorter than 2048 bits never verify anything', async () => {
    const short = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const shortJwk = { ...short.publicKey.export({ format: 'jwk' }), kid: 'short', alg: 'RS256', use: 'sig' };
    const a = new JwtAuthenticator([jwtRule({ jwks: JSON.stringify({ keys: [shortJwk, key.publicJwk] }) })]);
    // The key was dropped when the JWKS was read, so its kid is unknown …
    failed(a.authenticate(bearer(signRs256({ alg: 'RS256', kid: 'short' }, claims(), short.privateKey))), 'unknown kid');
    // … and without a kid, the only remaining key does not verify it.
    await refused(a.authenticate(bearer(signRs256({ alg: 'RS256' }, claims(), short.privateKey))), 'bad signature');
    const only = new JwtAuthenticator([jwtRule({ jwks: JSON.stringify({ keys: [shortJwk] }) })]);
    failed(only.authenticate(bearer(signRs256({ alg: 'RS256', kid: 'short' }, claims(), short.privateKey))), 'no keys available');
  });

  test('refusals that need no crypto stay synchronous', () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const payload = claims();
    failed(a.authenticate(bearer(unsignedToken(payload))), 'bad signature');
    failed(a.authenticate(bearer(hmacWithPublicKey(payload, samples.publicKeyPem))), 'bad signature');
    failed(a.authenticate(bearer(signRs256({ alg: 'RS256', kid: 'nobody' }, payload, samples.keyPem))), 'unknown kid');
    failed(a.authenticate(bearer(signRs256({ alg: 'RS256' }, { ...payload, iss: 'elsewhere' }, samples.keyPem))), 'issuer not configured');
    assert.equal(a.stats.verifications, 0);
  });

  test('many first-time tokens at once all settle, each verified once', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const tokens = await Promise.all(Array.from({ length: 40 }, (_, i) => mintToken(key, { n: i }, { subject: `u${i}` })));
    const results = await Promise.all(tokens.map((t) => verified(a.authenticate(bearer(t)))));
    assert.deepEqual(results.map((r) => r.subject), tokens.map((_, i) => `u${i}`));
    assert.equal(a.stats.verifications, 40);
    for (const t of tokens) ok(a.authenticate(bearer(t)));
  });
});

describe('401 response', () => {
  test('WWW-Authenticate challenge and a body that says why', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const r = await refused(a.authenticate(bearer(await mintToken(key, {}, { expiresIn: -3600 }))), 'expired');
    const res = unauthorizedResponse(r, 'api "prod"');
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="api prod", error="invalid_token", error_description="Jwt is expired"');
    assert.match(res.body, /expired/);
  });

  test('descriptions never echo token content (no header injection through alg or kid)', () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const evil = unsignedToken({ iss: ISTIO_ISSUER }, { alg: 'x"\r\nset-cookie: a=b', kid: '\r\nx: y' });
    const res = unauthorizedResponse(sync(a.authenticate(bearer(evil))) as AuthnFail);
    assert.doesNotMatch(res.headers['www-authenticate'], /[\r\n]|set-cookie/);
  });
});

describe('token locations', () => {
  test('query parameter (default access_token) is read and removed', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const r = await verified(a.authenticate(requestFacts({ query: `page=2&access_token=${samples.demoJwt}` })));
    assert.deepEqual(r.edits.removeParams, ['access_token']);
    assert.deepEqual(r.edits.removeHeaders, []);
    assert.equal(stripQueryParams(`page=2&access_token=${samples.demoJwt}&x`, r.edits.removeParams), 'page=2&x');
  });

  test('cookie is read and removed; other cookies stay', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson, fromHeaders: [], fromParams: [], fromCookies: ['session'] })]);
    const cookie = `theme=dark; session=${samples.demoJwt}; lang=en`;
    const r = await verified(a.authenticate(requestFacts({ headers: { cookie } })));
    assert.deepEqual(r.edits.removeCookies, ['session']);
    assert.equal(stripCookies(cookie, r.edits.removeCookies), 'theme=dark; lang=en');
    // The default Authorization header is not read once locations are named.
    assert.equal(sync(a.authenticate(bearer(samples.demoJwt))).outcome, 'none');
  });

  test('custom header with its own prefix', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson, fromHeaders: [{ name: 'X-Jwt-Assertion', prefix: 'Token ' }], fromParams: [] })]);
    const r = await verified(a.authenticate(requestFacts({ headers: { 'x-jwt-assertion': `Token ${samples.demoJwt}` } })));
    assert.deepEqual(r.edits.removeHeaders, ['x-jwt-assertion']);
    // Without the prefix the header holds no token for this rule.
    assert.equal(sync(a.authenticate(requestFacts({ headers: { 'x-jwt-assertion': samples.demoJwt } }))).outcome, 'none');
  });

  test('forwardOriginalToken keeps the token; the default removes it', async () => {
    const keep = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson, forwardOriginalToken: true })]);
    assert.deepEqual((await verified(keep.authenticate(bearer(samples.demoJwt)))).edits.removeHeaders, []);
    const strip = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    assert.deepEqual((await verified(strip.authenticate(bearer(samples.demoJwt)))).edits.removeHeaders, ['authorization']);
  });

  test('two different tokens → 401; the same token in two places is one token', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const other = await mintToken(key);
    failed(a.authenticate(requestFacts({ headers: { authorization: `Bearer ${samples.demoJwt}` }, query: `access_token=${other}` })), 'multiple tokens');
    failed(a.authenticate(requestFacts({ headers: { authorization: [`Bearer ${samples.demoJwt}`, `Bearer ${other}`] } })), 'multiple tokens');
    const r = await verified(a.authenticate(requestFacts({ headers: { authorization: `Bearer ${samples.demoJwt}` }, query: `access_token=${samples.demoJwt}` })));
    assert.deepEqual([r.edits.removeHeaders, r.edits.removeParams], [['authorization'], ['access_token']]);
  });

  test('outputClaimToHeaders and outputPayloadToHeader; forged copies from the client are stripped', async () => {
    const a = new JwtAuthenticator([jwtRule({
      jwks: samples.jwksJson,
      outputPayloadToHeader: 'x-jwt-payload',
      outputClaimToHeaders: [{ header: 'x-jwt-groups', claim: 'groups' }, { header: 'x-jwt-sub', claim: 'sub' }, { header: 'x-jwt-foo', claim: 'foo' }],
    })]);
    const r = await verified(a.authenticate(bearer(samples.groupsScopeJwt)));
    const set = Object.fromEntries(r.edits.setHeaders);
    assert.equal(set['x-jwt-groups'], 'group1,group2');
    assert.equal(set['x-jwt-sub'], ISTIO_ISSUER);
    assert.equal('x-jwt-foo' in set, false, 'absent claim: no header');
    assert.deepEqual(JSON.parse(Buffer.from(set['x-jwt-payload'], 'base64url').toString()), decodePayload(samples.groupsScopeJwt));
    // x-jwt-foo is removed even though this token has no foo: the client may have sent one.
    assert.ok(r.edits.removeHeaders.includes('x-jwt-foo'));
    const none = sync(a.authenticate(requestFacts({ headers: { 'x-jwt-sub': 'admin' } })));
    assert.equal(none.outcome, 'none');
    assert.deepEqual([...none.edits.removeHeaders].sort(), ['x-jwt-foo', 'x-jwt-groups', 'x-jwt-payload', 'x-jwt-sub']);
  });

  test('a claim with CR/LF is not copied into a header', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson, outputClaimToHeaders: [{ header: 'x-name', claim: 'name' }] })]);
    const r = await verified(a.authenticate(bearer(await mintToken(key, { name: 'a\r\nx-admin: true' }))));
    assert.deepEqual(r.edits.setHeaders, []);
  });
});

describe('several issuers', () => {
  test('the token\'s iss picks the rule, and only that rule\'s keys verify it', async () => {
    const other = await newSigningKey('other-1', 'ES256');
    const a = new JwtAuthenticator([
      jwtRule({ jwks: samples.jwksJson }),
      jwtRule({ source: 'requestauthentication/default/partner/jwtRules/0', issuer: 'https://partner.example.com', jwks: jwksOf(other) }),
    ]);
    const r = await verified(a.authenticate(bearer(await mintToken(other, {}, { issuer: 'https://partner.example.com', subject: 'u1' }))));
    assert.equal(r.principal, 'https://partner.example.com/u1');
    assert.equal(r.rule, 'requestauthentication/default/partner/jwtRules/0');
    await verified(a.authenticate(bearer(samples.demoJwt)));
    // Partner issuer, signed with the Istio key: a kid the partner JWKS lacks is refused
    // before any crypto; without a kid, jose finds no partner key for RS256.
    failed(a.authenticate(bearer(await mintToken(key, {}, { issuer: 'https://partner.example.com' }))), 'unknown kid');
    await refused(a.authenticate(bearer(await mintToken(key, {}, { issuer: 'https://partner.example.com', kid: null }))), 'unknown kid');
  });

  test('an issuer is only accepted from the locations its own rule reads', async () => {
    const other = await newSigningKey('other-2', 'EdDSA');
    const a = new JwtAuthenticator([
      jwtRule({ jwks: samples.jwksJson }),
      jwtRule({ issuer: 'cookie-issuer', jwks: jwksOf(other), fromHeaders: [], fromParams: [], fromCookies: ['sid'] }),
    ]);
    const t = await mintToken(other, {}, { issuer: 'cookie-issuer' });
    await verified(a.authenticate(requestFacts({ headers: { cookie: `sid=${t}` } })));
    // Also once the token is cached from the cookie.
    failed(a.authenticate(bearer(t)), 'issuer not configured');
    const fresh = new JwtAuthenticator([
      jwtRule({ jwks: samples.jwksJson }),
      jwtRule({ issuer: 'cookie-issuer', jwks: jwksOf(other), fromHeaders: [], fromParams: [], fromCookies: ['sid'] }),
    ]);
    failed(fresh.authenticate(bearer(t)), 'issuer not configured');
  });
});

describe('cache', () => {
  test('a repeated valid token is verified once by jose (a Promise), then costs a synchronous lookup', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    const pending = a.authenticate(bearer(samples.demoJwt));
    assert.ok(pending instanceof Promise, 'a token not yet cached is verified asynchronously');
    const first = await verified(pending);
    for (let i = 0; i < 50; i++) assert.equal(sync(a.authenticate(bearer(samples.demoJwt))), first);
    assert.equal(a.stats.verifications, 1);
    assert.equal(a.stats.cacheHits, 50);
  });

  test('a tampered copy of a cached token (same signature, so same cache slot) is not a hit', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    await verified(a.authenticate(bearer(samples.demoJwt)));
    await refused(a.authenticate(bearer(tamperPayload(samples.demoJwt, { sub: 'admin' }))), 'bad signature');
    assert.equal(a.stats.cacheHits, 0);
    ok(a.authenticate(bearer(samples.demoJwt)));
  });

  test('a cached token is refused once its exp has passed', async () => {
    let now = Date.now();
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })], { clockSkewSec: 0, now: () => now });
    const t = await mintToken(key, {}, { expiresIn: 10 });
    await verified(a.authenticate(bearer(t)));
    ok(a.authenticate(bearer(t)));
    assert.equal(a.stats.verifications, 1);
    now += 11_000;
    // Out of the cache, and jose judges exp by the same clock.
    await refused(a.authenticate(bearer(t)), 'expired');
  });

  test('the same token found in another place gets that place\'s edits', async () => {
    const a = new JwtAuthenticator([jwtRule({ jwks: samples.jwksJson })]);
    await verified(a.authenticate(bearer(samples.demoJwt)));
    const r = ok(a.authenticate(requestFacts({ query: `access_token=${samples.demoJwt}` })));
    assert.deepEqual([r.edits.removeHeaders, r.edits.removeParams], [[], ['access_token']]);
    assert.equal(a.stats.verifications, 1);
  });
});

describe('JWKS lifecycle', () => {
  test('unknown kid after a key rotation: one refetch picks up the new key; the next unknown kid is rate-limited', async () => {
    const srv = await startJwksServer(samples.jwksJson);
    try {
      const a = await authn([remoteRule({}, srv)]);
      const hitsAtStart = srv.hits();
      const rotated = await newSigningKey('rotated-1');
      srv.setJwks(jwksOf(key, rotated));
      const pending = a.authenticate(bearer(await mintToken(rotated)));
      assert.ok(pending instanceof Promise, 'unknown kid waits for one refetch');
      const r = await pending;
      assert.equal(r.outcome, 'ok');
      assert.equal(srv.hits(), hitsAtStart + 1);
      // Keys changed: the cache was cleared, old tokens still verify with the kept key.
      await verified(a.authenticate(bearer(samples.demoJwt)));
      // A second unknown kid inside 30 s: no fetch, an immediate 401.
      const made = await newSigningKey('made-up');
      failed(a.authenticate(bearer(await mintToken(made))), 'unknown kid');
      assert.equal(srv.hits(), hitsAtStart + 1);
      assert.equal(a.stats.refetches, 1);
    } finally {
      await srv.close();
    }
  });

  test('JWKS down at start: 401 no keys available (not an exception), reason on status(); recovers when it returns', async () => {
    const srv = await startJwksServer(samples.jwksJson);
    try {
      srv.setMode('error');
      const a = await authn([remoteRule({}, srv)], { minRefetchMs: 20 });
      failed(a.authenticate(bearer(samples.demoJwt)), 'no keys available');
      // That 401 also asked for one background refetch; it fails too.
      await waitFor(() => a.status()[0].jwks.fetches === 2 && !a.status()[0].jwks.fetching, 'the background refetch');
      const [st] = a.status();
      assert.equal(st.jwks.state, 'unavailable');
      assert.match(st.jwks.lastError ?? '', /HTTP 503/);
      // No token: still passes, keys or not.
      assert.equal(sync(a.authenticate(requestFacts())).outcome, 'none');
      srv.setMode('ok');
      await new Promise((r) => setTimeout(r, 30));
      failed(a.authenticate(bearer(samples.demoJwt)), 'no keys available'); // kicks a background refetch
      await waitFor(() => a.status()[0].jwks.state === 'ready', 'keys after recovery');
      await verified(a.authenticate(bearer(samples.demoJwt)));
    } finally {
      await srv.close();
    }
  });

  test('JWKS down after a good fetch: the last good keys keep working, status says stale', async () => {
    const srv = await startJwksServer(samples.jwksJson);
    try {
      const a = await authn([remoteRule({ refreshMs: 25 }, srv)]);
      await verified(a.authenticate(bearer(samples.demoJwt)));
      srv.setMode('garbage');
      await waitFor(() => /not valid JSON/.test(a.status()[0].jwks.lastError ?? ''), 'a failed refresh');
      srv.setMode('error');
      await waitFor(() => /HTTP 503/.test(a.status()[0].jwks.lastError ?? ''), 'a refresh against a down server');
      assert.equal(a.status()[0].jwks.state, 'stale');
      await verified(a.authenticate(bearer(await mintToken(key))));
    } finally {
      await srv.close();
    }
  });

  test('SSRF: without the opt-in, loopback and link-local jwksUri are refused without a request', async () => {
    const hits = server.hits();
    const a = await authn([
      jwtRule({ jwksUri: server.url, jwksCaPem: server.caPem, timeoutMs: 500 }),
      jwtRule({ issuer: 'metadata', jwksUri: 'https://169.254.169.254/latest/meta-data/jwks', timeoutMs: 500 }),
      jwtRule({ issuer: 'named', jwksUri: `https://localhost:${server.port}/jwks.json`, jwksCaPem: server.caPem, timeoutMs: 500 }),
    ]);
    const [loop, meta, named] = a.status();
    assert.match(loop.jwks.lastError ?? '', /loopback/);
    assert.match(meta.jwks.lastError ?? '', /link-local/);
    assert.match(named.jwks.lastError ?? '', /allowPrivateJwksUri/);
    assert.equal(server.hits(), hits, 'no request reached the server');
    failed(a.authenticate(bearer(samples.demoJwt)), 'no keys available');
  });

  test('a pool shares one fetch across config versions', async () => {
    const srv = await startJwksServer(samples.jwksJson);
    const pool = new JwksPool();
    try {
      const v1 = await authn([remoteRule({}, srv)], { pool });
      const v2 = await authn([remoteRule({}, srv)], { pool });
      assert.equal(srv.hits(), 1);
      v1.stop();
      await verified(v2.authenticate(bearer(samples.demoJwt)));
      v2.stop();
      assert.equal(pool.size, 0);
    } finally {
      await srv.close();
    }
  });
});

// Token minting and a JWKS server for tests. Tokens are signed with Istio's sample key
// (../shared/istio-samples/jwt/key.pem, whose public half is the sample jwks.json), or with
// keys made here for rotation tests. Also builds the hostile tokens BAD-INPUTS.md lists
// (alg none, HMAC keyed with the public key) by hand, since jose refuses to make them.
import { readFileSync } from 'node:fs';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { SignJWT, importPKCS8, exportJWK, type JWTPayload, type CryptoKey } from 'jose';
import { makeCA, issueCert, type TestCA } from './certs.ts';
import type { JwtRule, RequestFacts } from '../../api/policy.ts';

export const ISTIO_JWT_DIR = fileURLToPath(new URL('../../../shared/istio-samples/jwt/', import.meta.url));
export const ISTIO_ISSUER = 'testing@secure.istio.io';
/** The `kid` of the sample key in jwks.json. */
export const ISTIO_KID = 'DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ';

export interface IstioJwtSamples {
  jwksJson: string;
  demoJwt: string;
  groupsScopeJwt: string;
  /** The sample private key as PEM (PKCS#1, as shipped). */
  keyPem: string;
  /** Public half of key.pem as SPKI PEM (what an attacker would HMAC with). */
  publicKeyPem: string;
}

export function istioSamples(): IstioJwtSamples {
  const read = (f: string) => readFileSync(ISTIO_JWT_DIR + f, 'utf8').trim();
  const keyPem = read('key.pem');
  const publicKeyPem = createPublicKey(keyPem).export({ type: 'spki', format: 'pem' }).toString();
  return {
    jwksJson: read('jwks.json'),
    demoJwt: read('demo.jwt'),
    groupsScopeJwt: read('groups-scope.jwt'),
    keyPem,
    publicKeyPem,
  };
}

export interface SigningKey {
  kid: string;
  alg: string;
  key: CryptoKey | KeyObject;
  /** The public JWK with kid and alg, ready to put in a JWKS. */
  publicJwk: Record<string, unknown>;
}

/** The Istio sample key (key.pem), with its published kid. */
export async function istioSigningKey(): Promise<SigningKey> {
  const s = istioSamples();
  // key.pem is PKCS#1; jose imports PKCS#8 only.
  const pkcs8 = createPrivateKey(s.keyPem).export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = await importPKCS8(pkcs8, 'RS256');
  const publicJwk = { ...(await exportJWK(createPublicKey(s.keyPem))), kid: ISTIO_KID, alg: 'RS256', use: 'sig' };
  return { kid: ISTIO_KID, alg: 'RS256', key, publicJwk };
}

/** A fresh key pair: 'RS256' (RSA 2048), 'ES256' (P-256) or 'EdDSA' (Ed25519). */
export async function newSigningKey(kid: string, alg: 'RS256' | 'PS256' | 'ES256' | 'EdDSA' = 'RS256'): Promise<SigningKey> {
  const pair = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'EdDSA'
      ? generateKeyPairSync('ed25519')
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, key: pair.privateKey, publicJwk };
}

export function jwksOf(...keys: SigningKey[]): string {
  return JSON.stringify({ keys: keys.map((k) => k.publicJwk) });
}

export interface MintOptions {
  issuer?: string;
  subject?: string;
  audience?: string | string[];
  /** Seconds from now (negative: already expired). Default 3600. null: no exp claim. */
  expiresIn?: number | null;
  /** Seconds from now for nbf. */
  notBefore?: number;
  /** Seconds from now for iat (default 0). */
  issuedAt?: number;
  /** Override the kid in the header (e.g. one the JWKS does not have); null: no kid. */
  kid?: string | null;
}

/** A signed JWT; claims are merged over iss/sub/aud/exp/nbf/iat built from opts. */
export async function mintToken(key: SigningKey, claims: JWTPayload = {}, opts: MintOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = {
    iss: opts.issuer ?? ISTIO_ISSUER,
    sub: opts.subject ?? ISTIO_ISSUER,
    iat: now + (opts.issuedAt ?? 0),
    ...(opts.expiresIn === null ? {} : { exp: now + (opts.expiresIn ?? 3600) }),
    ...(opts.notBefore !== undefined ? { nbf: now + opts.notBefore } : {}),
    ...(opts.audience !== undefined ? { aud: opts.audience } : {}),
    ...claims,
  };
  const header: { alg: string; typ: string; kid?: string } = { alg: key.alg, typ: 'JWT' };
  const kid = opts.kid === undefined ? key.kid : opts.kid;
  if (kid !== null) header.kid = kid;
  return new SignJWT(payload).setProtectedHeader(header).sign(key.key);
}

const b64u = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** `alg: none`, empty signature (CVE-2019-12995 class). */
export function unsignedToken(payload: JWTPayload, header: Record<string, unknown> = { alg: 'none', typ: 'JWT' }): string {
  return `${b64u(header)}.${b64u(payload)}.`;
}

/** HS256 keyed with the issuer's RSA public key PEM: the classic algorithm-confusion forgery. */
export function hmacWithPublicKey(payload: JWTPayload, publicKeyPem: string, kid: string = ISTIO_KID): string {
  const signingInput = `${b64u({ alg: 'HS256', typ: 'JWT', kid })}.${b64u(payload)}`;
  const sig = createHmac('sha256', publicKeyPem).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

/** Same header and signature, payload swapped: a tampered token. */
export function tamperPayload(token: string, change: JWTPayload): string {
  const [h, p, s] = token.split('.');
  const payload = { ...JSON.parse(Buffer.from(p, 'base64url').toString('utf8')), ...change };
  return `${h}.${b64u(payload)}.${s}`;
}

export function decodePayload(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------- JWKS server

export type JwksServerMode = 'ok' | 'error' | 'garbage' | 'hang';

export interface JwksServer {
  /** https://127.0.0.1:<port>/jwks.json */
  url: string;
  port: number;
  /** The CA that signed the server certificate, PEM, for JwtRule.jwksCaPem. */
  caPem: string;
  /** Requests served (any mode). */
  hits(): number;
  setJwks(text: string): void;
  /** ok: serve the JWKS; error: 503; garbage: 200 with non-JSON; hang: accept and never answer. */
  setMode(mode: JwksServerMode): void;
  close(): Promise<void>;
}

let sharedCa: TestCA | null = null;

/** An HTTPS JWKS server on 127.0.0.1, port 0, certificate for 127.0.0.1 and localhost. */
export async function startJwksServer(jwks: string): Promise<JwksServer> {
  sharedCa ??= makeCA('jwks test CA');
  const ca = sharedCa;
  const leaf = issueCert(ca, 'jwks.test', { dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  let body = jwks;
  let mode: JwksServerMode = 'ok';
  let hits = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
    hits++;
    if (mode === 'hang') return;
    if (mode === 'error') { res.writeHead(503).end('unavailable'); return; }
    if (mode === 'garbage') { res.writeHead(200, { 'content-type': 'application/json' }).end('<html>not json'); return; }
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  server.on('secureConnection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}/jwks.json`,
    port,
    caPem: ca.certPem,
    hits: () => hits,
    setJwks: (t) => { body = t; },
    setMode: (m) => { mode = m; },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

// ---------------------------------------------------------------- rules and facts

/** A JwtRule with the contract's defaults (Authorization: Bearer, ?access_token). */
export function jwtRule(over: Partial<JwtRule> = {}): JwtRule {
  return {
    source: 'requestauthentication/default/jwt-example/jwtRules/0',
    issuer: ISTIO_ISSUER,
    audiences: [],
    jwksUri: null,
    jwks: null,
    fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }],
    fromParams: ['access_token'],
    fromCookies: [],
    forwardOriginalToken: false,
    outputPayloadToHeader: null,
    outputClaimToHeaders: [],
    timeoutMs: 2000,
    refreshMs: 20 * 60_000,
    allowPrivateJwksUri: false,
    jwksCaPem: null,
    ...over,
  };
}

/** Request facts for a GET; headers lower-cased, each header a list of values. */
export function requestFacts(over: Partial<Omit<RequestFacts, 'headers'>> & { headers?: Record<string, string | string[]> } = {}): RequestFacts {
  const headers: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(over.headers ?? {})) headers[k.toLowerCase()] = Array.isArray(v) ? v : [v];
  return {
    method: 'GET',
    path: '/',
    query: '',
    host: 'example.com',
    port: 80,
    sourceIp: '127.0.0.1',
    remoteIp: '127.0.0.1',
    sni: '',
    peerPrincipal: '',
    peerNamespace: '',
    ...over,
    headers,
  };
}

export function bearer(token: string): RequestFacts {
  return requestFacts({ headers: { authorization: `Bearer ${token}` } });
}

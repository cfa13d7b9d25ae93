// CORS as Envoy's filter does it for Istio's corsPolicy: preflights whose origin is
// allowed are answered by the proxy (the upstream never sees them); an actual request
// from an allowed origin gets the allow-origin/credentials/expose headers on its response.
// Header values are joined once at apply time.
import type { ServerResponse } from 'node:http';
import type { CorsPolicy } from '../api/proxyconfig.ts';
import { compileStringMatcher, matchString, type CompiledString } from './router.ts';
import type { DownstreamRes, HeaderMap } from './upstream/types.ts';

export interface CompiledCors {
  origins: CompiledString[];
  allowMethods: string | null;
  allowHeaders: string | null;
  exposeHeaders: string | null;
  maxAge: string | null;
  credentials: boolean;
  /** Preflights from other origins go on to the route (Istio's default) or get a bare 200. */
  forwardUnmatched: boolean;
}

export function compileCors(p: CorsPolicy, where: string): CompiledCors {
  return {
    origins: p.allowOrigins.map((m, i) => compileStringMatcher(m, `${where} corsPolicy.allowOrigins[${i}]`, false)),
    allowMethods: p.allowMethods.length ? p.allowMethods.join(',') : null,
    allowHeaders: p.allowHeaders.length ? p.allowHeaders.join(',') : null,
    exposeHeaders: p.exposeHeaders.length ? p.exposeHeaders.join(',') : null,
    maxAge: p.maxAgeSeconds === null ? null : String(p.maxAgeSeconds),
    credentials: p.allowCredentials,
    forwardUnmatched: p.unmatchedPreflights !== 'IGNORE',
  };
}

export function corsOriginAllowed(c: CompiledCors, origin: string): boolean {
  const list = c.origins;
  for (let i = 0; i < list.length; i++) if (matchString(list[i], origin)) return true;
  return false;
}

export function isPreflight(method: string | undefined, acrm: string | string[] | undefined): boolean {
  return method === 'OPTIONS' && acrm !== undefined;
}

export function answerPreflight(c: CompiledCors, origin: string, res: DownstreamRes): void {
  const h: HeaderMap = { 'access-control-allow-origin': origin, 'content-length': '0' };
  if (c.credentials) h['access-control-allow-credentials'] = 'true';
  if (c.allowMethods !== null) h['access-control-allow-methods'] = c.allowMethods;
  if (c.allowHeaders !== null) h['access-control-allow-headers'] = c.allowHeaders;
  if (c.maxAge !== null) h['access-control-max-age'] = c.maxAge;
  (res as ServerResponse).writeHead(200, h);
  res.end();
}

/** A preflight from an origin the policy does not allow, when the policy says IGNORE. */
export function answerUnmatchedPreflight(res: DownstreamRes): void {
  (res as ServerResponse).writeHead(200, { 'content-length': '0' });
  res.end();
}

export function addCorsHeaders(c: CompiledCors, origin: string, h: HeaderMap): void {
  h['access-control-allow-origin'] = origin;
  if (c.credentials) h['access-control-allow-credentials'] = 'true';
  if (c.exposeHeaders !== null) h['access-control-expose-headers'] = c.exposeHeaders;
}

// What each scenario configures — the same routing written twice, once as Istio YAML for
// meshgate and once as nginx server blocks — and the request the load generators send.
// A scenario is added here when the feature it measures lands; the pending ones say what
// they wait for, so `--scenario jwt` explains itself instead of failing obscurely.
import { readFileSync } from 'node:fs';
import { tlsSecretYaml, type Pem } from './certs.ts';

export type Protocol = 'http1' | 'https' | 'h2';

/** Ports the upstream process bound: one HTTP listener per name, one HTTPS, one h2 (TLS). */
export interface UpstreamPorts { http: Record<string, number>; https?: number; h2?: number }

export interface Ctx {
  up: UpstreamPorts;
  /** The port this proxy listens on. */
  listen: number;
  pem: Pem;
  certFile: string;
  keyFile: string;
}

export interface RequestSpec { path: string; host: string; headers: Record<string, string> }

export interface Scenario {
  name: string;
  summary: string;
  protocol: Protocol;
  request: RequestSpec;
  /** Files for `meshgate up --config`. */
  meshgate(ctx: Ctx): Record<string, string>;
  /** The body of nginx's http{} block for this scenario (upstreams and servers). */
  nginx(ctx: Ctx): string;
  /** The upstream port the direct target hits, speaking the scenario's protocol. */
  direct(up: UpstreamPorts): number;
  /** Upstream names a probe of 200 requests must see (and no others): proves both proxies route alike. */
  expect: string[];
}

export interface PendingScenario { name: string; pending: string }

export const HOST = 'bench.local';
const NS = 'istio-system';

function gateway(ctx: Ctx, protocol: Protocol): string {
  const server = protocol === 'http1'
    ? `  - port: {number: ${ctx.listen}, name: http, protocol: HTTP}
    hosts: ["*"]`
    : `  - port: {number: ${ctx.listen}, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: bench-cert}`;
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: ${NS}}
spec:
  selector: {istio: ingressgateway}
  servers:
${server}
`;
}

function backend(ctx: Ctx, names: string[]): string {
  const endpoints = names.map((n) => `  - address: 127.0.0.1
    ports: {http: ${ctx.up.http[n]}}
    labels: {version: ${n}}`).join('\n');
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.bench.internal]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
${endpoints}
`;
}

function virtualService(name: string, hosts: string, http: string): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${hosts}]
  gateways: [${NS}/bench]
  http:
${http}`;
}

const ROUTE_BACKEND = `  - route:
    - destination: {host: backend.bench.internal}
`;

// Upstream blocks keep connections alive and pooled as meshgate's pools do; without
// `keepalive` nginx would open a connection per request and lose for the wrong reason.
function nginxUpstream(name: string, port: number): string {
  return `upstream ${name} {
    server 127.0.0.1:${port};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
}
`;
}

function nginxListen(ctx: Ctx, protocol: Protocol, extra = ''): string {
  if (protocol === 'http1') return `listen 127.0.0.1:${ctx.listen}${extra};`;
  return `listen 127.0.0.1:${ctx.listen} ssl${protocol === 'h2' ? ' http2' : ''}${extra};
    ssl_certificate ${ctx.certFile};
    ssl_certificate_key ${ctx.keyFile};`;
}

function singleRoute(name: string, summary: string, protocol: Protocol): Scenario {
  return {
    name,
    summary,
    protocol,
    request: { path: '/bench', host: HOST, headers: {} },
    meshgate(ctx) {
      const files: Record<string, string> = {
        'gateway.yaml': gateway(ctx, protocol),
        'backend.yaml': backend(ctx, ['v1']),
        'routes.yaml': virtualService('bench', '"*"', ROUTE_BACKEND),
      };
      if (protocol !== 'http1') files['secret.yaml'] = tlsSecretYaml('bench-cert', NS, ctx.pem);
      return files;
    },
    nginx(ctx) {
      return `${nginxUpstream('backend', ctx.up.http.v1)}
server {
    ${nginxListen(ctx, protocol, ' default_server')}
    location / { proxy_pass http://backend; }
}
`;
    },
    direct(up) {
      if (protocol === 'https') return up.https!;
      if (protocol === 'h2') return up.h2!;
      return up.http.v1;
    },
    expect: ['v1'],
  };
}

const ROUTES_1K = 1000;

const routes1k: Scenario = {
  name: 'routes-1k',
  summary: `${ROUTES_1K} VirtualServices with distinct hosts; the request hits the last one (nginx: ${ROUTES_1K} server blocks)`,
  protocol: 'http1',
  request: { path: '/bench', host: `h${ROUTES_1K - 1}.${HOST}`, headers: {} },
  meshgate(ctx) {
    const vs: string[] = [];
    for (let i = 0; i < ROUTES_1K; i++) vs.push(virtualService(`h${i}`, `h${i}.${HOST}`, ROUTE_BACKEND));
    return { 'gateway.yaml': gateway(ctx, 'http1'), 'backend.yaml': backend(ctx, ['v1']), 'routes.yaml': vs.join('---\n') };
  },
  nginx(ctx) {
    const servers: string[] = [];
    for (let i = 0; i < ROUTES_1K; i++) {
      servers.push(`server {
    ${nginxListen(ctx, 'http1')}
    server_name h${i}.${HOST};
    location / { proxy_pass http://backend; }
}`);
    }
    // Hosts no server names get 404, as meshgate answers a request that matches nothing.
    return `${nginxUpstream('backend', ctx.up.http.v1)}
server {
    ${nginxListen(ctx, 'http1', ' default_server')}
    return 404;
}
${servers.join('\n')}
`;
  },
  direct: (up) => up.http.v1,
  expect: ['v1'],
};

// Header match that does not match (so it is evaluated on every request), then an 80/20
// weighted split: nginx's map + split_clients do the same two steps.
const headers: Scenario = {
  name: 'headers',
  summary: 'header match (evaluated, not matched) then an 80/20 weighted split over two subsets',
  protocol: 'http1',
  request: { path: '/bench', host: HOST, headers: { 'end-user': 'alice' } },
  meshgate(ctx) {
    return {
      'gateway.yaml': gateway(ctx, 'http1'),
      'backend.yaml': `${backend(ctx, ['v1', 'v2', 'v3'])}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend.bench.internal
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
`,
      'routes.yaml': virtualService('bench', '"*"', `  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: backend.bench.internal, subset: v2}
  - route:
    - destination: {host: backend.bench.internal, subset: v1}
      weight: 80
    - destination: {host: backend.bench.internal, subset: v3}
      weight: 20
`),
    };
  },
  nginx(ctx) {
    return `${nginxUpstream('v1', ctx.up.http.v1)}${nginxUpstream('v2', ctx.up.http.v2)}${nginxUpstream('v3', ctx.up.http.v3)}
split_clients "\${request_id}" $weighted {
    80% v1;
    *   v3;
}
map $http_end_user $pool {
    jason   v2;
    default $weighted;
}
server {
    ${nginxListen(ctx, 'http1', ' default_server')}
    location / { proxy_pass http://$pool; }
}
`;
  },
  direct: (up) => up.http.v1,
  expect: ['v1', 'v3'],
};

// A valid, repeated JWT (Istio's sample token, inline key set) through an ALLOW policy and a
// local rate limit set far above the offered load: what the policy stages cost on the
// allowed path. nginx (no JWT verification in its open-source build) proxies the same route
// without policies, as a reference; the goal compares meshgate with its own `plain`.
const SAMPLE_JWKS = '{"keys":[{"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}';
export const SAMPLE_TOKEN_FILE = new URL('../examples/tokens/demo.jwt', import.meta.url);

function policiesScenario(token: string): Scenario {
  const base = singleRoute('policies', 'valid repeated JWT + ALLOW policy + local rate limit (1M/s) on one route, HTTP/1.1', 'http1');
  return {
    ...base,
    request: { path: '/bench', host: HOST, headers: { authorization: `Bearer ${token}` } },
    meshgate(ctx) {
      return {
        ...base.meshgate(ctx),
        'policies.yaml': `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ${NS}}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '${SAMPLE_JWKS}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: ${NS}}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/*"]}}]
---
apiVersion: meshgate.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: bench, namespace: ${NS}}
spec:
  selector: {istio: ingressgateway}
  mode: local
  rules:
  - name: per-client
    key: [remoteAddress]
    limit: {requests: 1000000, per: second}
`,
      };
    },
  };
}

export const SCENARIOS: Scenario[] = [
  singleRoute('plain', 'one route, HTTP/1.1, keep-alive', 'http1'),
  routes1k,
  headers,
  singleRoute('tls', 'HTTPS termination (TLS 1.3, RSA 2048), HTTP/1.1 to the client, plain HTTP upstream', 'https'),
  singleRoute('h2', 'HTTP/2 over TLS downstream (10 streams per connection), HTTP/1.1 upstream', 'h2'),
  policiesScenario(readFileSync(SAMPLE_TOKEN_FILE, 'utf8').trim()),
];

// Data-plane scenarios measured by another command (named in `pending`), not by this harness.
export const PENDING: PendingScenario[] = [
  { name: 'connect', pending: 'measured by `npm run bench:connect`: MB/s through the egress CONNECT tunnel against a direct connection (nginx has no CONNECT proxy to compare with, and wrk cannot open a tunnel)' },
];

/** The control-plane scenario; run by config-apply.ts, not by the load generators. */
export const CONFIG_APPLY = 'config-apply';

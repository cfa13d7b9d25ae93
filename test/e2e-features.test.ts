// Every routing feature a user writes in Istio YAML, observed from outside a real
// `meshgate up` process: the YAML goes through the file source, validation, pilot's
// translation and discovery before the gateway applies it, so each test here proves the
// whole chain, not just the data plane (gateway/dataplane.test.ts covers that alone).
// One process serves every test; each feature has its own host name, so tests do not see
// each other's routes.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startEcho, freePort, type Upstream, type EchoReply, type Handler } from './helpers/upstream.ts';
import { tempDir, eventually, type TempDir } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady, type Proc, type GatewayPorts } from './helpers/meshgate.ts';

interface Res { status: number; headers: http.IncomingHttpHeaders; body: string; ms: number }
interface CallOptions { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number }

let gatewayPort = 0;
// Keep-alive so the statistical tests (hundreds of requests) stay quick.
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** One request to the gateway's HTTP port with the given Host; resolves with what the client saw. */
function call(host: string, path: string, o: CallOptions = {}): Promise<Res> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: gatewayPort, path, method: o.method ?? 'GET', agent,
      headers: { host, ...o.headers }, timeout: o.timeoutMs ?? 5000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`client timeout: ${host}${path}`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** The upstream's echo of the request, after checking the answer came from an upstream. */
function echoed(r: Res): EchoReply {
  assert.equal(r.status, 200, `expected an upstream 200, got ${r.status}: ${r.body}`);
  assert.equal(r.headers['content-type'], 'application/json', `not an echo: ${r.body}`);
  return JSON.parse(r.body) as EchoReply;
}

/** Runs `n` requests, at most `width` at a time; returns them in order. */
async function many(n: number, width: number, one: (i: number) => Promise<Res>): Promise<Res[]> {
  const out: Res[] = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await one(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, worker));
  return out;
}

function countBy(items: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of items) out[s] = (out[s] ?? 0) + 1;
  return out;
}

// ---------------------------------------------------------------- config

interface Ports {
  gateway: number;
  v1: number; v2: number; v3: number;
  web: number; flaky: number; shadow: number;
  lbA: number; lbB: number; lbC: number;
  odGood: number; odBad: number;
  dead: number; dns: number;
}

const gatewayYaml = (p: Ports) => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: ${p.gateway}, name: http, protocol: HTTP}
    hosts: ["*"]
`;

const servicesYaml = (p: Ports) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.v1}}, labels: {app: reviews, version: v1}}
  - {address: 127.0.0.1, ports: {http: ${p.v2}}, labels: {app: reviews, version: v2}}
  - {address: 127.0.0.1, ports: {http: ${p.v3}}, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: web
spec:
  hosts: [web.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.web}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: flaky
spec:
  hosts: [flaky.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.flaky}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shadow
spec:
  hosts: [shadow.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.shadow}}}
---
# One set of three backends under two names, each with its own load balancer.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backends
spec:
  hosts: [rr.internal, hash.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.lbA}}}
  - {address: 127.0.0.1, ports: {http: ${p.lbB}}}
  - {address: 127.0.0.1, ports: {http: ${p.lbC}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: outlier
spec:
  hosts: [outlier.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.odGood}}}
  - {address: 127.0.0.1, ports: {http: ${p.odBad}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: dead
spec:
  hosts: [dead.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: ${p.dead}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: local-dns
spec:
  hosts: [dns.internal]
  location: MESH_EXTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  endpoints:
  - {address: localhost, ports: {http: ${p.dns}}}
`;

const destinationRulesYaml = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
  - name: retired
    labels: {version: v0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: rr
spec:
  host: rr.internal
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: hash
spec:
  host: hash.internal
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: outlier
spec:
  host: outlier.internal
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 30s
`;

/** A VirtualService bound to the edge Gateway; `http` is the indented list of rules. */
const vs = (name: string, hosts: string[], http: string) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${name}
spec:
  hosts: [${hosts.join(', ')}]
  gateways: [istio-system/edge]
  http:
${http}`;

const reply = (text: string) => `directResponse: {status: 200, body: {string: "${text}"}}`;

const routesYaml = [
  vs('matching', ['match.example.com', 'alt.example.com'], `  - name: first
    match: [{uri: {prefix: /first}}]
    ${reply('first')}
  - name: shadowed
    match: [{uri: {prefix: /first/deeper}}]
    ${reply('shadowed')}
  - name: exact
    match: [{uri: {exact: /exact}}]
    ${reply('exact')}
  - name: regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    ${reply('regex')}
  - name: nocase
    match: [{uri: {prefix: /Case}, ignoreUriCase: true}]
    ${reply('nocase')}
  - name: strict
    match: [{uri: {exact: /Strict}}]
    ${reply('strict')}
  - name: regex-case
    match: [{uri: {regex: "/Docs/[a-z]+"}, ignoreUriCase: true}]
    ${reply('regex-case')}
  - name: method
    match: [{uri: {prefix: /method}, method: {exact: POST}}]
    ${reply('method')}
  - name: header-exact
    match: [{uri: {prefix: /headers}, headers: {x-tier: {exact: gold}}}]
    ${reply('header-exact')}
  - name: header-prefix
    match: [{uri: {prefix: /headers}, headers: {x-client: {prefix: mobile-}}}]
    ${reply('header-prefix')}
  - name: header-regex
    match: [{uri: {prefix: /headers}, headers: {x-version: {regex: "v[0-9]+"}}}]
    ${reply('header-regex')}
  - name: without
    match: [{uri: {prefix: /without}, withoutHeaders: {x-block: {exact: "1"}}}]
    ${reply('without')}
  - name: query-exact
    match: [{uri: {prefix: /query}, queryParams: {q: {exact: one}}}]
    ${reply('query-exact')}
  - name: query-regex
    match: [{uri: {prefix: /query}, queryParams: {id: {regex: "[0-9]+"}}}]
    ${reply('query-regex')}
  - name: authority
    match: [{uri: {prefix: /auth}, authority: {exact: alt.example.com}}]
    ${reply('authority')}
  - name: and-or
    match:
    - uri: {exact: /or-a}
    - uri: {exact: /or-b}
      method: {exact: GET}
      headers: {x-and: {exact: "1"}}
    ${reply('and-or')}
`),
  vs('reviews', ['reviews.example.com'], `  - match: [{headers: {end-user: {exact: jason}}}]
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 70
    - destination: {host: reviews, subset: v2}
      weight: 30
`),
  vs('retries', ['retry.example.com'], `  - match: [{uri: {prefix: /retry}}]
    route: [{destination: {host: flaky.internal}}]
    retries: {attempts: 2, retryOn: 5xx}
  - match: [{uri: {prefix: /noretry}}]
    route: [{destination: {host: flaky.internal}}]
    retries: {attempts: 0}
  - match: [{uri: {prefix: /default}}]
    route: [{destination: {host: flaky.internal}}]
`),
  vs('timeouts', ['timeout.example.com'], `  - route: [{destination: {host: web.internal}}]
    timeout: 200ms
`),
  vs('faults', ['fault.example.com'], `  - match: [{uri: {prefix: /abort}}]
    fault:
      abort: {httpStatus: 418, percentage: {value: 100}}
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /delay}}]
    fault:
      delay: {fixedDelay: 300ms, percentage: {value: 100}}
    route: [{destination: {host: web.internal}}]
`),
  vs('redirects', ['redirect.example.com'], `  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, scheme: https, redirectCode: 302}
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 410, body: {string: "this page is gone"}}
`),
  vs('rewrites', ['rewrite.example.com'], `  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /}
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /users/}}]
    rewrite:
      uriRegexRewrite: {match: '^/users/([^/]+)/posts/([0-9]+)$', rewrite: '/v2/posts/\\2/author/\\1'}
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /host}}]
    rewrite: {authority: backend.internal}
    route: [{destination: {host: web.internal}}]
`),
  vs('mirroring', ['mirror.example.com'], `  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: shadow.internal}
    mirrorPercentage: {value: 100}
`),
  vs('cors', ['cors.example.com'], `  - corsPolicy:
      allowOrigins:
      - exact: https://app.example.com
      - regex: "https://[a-z]+\\\\.trusted\\\\.example"
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: web.internal}}]
`),
  vs('header-edits', ['headers.example.com'], `  - headers:
      request:
        set: {x-set: from-route}
        add: {x-added: from-route}
        remove: [x-remove-me]
      response:
        set: {x-resp-set: from-route}
        add: {x-resp-add: from-route}
        remove: [x-drop]
    route:
    - destination: {host: reviews, subset: v1}
      headers:
        request: {set: {x-dest: v1}}
        response: {set: {x-dest-resp: v1}}
`),
  vs('balancing', ['lb.example.com'], `  - match: [{uri: {prefix: /rr}}]
    route: [{destination: {host: rr.internal}}]
  - match: [{uri: {prefix: /hash}}]
    route: [{destination: {host: hash.internal}}]
  - match: [{uri: {prefix: /outlier}}]
    route: [{destination: {host: outlier.internal}}]
`),
  vs('failures', ['fail.example.com'], `  - match: [{uri: {prefix: /dead}}]
    route: [{destination: {host: dead.internal}}]
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: reviews, subset: retired}}]
`),
  vs('plain', ['web.example.com'], `  - route: [{destination: {host: web.internal}}]
`),
  vs('dns', ['dns.example.com'], `  - route: [{destination: {host: dns.internal}}]
`),
].join('---\n');

// ---------------------------------------------------------------- upstreams with behaviour

/** Fails the first try of every request (keyed by x-request-id, which retries keep) with 503. */
function failFirstTry(): Handler {
  const seen = new Set<string>();
  return (req, res) => {
    const id = String(req.headers['x-request-id']);
    if (seen.has(id)) return false;
    seen.add(id);
    (res as http.ServerResponse).writeHead(503, { 'content-type': 'text/plain' });
    res.end('first try fails');
    return true;
  };
}

const alwaysFail: Handler = (_req, res) => {
  (res as http.ServerResponse).writeHead(500, { 'content-type': 'text/plain', 'x-upstream': 'od-bad' });
  res.end('broken');
  return true;
};

describe('Istio routing features through meshgate up', () => {
  let dir: TempDir;
  let proc: Proc;
  let ports: GatewayPorts;
  const up: Record<string, Upstream> = {};
  // Holds the "closed" endpoint's port until the test closes it, so no other server (a
  // parallel test run's, say) can be given that port while meshgate starts.
  let deadHolder: http.Server;

  before(async () => {
    const specs: [string, Parameters<typeof startEcho>[0]][] = [
      ['v1', {}], ['v2', {}], ['v3', {}], ['web', {}], ['shadow', {}],
      ['flaky', { handler: failFirstTry() }],
      ['lb-a', {}], ['lb-b', {}], ['lb-c', {}],
      ['od-good', {}], ['od-bad', { handler: alwaysFail }],
      ['dns', {}],
    ];
    for (const [name, opts] of specs) up[name] = await startEcho({ name, ...opts });
    deadHolder = http.createServer();
    await new Promise<void>((resolve) => deadHolder.listen(0, '127.0.0.1', resolve));
    gatewayPort = await freePort();
    ports = await gatewayPorts();
    const p: Ports = {
      gateway: gatewayPort,
      v1: up.v1.port, v2: up.v2.port, v3: up.v3.port,
      web: up.web.port, flaky: up.flaky.port, shadow: up.shadow.port,
      lbA: up['lb-a'].port, lbB: up['lb-b'].port, lbC: up['lb-c'].port,
      odGood: up['od-good'].port, odBad: up['od-bad'].port,
      dead: (deadHolder.address() as AddressInfo).port,
      dns: up.dns.port,
    };
    dir = await tempDir();
    await dir.write('gateway.yaml', gatewayYaml(p));
    await dir.write('services.yaml', servicesYaml(p));
    await dir.write('destination-rules.yaml', destinationRulesYaml);
    await dir.write('routes.yaml', routesYaml);
    proc = run(['up', '--config', dir.path, ...portFlags(ports),
      '--discovery-port', String(await freePort()), '--debug-port', String(await freePort())]);
    await waitReady(proc, ports.health);
  });

  after(async () => {
    agent.destroy();
    await proc?.stop();
    await Promise.all(Object.values(up).map((u) => u.close()));
    if (deadHolder?.listening) await new Promise((resolve) => deadHolder.close(resolve));
    await dir?.cleanup();
  });

  test('the whole config is accepted: no problems, no NACK on the admin port', async () => {
    const r = await fetch(`http://127.0.0.1:${ports.admin}/problems`);
    const body = (await r.json()) as { problems: string[]; lastNack: unknown };
    assert.deepEqual(body.problems, [], 'every field used here is supported and valid');
    assert.equal(body.lastNack, null);
  });

  describe('match kinds', () => {
    const H = 'match.example.com';
    const hit = async (path: string, o: CallOptions = {}, host = H): Promise<string> => {
      const r = await call(host, path, o);
      return r.status === 200 ? r.body : String(r.status);
    };

    test('uri exact, prefix and regex (RE2, full match)', async () => {
      assert.equal(await hit('/exact'), 'exact');
      assert.equal(await hit('/exact/'), '404');
      assert.equal(await hit('/exactly'), '404');
      assert.equal(await hit('/exact?x=1'), 'exact', 'the query is not part of the path');
      assert.equal(await hit('/items/42'), 'regex');
      assert.equal(await hit('/items/42/reviews'), '404', 'a regex must match the whole path');
      assert.equal(await hit('/v2/items/42'), '404', 'a regex must match from the start');
      assert.equal(await hit('/items/abc'), '404');
    });

    test('ignoreUriCase applies only to its own rule', async () => {
      assert.equal(await hit('/case/x'), 'nocase');
      assert.equal(await hit('/CASE'), 'nocase');
      assert.equal(await hit('/Strict'), 'strict');
      assert.equal(await hit('/strict'), '404');
    });

    // Istio's API: "The case will be ignored only in the case of exact and prefix URI
    // matches" — Envoy ignores case_sensitive for safe_regex path matches.
    test('ignoreUriCase does not make a regex uri match case-insensitive', async () => {
      assert.equal(await hit('/Docs/intro'), 'regex-case');
      assert.equal(await hit('/docs/intro'), '404');
      assert.equal(await hit('/Docs/Intro'), '404');
    });

    test('method', async () => {
      assert.equal(await hit('/method', { method: 'POST', body: '' }), 'method');
      assert.equal(await hit('/method'), '404');
      assert.equal(await hit('/method', { method: 'PUT', body: '' }), '404');
    });

    test('headers exact, prefix and regex; withoutHeaders', async () => {
      assert.equal(await hit('/headers', { headers: { 'x-tier': 'gold' } }), 'header-exact');
      assert.equal(await hit('/headers', { headers: { 'x-tier': 'golden' } }), '404');
      assert.equal(await hit('/headers', { headers: { 'x-client': 'mobile-ios' } }), 'header-prefix');
      assert.equal(await hit('/headers', { headers: { 'x-client': 'desktop-mobile-' } }), '404');
      assert.equal(await hit('/headers', { headers: { 'x-version': 'v12' } }), 'header-regex');
      assert.equal(await hit('/headers', { headers: { 'x-version': 'v12-beta' } }), '404', 'header regexes are full matches');
      assert.equal(await hit('/headers', { headers: { 'X-Tier': 'gold' } }), 'header-exact', 'header names are case-insensitive');
      assert.equal(await hit('/headers'), '404');
      assert.equal(await hit('/without'), 'without');
      assert.equal(await hit('/without', { headers: { 'x-block': '0' } }), 'without');
      assert.equal(await hit('/without', { headers: { 'x-block': '1' } }), '404');
    });

    test('queryParams exact and regex', async () => {
      assert.equal(await hit('/query?q=one'), 'query-exact');
      assert.equal(await hit('/query?x=1&q=one'), 'query-exact');
      assert.equal(await hit('/query?q=one1'), '404');
      assert.equal(await hit('/query?id=123'), 'query-regex');
      assert.equal(await hit('/query?id=12a'), '404', 'query regexes are full matches');
      assert.equal(await hit('/query'), '404');
    });

    test('authority', async () => {
      assert.equal(await hit('/auth', {}, 'alt.example.com'), 'authority');
      assert.equal(await hit('/auth', {}, `alt.example.com:${gatewayPort}`), '404', 'an exact authority match includes the port');
      assert.equal(await hit('/auth', {}, 'match.example.com'), '404');
    });

    test('the first matching rule wins; entries are ORed, fields of one entry ANDed; no match is 404', async () => {
      assert.equal(await hit('/first/deeper'), 'first', 'an earlier, broader rule shadows a later one');
      assert.equal(await hit('/or-a'), 'and-or');
      assert.equal(await hit('/or-b', { headers: { 'x-and': '1' } }), 'and-or');
      assert.equal(await hit('/or-b'), '404', 'one field of an entry missing');
      assert.equal(await hit('/or-b', { method: 'POST', body: '', headers: { 'x-and': '1' } }), '404');
      const miss = await call(H, '/nothing-here');
      assert.equal(miss.status, 404);
      assert.equal(miss.body, '');
      assert.equal((await call('unknown.example.com', '/exact')).status, 404, 'a host no VirtualService names');
    });
  });

  test('weighted split 70/30 between subsets, and subset routing by header', async () => {
    const N = 400;
    const rs = await many(N, 8, () => call('reviews.example.com', '/reviews/1'));
    const names = countBy(rs.map((r) => echoed(r).name));
    const v1 = ((names.v1 ?? 0) * 100) / N;
    const v2 = ((names.v2 ?? 0) * 100) / N;
    assert.equal((names.v1 ?? 0) + (names.v2 ?? 0), N, `only v1 and v2 take the split: ${JSON.stringify(names)}`);
    assert.ok(Math.abs(v1 - 70) <= 8, `v1 got ${v1}%`);
    assert.ok(Math.abs(v2 - 30) <= 8, `v2 got ${v2}%`);
    const jason = await many(20, 4, () => call('reviews.example.com', '/reviews/1', { headers: { 'end-user': 'jason' } }));
    assert.deepEqual(countBy(jason.map((r) => echoed(r).name)), { v3: 20 });
  });

  describe('retries', () => {
    test('attempts: 2, retryOn: 5xx → a first-try 503 is retried and the client sees 200', async () => {
      const before = up.flaky.received.length;
      const r = await call('retry.example.com', '/retry/1');
      const e = echoed(r);
      assert.equal(e.name, 'flaky');
      const tries = up.flaky.received.slice(before);
      assert.equal(tries.length, 2, 'one failed try, one retry');
      assert.equal(tries[0].headers['x-request-id'], tries[1].headers['x-request-id'], 'the retry is the same request');
    });

    test('attempts: 0 → the 503 reaches the client', async () => {
      const before = up.flaky.received.length;
      const r = await call('retry.example.com', '/noretry/1');
      assert.equal(r.status, 503);
      assert.equal(r.body, 'first try fails');
      assert.equal(up.flaky.received.length - before, 1, 'no retry');
    });

    test('a client cannot ask for retries with x-envoy-* headers', async () => {
      const before = up.flaky.received.length;
      const r = await call('retry.example.com', '/noretry/2', { headers: { 'x-envoy-retry-on': '5xx', 'x-envoy-max-retries': '3' } });
      assert.equal(r.status, 503);
      assert.equal(up.flaky.received.length - before, 1);
    });

    test('no retries field → Istio\'s default policy retries a 503', async () => {
      const before = up.flaky.received.length;
      const r = await call('retry.example.com', '/default/1');
      assert.equal(echoed(r).name, 'flaky');
      assert.equal(up.flaky.received.length - before, 2);
    });
  });

  test('timeout: 200ms against an upstream that takes 1 s → 504 upstream request timeout', async () => {
    const r = await call('timeout.example.com', '/slow', { headers: { 'x-echo-delay-ms': '1000' } });
    assert.equal(r.status, 504);
    assert.equal(r.body, 'upstream request timeout');
    assert.ok(r.ms >= 180 && r.ms < 700, `answered after ${Math.round(r.ms)} ms`);
    const fast = await call('timeout.example.com', '/fast');
    assert.equal(echoed(fast).path, '/fast', 'a quick answer is not affected');
  });

  describe('faults', () => {
    test('abort 100% with httpStatus 418 → 418 fault filter abort, upstream untouched', async () => {
      const before = up.web.received.length;
      const r = await call('fault.example.com', '/abort');
      assert.equal(r.status, 418);
      assert.equal(r.body, 'fault filter abort');
      assert.equal(up.web.received.length, before);
    });

    test('delay 300ms at 100% → the upstream answers, at least 300 ms later', async () => {
      const r = await call('fault.example.com', '/delay');
      assert.equal(echoed(r).path, '/delay');
      assert.ok(r.ms >= 295, `took ${Math.round(r.ms)} ms`);
      assert.ok(r.ms < 2000, `took ${Math.round(r.ms)} ms`);
    });
  });

  test('redirect sets Location from uri, authority, scheme and code; directResponse answers with its body', async () => {
    const r = await call('redirect.example.com', '/old');
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, 'https://new.example.com/new');
    const q = await call('redirect.example.com', '/old?page=2');
    assert.equal(q.headers.location, 'https://new.example.com/new?page=2', 'the query is kept (Envoy strip_query: false)');
    const d = await call('redirect.example.com', '/gone/forever');
    assert.equal(d.status, 410);
    assert.equal(d.body, 'this page is gone');
  });

  test('rewrite: prefix, regex with groups, authority — as the upstream sees them', async () => {
    const H = 'rewrite.example.com';
    const p = echoed(await call(H, '/api/v1/x'));
    assert.equal(p.path, '/x');
    assert.equal(echoed(await call(H, '/api/v1/x/y?z=1')).path, '/x/y?z=1');
    assert.equal(p.authority, H, 'no authority rewrite on this rule');
    assert.equal(echoed(await call(H, '/users/ana/posts/17')).path, '/v2/posts/17/author/ana');
    assert.equal(echoed(await call(H, '/users/ana/posts/17?full=1')).path, '/v2/posts/17/author/ana?full=1', 'the regex rewrites the path, the query stays');
    const a = echoed(await call(H, '/host/path'));
    assert.equal(a.authority, 'backend.internal');
    assert.equal(a.path, '/host/path');
  });

  test('mirror: the shadow gets the request with a -shadow authority, the client gets the primary\'s answer', async () => {
    const before = up.shadow.received.length;
    const r = await call('mirror.example.com', '/mirrored?n=1', { headers: { 'x-trace-me': 'yes' } });
    assert.equal(echoed(r).name, 'v1');
    const copy = await eventually(() => up.shadow.received.slice(before).find((e) => e.path === '/mirrored?n=1'), 2000, 'the mirrored request');
    assert.equal(copy.authority, 'mirror.example.com-shadow');
    assert.equal(copy.headers['x-trace-me'], 'yes');
  });

  describe('CORS', () => {
    const H = 'cors.example.com';
    const preflight = (origin: string, path: string) => call(H, path, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-custom' },
    });

    test('a preflight from an allowed origin is answered by the gateway', async () => {
      const before = up.web.received.length;
      for (const origin of ['https://app.example.com', 'https://shop.trusted.example']) {
        const r = await preflight(origin, '/cors/preflight');
        assert.equal(r.status, 200);
        assert.equal(r.headers['access-control-allow-origin'], origin);
        assert.match(String(r.headers['access-control-allow-methods']), /POST/);
        assert.match(String(r.headers['access-control-allow-headers']), /x-custom/);
        assert.equal(r.headers['access-control-max-age'], '86400');
        assert.equal(r.headers['access-control-allow-credentials'], 'true');
      }
      assert.equal(up.web.received.length, before, 'the upstream never saw the preflight');
    });

    test('an origin the policy does not allow gets no allow-origin header', async () => {
      const r = await preflight('https://evil.example.com', '/cors/evil');
      assert.equal(r.headers['access-control-allow-origin'], undefined);
      const sub = await preflight('https://a.b.trusted.example', '/cors/evil');
      assert.equal(sub.headers['access-control-allow-origin'], undefined, 'the origin regex is a full match');
      const actual = await call(H, '/cors/evil-get', { headers: { origin: 'https://evil.example.com' } });
      assert.equal(actual.status, 200);
      assert.equal(actual.headers['access-control-allow-origin'], undefined);
    });

    test('an actual request from an allowed origin gets access-control-allow-origin', async () => {
      const r = await call(H, '/cors/get', { headers: { origin: 'https://app.example.com' } });
      assert.equal(echoed(r).path, '/cors/get');
      assert.equal(r.headers['access-control-allow-origin'], 'https://app.example.com');
      assert.equal(r.headers['access-control-allow-credentials'], 'true');
      assert.match(String(r.headers['access-control-expose-headers']), /x-exposed/);
    });
  });

  test('header edits: request set/add/remove at the upstream, response set/add/remove at the client, per destination', async () => {
    const r = await call('headers.example.com', '/h', {
      headers: {
        'x-set': 'from-client', 'x-added': 'from-client', 'x-remove-me': 'secret',
        'x-echo-header': 'x-drop=internal-detail,x-resp-add=from-upstream,x-resp-set=from-upstream',
      },
    });
    const e = echoed(r);
    assert.equal(e.name, 'v1');
    assert.equal(e.headers['x-set'], 'from-route');
    assert.equal(e.headers['x-added'], 'from-client, from-route');
    assert.equal(e.headers['x-remove-me'], undefined);
    assert.equal(e.headers['x-dest'], 'v1');
    assert.equal(r.headers['x-resp-set'], 'from-route');
    assert.equal(r.headers['x-resp-add'], 'from-upstream, from-route');
    assert.equal(r.headers['x-drop'], undefined);
    assert.equal(r.headers['x-dest-resp'], 'v1');
  });

  describe('load balancing and outlier detection', () => {
    test('ROUND_ROBIN spreads evenly over 3 endpoints, in rotation', async () => {
      const rs = await many(30, 1, (i) => call('lb.example.com', `/rr/${i}`));
      const order = rs.map((r) => echoed(r).name);
      assert.deepEqual(countBy(order), { 'lb-a': 10, 'lb-b': 10, 'lb-c': 10 });
      // Equal weights: Envoy rotates, so any three requests in a row reach all three endpoints.
      for (let i = 0; i + 3 <= order.length; i++) {
        assert.equal(new Set(order.slice(i, i + 3)).size, 3, `requests ${i}..${i + 2}: ${order.join(' ')}`);
      }
    });

    test('consistentHash on a header keeps each key on one endpoint', async () => {
      const placed = new Map<string, Set<string>>();
      const users = Array.from({ length: 12 }, (_, i) => `user-${i}`);
      await many(users.length * 5, 4, async (i) => {
        const user = users[i % users.length];
        const r = await call('lb.example.com', '/hash', { headers: { 'x-user': user } });
        const name = echoed(r).name;
        if (!placed.has(user)) placed.set(user, new Set());
        placed.get(user)!.add(name);
        return r;
      });
      for (const [user, names] of placed) assert.equal(names.size, 1, `${user} went to ${[...names].join(', ')}`);
      const used = new Set([...placed.values()].map((s) => [...s][0]));
      assert.ok(used.size >= 2, `12 keys all landed on ${[...used].join(', ')}`);
    });

    test('outlier detection: after 2 consecutive 5xx the broken endpoint is ejected', async () => {
      const statuses: number[] = [];
      const deadline = Date.now() + 3000;
      for (let i = 0; i < 40 && up['od-bad'].received.length < 2 && Date.now() < deadline; i++) {
        statuses.push((await call('lb.example.com', '/outlier')).status);
      }
      assert.equal(up['od-bad'].received.length, 2, 'the broken endpoint was tried twice');
      assert.equal(statuses.filter((s) => s === 500).length, 2);
      const after = await many(20, 1, () => call('lb.example.com', '/outlier'));
      assert.deepEqual(countBy(after.map((r) => echoed(r).name)), { 'od-good': 20 });
      assert.equal(up['od-bad'].received.length, 2, 'no traffic to the ejected endpoint');
    });
  });

  describe('upstream failures', () => {
    test('an endpoint on a closed port → 503 upstream connect error', async () => {
      await new Promise((resolve) => deadHolder.close(resolve));
      const r = await call('fail.example.com', '/dead');
      assert.equal(r.status, 503);
      assert.ok(r.body.startsWith('upstream connect error or disconnect/reset before headers'), r.body);
    });

    test('a subset that selects no endpoint → 503 no healthy upstream', async () => {
      const r = await call('fail.example.com', '/empty');
      assert.equal(r.status, 503);
      assert.equal(r.body, 'no healthy upstream');
    });
  });

  test('x-forwarded-for/-proto and x-request-id reach the upstream; x-envoy-* and x-meshgate-* from clients do not', async () => {
    const r = await call('web.example.com', '/fwd', {
      headers: { 'x-forwarded-for': '203.0.113.7', 'x-envoy-foo': 'spoof', 'x-meshgate-foo': 'spoof', 'x-envoy-retry-on': '5xx' },
    });
    const e = echoed(r);
    const xff = String(e.headers['x-forwarded-for']).split(',').map((s) => s.trim());
    assert.deepEqual(xff, ['203.0.113.7', '127.0.0.1'], 'the client address is appended to the chain');
    assert.equal(e.headers['x-forwarded-proto'], 'http');
    assert.match(String(e.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(e.headers['x-envoy-foo'], undefined);
    assert.equal(e.headers['x-envoy-retry-on'], undefined);
    assert.equal(e.headers['x-meshgate-foo'], undefined);
    const again = echoed(await call('web.example.com', '/fwd'));
    assert.notEqual(again.headers['x-request-id'], e.headers['x-request-id'], 'one id per request');
    assert.equal(again.headers['x-forwarded-for'], '127.0.0.1');
  });

  test('a DNS ServiceEntry (endpoint address localhost) routes', async () => {
    const e = echoed(await call('dns.example.com', '/dns'));
    assert.equal(e.name, 'dns');
    assert.equal(e.path, '/dns');
  });
});

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import { parseConfigText } from './load.ts';
import { validateResource, validateResources, toSnapshot, MAX_REGEX_LENGTH } from './validate.ts';
import { formatProblem } from './problems.ts';
import type { Problem } from './problems.ts';
import type { Resource } from './istio.ts';

/** Loads YAML text as the file `f.yaml` and validates it; returns everything reported. */
function check(text: string, file = 'f.yaml'): { problems: Problem[]; accepted: Resource[] } {
  const loaded = parseConfigText(file, text);
  const v = validateResources(loaded.resources);
  return { problems: [...loaded.problems, ...v.problems], accepted: v.accepted };
}

function only(problems: Problem[], code: string, field?: string): Problem {
  const hits = problems.filter((p) => p.code === code && (field === undefined || p.field === field));
  assert.equal(hits.length, 1, `expected one ${code}${field ? ` at ${field}` : ''}, got:\n${problems.map(formatProblem).join('\n')}`);
  return hits[0];
}

function errors(problems: Problem[]): Problem[] {
  return problems.filter((p) => p.severity === 'error');
}

const vs = (http: string, extra = ''): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
${extra}  http:
${http}`;

const simpleRoute = `  - route:
    - destination:
        host: reviews
`;

describe('loading', () => {
  test('malformed YAML reports file, line and column, and the other documents still load', () => {
    const { problems, accepted } = check(`apiVersion: v1\nkind: Secret\nmetadata:\n  name: a: b\n---\n${vs(simpleRoute)}`);
    const p = only(problems, 'MG_CONFIG_YAML');
    assert.deepEqual([p.file, p.line, p.column, p.severity], ['f.yaml', 4, 9, 'error']);
    assert.match(p.message, /mapping/i);
    assert.deepEqual(accepted.map((r) => r.kind), ['VirtualService']);
  });

  test('an alias bomb is refused, not expanded', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 8; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
    lines.push('apiVersion: v1', 'kind: Secret');
    const { problems, accepted } = check(lines.join('\n'));
    assert.equal(accepted.length, 0);
    assert.match(only(problems, 'MG_CONFIG_YAML').message, /alias/i);
  });

  test('a trailing --- is not a document', () => {
    const { problems } = check(`${vs(simpleRoute)}---\n`);
    assert.deepEqual(problems, []);
  });

  test('unknown kind is an error naming the kind; Kubernetes kinds are ignored with a warning', () => {
    const { problems } = check('apiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: x\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n');
    assert.match(only(problems, 'MG_CONFIG_UNKNOWN_KIND').message, /Frobnicator/);
    assert.equal(only(problems, 'MG_CONFIG_IGNORED_KIND').severity, 'warning');
  });
});

describe('type and metadata', () => {
  test('an apiVersion not served for the kind is refused with the served ones', () => {
    const { problems, accepted } = check(vs(simpleRoute).replace('networking.istio.io/v1', 'networking.istio.io/v2'));
    const p = only(problems, 'MG_CONFIG_BAD_API_VERSION', 'apiVersion');
    assert.match(p.message, /networking\.istio\.io\/v2/);
    assert.match(p.message, /networking\.istio\.io\/v1\b/);
    assert.equal(p.line, 1);
    assert.equal(accepted.length, 0);
  });

  test('older Istio apiVersions are accepted', () => {
    for (const v of ['networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3']) {
      assert.deepEqual(check(vs(simpleRoute).replace('networking.istio.io/v1', v)).problems, [], v);
    }
  });

  test('a name that is not DNS-1123 is refused', () => {
    const { problems } = check(vs(simpleRoute).replace('name: reviews', 'name: Reviews_V1'));
    const p = only(problems, 'MG_CONFIG_BAD_NAME', 'metadata.name');
    assert.match(p.message, /Reviews_V1/);
    assert.equal(p.line, 4);
  });

  test('a missing name and a bad namespace are both reported', () => {
    const { problems } = check(vs(simpleRoute).replace('  name: reviews', '  namespace: Bad.NS'));
    only(problems, 'MG_CONFIG_BAD_NAME', 'metadata.name');
    assert.match(only(problems, 'MG_CONFIG_BAD_NAME', 'metadata.namespace').message, /Bad\.NS/);
  });

  test('a misspelt metadata field is refused rather than moving the resource to default', () => {
    const { problems, accepted } = check(vs(simpleRoute).replace('  name: reviews', '  name: reviews\n  namespce: shop'));
    assert.match(only(problems, 'MG_CONFIG_UNKNOWN_FIELD', 'metadata.namespce').message, /did you mean "namespace"/);
    assert.equal(accepted.length, 0);
  });

  test('a misspelt top-level field is refused', () => {
    const { problems } = check(vs(simpleRoute).replace('spec:', 'spc:\n  x: 1\nspec:'));
    const p = only(problems, 'MG_CONFIG_UNKNOWN_FIELD', 'spc');
    assert.match(p.message, /"spc"/);
    assert.equal(p.line, 5);
  });
});

describe('schema', () => {
  test('a missing required field names the field', () => {
    const { problems, accepted } = check(vs(`  - route:
    - destination:
        subset: v1
`));
    const p = only(problems, 'MG_CONFIG_SCHEMA', 'spec.http[0].route[0].destination.host');
    assert.equal(p.message, 'is required');
    assert.equal(p.line, 10); // the `destination:` key that lacks it
    assert.equal(accepted.length, 0);
  });

  test('a wrong type says what was expected and what was found', () => {
    const { problems } = check(vs(`  - route:
    - destination:
        host: reviews
        port:
          number: eighty
`));
    const p = only(problems, 'MG_CONFIG_SCHEMA', 'spec.http[0].route[0].destination.port.number');
    assert.match(p.message, /must be an integer/);
    assert.match(p.message, /eighty/);
    assert.equal(p.line, 13);
    assert.equal(p.column, 11);
  });

  test('an enum value lists the allowed values', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: FASTEST
`);
    const p = only(problems, 'MG_CONFIG_SCHEMA', 'spec.trafficPolicy.loadBalancer.simple');
    assert.match(p.message, /"FASTEST" is not allowed/);
    assert.match(p.message, /ROUND_ROBIN/);
  });

  test('a typo in a match field is refused and the intended field suggested', () => {
    const { problems, accepted } = check(vs(`  - match:
    - uri:
        prefx: /api
    route:
    - destination:
        host: reviews
`));
    const p = only(problems, 'MG_CONFIG_UNKNOWN_FIELD', 'spec.http[0].match[0].uri.prefx');
    assert.match(p.message, /did you mean "prefix"/);
    assert.equal(p.line, 11);
    assert.equal(p.column, 9);
    assert.equal(accepted.length, 0);
  });

  test('two kinds of string match at once are refused', () => {
    const { problems } = check(vs(`  - match:
    - uri:
        exact: /a
        prefix: /b
    route:
    - destination:
        host: reviews
`));
    assert.match(only(problems, 'MG_CONFIG_SCHEMA', 'spec.http[0].match[0].uri').message, /only one of exact, prefix, regex/);
  });
});

describe('durations', () => {
  test('a timeout that is not a duration is refused at its line and column', () => {
    const { problems, accepted } = check(vs(`  - timeout: 5 seconds
    route:
    - destination:
        host: reviews
`));
    const p = only(problems, 'MG_CONFIG_DURATION', 'spec.http[0].timeout');
    assert.match(p.message, /"5 seconds" is not a duration/);
    assert.equal(p.line, 9);
    assert.equal(p.column, 5);
    assert.equal(accepted.length, 0);
    assert.equal(formatProblem(p), 'error MG_CONFIG_DURATION f.yaml:9:5 VirtualService/default/reviews spec.http[0].timeout: "5 seconds" is not a duration (use forms like 500ms, 1s, 1m30s)');
  });

  test('perTryTimeout, fault delay and CORS maxAge are checked too', () => {
    const { problems } = check(vs(`  - retries:
      attempts: 3
      perTryTimeout: 2x
    fault:
      delay:
        fixedDelay: -1s
    corsPolicy:
      maxAge: "1"
    route:
    - destination:
        host: reviews
`));
    assert.match(only(problems, 'MG_CONFIG_DURATION', 'spec.http[0].retries.perTryTimeout').message, /"2x"/);
    assert.match(only(problems, 'MG_CONFIG_DURATION', 'spec.http[0].fault.delay.fixedDelay').message, /"-1s"/);
    assert.match(only(problems, 'MG_CONFIG_DURATION', 'spec.http[0].corsPolicy.maxAge').message, /"1"/);
  });

  test('a zero duration is refused where Istio requires at least 1ms', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 0s
`);
    assert.match(only(problems, 'MG_CONFIG_DURATION', 'spec.trafficPolicy.connectionPool.tcp.connectTimeout').message, /at least 1ms/);
  });
});

describe('regexes', () => {
  test('a lookahead, which RE2 does not support, is refused with RE2\'s reason', () => {
    const { problems, accepted } = check(vs(`  - match:
    - uri:
        regex: /api/(?=v1)
    route:
    - destination:
        host: reviews
`));
    const p = only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].match[0].uri.regex');
    assert.match(p.message, /not a valid RE2 regex/);
    assert.match(p.message, /\(\?=/);
    assert.equal(p.line, 11);
    assert.equal(accepted.length, 0);
  });

  test('regexes in headers, query parameters, rewrite and CORS are all checked', () => {
    const { problems } = check(vs(`  - match:
    - headers:
        x-user:
          regex: "[a-"
      queryParams:
        q:
          regex: "(x"
    rewrite:
      uriRegexRewrite:
        match: "*"
        rewrite: /
    corsPolicy:
      allowOrigins:
      - regex: "a{5000}"
    route:
    - destination:
        host: reviews
`));
    only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].match[0].headers.x-user.regex');
    only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].match[0].queryParams.q.regex');
    only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].rewrite.uriRegexRewrite.match');
    only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].corsPolicy.allowOrigins[0].regex');
  });

  test('a regex longer than the cap is refused without compiling it', () => {
    const long = 'a'.repeat(MAX_REGEX_LENGTH + 1);
    const { problems } = check(vs(`  - match:
    - authority:
        regex: ${long}
    route:
    - destination:
        host: reviews
`));
    const p = only(problems, 'MG_CONFIG_REGEX', 'spec.http[0].match[0].authority.regex');
    assert.match(p.message, new RegExp(`${MAX_REGEX_LENGTH + 1} characters.*limit is ${MAX_REGEX_LENGTH}`));
  });

  test('a catastrophic-backtracking pattern is valid RE2 and accepted', () => {
    const { problems } = check(vs(`  - match:
    - uri:
        regex: "(a+)+$"
    route:
    - destination:
        host: reviews
`));
    assert.deepEqual(problems, []);
  });
});

describe('VirtualService rules', () => {
  test('route together with redirect is refused naming both', () => {
    const { problems, accepted } = check(vs(`  - redirect:
      uri: /new
    route:
    - destination:
        host: reviews
`));
    const p = only(problems, 'MG_CONFIG_INVALID', 'spec.http[0]');
    assert.match(p.message, /route and redirect/);
    assert.equal(accepted.length, 0);
  });

  test('a VirtualService without routes is refused', () => {
    const { problems } = check(vs('').replace('  http:\n', ''));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec').message, /needs http routes/);
  });

  test('a rule with no action is refused', () => {
    const { problems } = check(vs('  - name: nothing\n'));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0]').message, /needs one of route, redirect, directResponse/);
  });

  test('weights outside 0..100 are refused', () => {
    const { problems } = check(vs(`  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 150
    - destination:
        host: reviews
        subset: v2
      weight: -50
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].route[0].weight').message, /150.*between 0 and 100/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].route[1].weight').message, /-50/);
  });

  test('an empty route list is refused', () => {
    const { problems } = check(vs('  - route: []\n'));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].route').message, /at least one destination/);
  });

  test('bad redirect codes, direct response statuses and abort statuses are refused', () => {
    const { problems } = check(vs(`  - redirect:
      uri: /x
      redirectCode: 200
  - directResponse:
      status: 600
  - fault:
      abort:
        percentage:
          value: 150
    route:
    - destination:
        host: reviews
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].redirect.redirectCode').message, /200.*301, 302, 303, 307 or 308/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[1].directResponse.status').message, /600/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[2].fault.abort').message, /httpStatus/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[2].fault.abort.percentage.value').message, /150/);
  });

  test('rewrite.uri with uriRegexRewrite is refused', () => {
    const { problems } = check(vs(`  - rewrite:
      uri: /a
      uriRegexRewrite:
        match: ^/b
        rewrite: /c
    route:
    - destination:
        host: reviews
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].rewrite').message, /only one of rewrite\.uri and rewrite\.uriRegexRewrite/);
  });

  test('retryOn accepts Envoy policies and status codes and names unknown entries', () => {
    const ok = check(vs(`  - retries:
      attempts: 2
      retryOn: 5xx,connect-failure, 503 ,retriable-4xx
    route:
    - destination:
        host: reviews
`));
    assert.deepEqual(ok.problems, []);
    const bad = check(vs(`  - retries:
      attempts: 2
      retryOn: 5xx,on-error,999
    route:
    - destination:
        host: reviews
`));
    const p = only(bad.problems, 'MG_CONFIG_INVALID', 'spec.http[0].retries.retryOn');
    assert.match(p.message, /"on-error", "999"/);
  });

  test('invalid header names in matches and header edits are refused', () => {
    const { problems } = check(vs(`  - match:
    - headers:
        "x user":
          exact: a
    headers:
      request:
        set:
          "bad:name": v
    route:
    - destination:
        host: reviews
`));
    assert.equal(errors(problems).filter((p) => p.code === 'MG_CONFIG_INVALID').length, 2);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].match[0].headers["x user"]').message, /not a valid HTTP header name/);
  });

  test('bad hosts and wildcard destinations are refused', () => {
    const { problems } = check(vs(`  - route:
    - destination:
        host: "*"
`).replace('  - reviews', '  - reviews\n  - "bad host"'));
    only(problems, 'MG_CONFIG_HOST', 'spec.hosts[1]');
    assert.match(only(problems, 'MG_CONFIG_HOST', 'spec.http[0].route[0].destination.host').message, /wildcard/);
  });

  test('tcp routes and unimplemented fields are warned about by name and the resource is kept', () => {
    const { problems, accepted } = check(vs(`  - match:
    - sourceLabels:
        app: a
    fault:
      abort:
        grpcStatus: UNAVAILABLE
    route:
    - destination:
        host: reviews
`, `  exportTo:
  - "."
  tcp:
  - route:
    - destination:
        host: reviews
`));
    assert.equal(accepted.length, 1);
    assert.deepEqual(errors(problems), []);
    assert.match(only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.tcp').message, /TCP routes are not supported yet; ignored/);
    assert.match(only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.exportTo').message, /every resource is visible everywhere/);
    only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.http[0].match[0].sourceLabels');
    only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.http[0].fault.abort.grpcStatus');
  });
});

describe('hostile input (BAD-INPUTS.md)', () => {
  test('a header value with CR/LF is refused, so config cannot split a response', () => {
    const { problems } = check(vs(`  - headers:
      response:
        set:
          x-note: "ok\\r\\nset-cookie: stolen=1"
    route:
    - destination:
        host: reviews
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.http[0].headers.response.set.x-note').message, /control character/);
  });

  test('a subjectAltName with a NUL byte is refused', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      subjectAltNames: ["api.example.com\\0.evil.com"]
`);
    only(problems, 'MG_CONFIG_INVALID', 'spec.trafficPolicy.tls.subjectAltNames[0]');
  });

  test('an unbounded subset label value (a version selector) is refused', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: ${'v'.repeat(5000)}
`);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.subsets[0].labels.version').message, /not a valid label value/);
  });

  test('values of the wrong shape anywhere are reported, never thrown', () => {
    const shapes: unknown[] = [
      null, [], 'x', 42, { hosts: 'a' }, { hosts: [1, null, {}], http: 'x' }, { hosts: ['a'], http: [null, 1, 'x', []] },
      { hosts: ['a'], http: [{ route: { destination: 'x' }, match: 'x', retries: 'x', fault: [], headers: 1 }] },
      { hosts: ['a'], http: [{ route: [{ destination: { host: 1, port: 'x' }, weight: '50', headers: { request: { set: [] } } }] }] },
      { hosts: ['a'], http: [{ match: [{ headers: [], queryParams: 'q', uri: { regex: 5 } }], directResponse: { status: 'x', body: 1 } }] },
    ];
    for (const kind of ['VirtualService', 'Gateway', 'DestinationRule', 'ServiceEntry', 'Secret']) {
      for (const spec of [...shapes, { servers: 'x' }, { servers: [null, { port: 'x', tls: 'y' }] }, { subsets: [{ labels: 'x', trafficPolicy: [] }], trafficPolicy: { loadBalancer: 'x', portLevelSettings: [1] } }, { ports: [{}, null], endpoints: [{ ports: [] }, 'x'] }, { type: 'kubernetes.io/tls', data: [], stringData: { 'tls.crt': 1 } }]) {
        const r: Resource = { apiVersion: kind === 'Secret' ? 'v1' : 'networking.istio.io/v1', kind, metadata: { name: 'x', namespace: 'default' }, spec, source: { file: 'x.yaml', line: 1, doc: 0 } };
        const ps = validateResource(r);
        for (const p of ps) assert.ok(p.message.length > 0 && p.code.startsWith('MG_'), JSON.stringify(p));
      }
    }
  });
});

describe('Gateway rules', () => {
  const gw = (servers: string): string => `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
${servers}`;

  test('a Gateway without servers is refused', () => {
    const { problems } = check(gw('').replace('  servers:\n', ''));
    only(problems, 'MG_CONFIG_INVALID', 'spec.servers');
  });

  test('port out of range, bad host forms and HTTPS without TLS are refused', () => {
    const { problems } = check(gw(`  - port:
      number: 70000
      name: http
      protocol: HTTP
    hosts:
    - "a/b/c"
    - "Bad_NS/foo.com"
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - "./foo.example.com"
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.servers[0].port.number').message, /70000/);
    only(problems, 'MG_CONFIG_HOST', 'spec.servers[0].hosts[0]');
    assert.match(only(problems, 'MG_CONFIG_HOST', 'spec.servers[0].hosts[1]').message, /Bad_NS/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.servers[1].tls').message, /HTTPS server needs tls/);
  });

  test('SIMPLE needs a certificate; MUTUAL needs a CA', () => {
    const { problems } = check(gw(`  - port: {number: 443, name: a, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      serverCertificate: /etc/cert.pem
  - port: {number: 8443, name: b, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/cert.pem
      privateKey: /etc/key.pem
`));
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.servers[0].tls').message, /privateKey is missing/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.servers[1].tls').message, /caCertificates/);
  });

  test('TCP servers and passthrough TLS are warned about and the Gateway is kept', () => {
    const { problems, accepted } = check(gw(`  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 443, name: tls, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: PASSTHROUGH
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls:
      httpsRedirect: true
`));
    assert.deepEqual(errors(problems), []);
    assert.equal(accepted.length, 1);
    assert.match(only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.servers[0].port.protocol').message, /protocol TCP is not supported yet; server ignored/);
    assert.match(only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.servers[1].tls.mode').message, /PASSTHROUGH/);
  });
});

describe('DestinationRule rules', () => {
  test('duplicate and invalid subset names, bad percentages and an empty consistentHash are refused', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {}
    outlierDetection:
      maxEjectionPercent: 150
  subsets:
  - name: v1
  - name: v1
  - name: V_2
`);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.subsets[1].name').message, /already defined at spec\.subsets\[0\]/);
    only(problems, 'MG_CONFIG_INVALID', 'spec.subsets[2].name');
    only(problems, 'MG_CONFIG_INVALID', 'spec.trafficPolicy.outlierDetection.maxEjectionPercent');
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.trafficPolicy.loadBalancer.consistentHash').message, /needs one of httpHeaderName/);
  });

  test('ISTIO_MUTUAL and locality settings are warned about; the rule is kept', () => {
    const { problems, accepted } = check(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
`);
    assert.equal(accepted.length, 1);
    only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.trafficPolicy.tls.mode');
    only(problems, 'MG_CONFIG_UNSUPPORTED_FIELD', 'spec.trafficPolicy.loadBalancer.localityLbSetting');
  });
});

describe('ServiceEntry rules', () => {
  test('"*" host, duplicate ports, non-IP STATIC endpoints and undeclared endpoint ports are refused', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts:
  - "*"
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 80, name: http2, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: db.example.com
    ports:
      grpc: 9000
`);
    only(problems, 'MG_CONFIG_HOST', 'spec.hosts[0]');
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.ports[1].number').message, /already declared/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.endpoints[0].address').message, /not an IP address/);
    assert.match(only(problems, 'MG_CONFIG_INVALID', 'spec.endpoints[0].ports.grpc').message, /"grpc" is not declared.*http, http2/);
  });

  test('a DNS entry with host-name endpoints is valid', () => {
    const { problems } = check(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints:
  - address: api-1.example.com
    ports: {https: 8443}
`);
    assert.deepEqual(problems, []);
  });
});

describe('Secret rules', () => {
  // A self-signed certificate made here so the test needs no files: node's crypto makes the
  // RSA key quickly, node-forge signs the certificate.
  function makeCert(): { cert: string; key: string } {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const c = forge.pki.createCertificate();
    c.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
    c.serialNumber = '01';
    c.validity.notBefore = new Date(Date.now() - 60_000);
    c.validity.notAfter = new Date(Date.now() + 86_400_000);
    c.setSubject([{ name: 'commonName', value: 'example.com' }]);
    c.setIssuer([{ name: 'commonName', value: 'example.com' }]);
    c.sign(forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
    return { cert: forge.pki.certificateToPem(c), key: keyPem };
  }
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const secret = (data: string, type = 'kubernetes.io/tls'): string => `apiVersion: v1
kind: Secret
metadata:
  name: cred
  namespace: istio-system
type: ${type}
${data}`;
  const a = makeCert();
  const b = makeCert();

  test('a TLS secret with a matching certificate and key is valid, in data or stringData', () => {
    assert.deepEqual(check(secret(`data:\n  tls.crt: ${b64(a.cert)}\n  tls.key: ${b64(a.key)}\n  ca.crt: ${b64(b.cert)}\n`)).problems, []);
    const indent = (s: string): string => s.trim().split('\n').map((l) => `    ${l}`).join('\n');
    assert.deepEqual(check(secret(`stringData:\n  tls.crt: |\n${indent(a.cert)}\n  tls.key: |\n${indent(a.key)}\n`)).problems, []);
  });

  test('values that are not base64, not PEM, or a key for another certificate are refused', () => {
    const notB64 = check(secret(`data:\n  tls.crt: "not base64!"\n  tls.key: ${b64(a.key)}\n`));
    assert.match(only(notB64.problems, 'MG_CONFIG_INVALID', 'spec.data["tls.crt"]').message, /not base64/);
    assert.equal(notB64.accepted.length, 0);

    const notPem = check(secret(`data:\n  tls.crt: ${b64('hello')}\n  tls.key: ${b64('world')}\n`));
    assert.match(only(notPem.problems, 'MG_CONFIG_INVALID', 'spec.data["tls.crt"]').message, /no PEM certificate/);
    assert.match(only(notPem.problems, 'MG_CONFIG_INVALID', 'spec.data["tls.key"]').message, /not a PEM private key/);

    const mismatch = check(secret(`data:\n  tls.crt: ${b64(a.cert)}\n  tls.key: ${b64(b.key)}\n`));
    assert.match(only(mismatch.problems, 'MG_CONFIG_INVALID', 'spec.data["tls.key"]').message, /does not match/);

    const missing = check(secret(`data:\n  tls.crt: ${b64(a.cert)}\n`));
    assert.match(only(missing.problems, 'MG_CONFIG_INVALID', 'spec.data["tls.key"]').message, /needs tls\.key/);
  });

  test('a non-TLS secret is warned about and not refused', () => {
    const { problems, accepted } = check(secret('data:\n  password: cGFzcw==\n', 'Opaque'));
    assert.equal(accepted.length, 1);
    assert.match(only(problems, 'MG_CONFIG_IGNORED_KIND', 'spec.type').message, /Opaque/);
  });
});

describe('validateResources and toSnapshot', () => {
  test('a duplicate is refused naming both files; the first is kept', () => {
    const first = parseConfigText('one.yaml', vs(simpleRoute)).resources;
    const second = parseConfigText('two.yaml', `# comment\n${vs(simpleRoute)}`).resources;
    const { accepted, problems } = validateResources([...first, ...second]);
    assert.equal(accepted.length, 1);
    assert.equal(accepted[0], first[0]);
    const p = only(problems, 'MG_CONFIG_DUPLICATE');
    assert.equal(p.file, 'two.yaml');
    assert.equal(p.line, 5);
    assert.match(p.message, /one\.yaml:1/);
    assert.match(p.message, /two\.yaml:2/);
  });

  test('one bad resource does not take the others down', () => {
    const text = `${vs(simpleRoute)}---\n${vs(simpleRoute).replace('name: reviews', 'name: broken').replace('host: reviews', 'hots: reviews')}`;
    const { accepted, problems } = check(text);
    assert.deepEqual(accepted.map((r) => r.metadata.name), ['reviews']);
    assert.equal(errors(problems).length, 2); // the unknown field and the missing host
  });

  test('a realistic set of valid resources produces no problems', () => {
    const { problems, accepted } = check(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["prod/*.example.com", "*/api.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert, minProtocolVersion: TLSV1_2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: prod}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/web, mesh]
  http:
  - name: v2
    match:
    - uri: {regex: "^/v2/[a-z]+$"}
      headers: {x-canary: {exact: "1"}}
      ignoreUriCase: true
    rewrite: {uri: /}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset"}
    route:
    - destination: {host: api-v2, port: {number: 8080}, subset: canary}
      weight: 20
    - destination: {host: api, port: {number: 8080}}
      weight: 80
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\\\.example\\\\.com"}]
      maxAge: 24h
    headers:
      response: {set: {x-frame-options: DENY}, remove: [server]}
  - redirect: {uri: /v2, redirectCode: 308}
    match: [{uri: {exact: /old}}]
  - directResponse: {status: 404, body: {string: "nothing here"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: prod}
spec:
  host: api-v2
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 2s}, http: {http1MaxPendingRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - {name: canary, labels: {track: canary}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: prod}
spec:
  hosts: [payments.example.net]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.7}, {address: "2001:db8::1", ports: {https: 8443}}]
`);
    assert.deepEqual(problems.map(formatProblem), []);
    assert.equal(accepted.length, 4);
  });

  test('toSnapshot groups by kind and orders by creation time, namespace, name', () => {
    const mk = (name: string, ns: string, ts?: string): Resource => ({
      apiVersion: 'networking.istio.io/v1', kind: 'VirtualService',
      metadata: { name, namespace: ns, ...(ts ? { creationTimestamp: ts } : {}) },
      spec: { hosts: [name] }, source: { file: 'x', line: 1, doc: 0 },
    });
    const gw: Resource = { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'g', namespace: 'a' }, spec: {}, source: { file: 'x', line: 1, doc: 0 } };
    const snap = toSnapshot([mk('b', 'z'), mk('a', 'z'), mk('c', 'a'), gw, mk('late', 'a', '2024-05-01T00:00:00Z'), mk('early', 'z', '2023-01-01T00:00:00Z')]);
    assert.deepEqual(snap.virtualServices.map((r) => `${r.metadata.namespace}/${r.metadata.name}`), ['a/c', 'z/a', 'z/b', 'z/early', 'a/late']);
    assert.deepEqual(snap.gateways.map((r) => r.metadata.name), ['g']);
    assert.deepEqual([snap.destinationRules, snap.serviceEntries, snap.secrets], [[], [], []]);
  });

  test('validates 10,000 VirtualServices in well under a few seconds', () => {
    const rs: Resource[] = [];
    for (let i = 0; i < 10_000; i++) {
      rs.push({
        apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: `vs-${i}`, namespace: 'default' },
        spec: { hosts: [`svc-${i}`], http: [{ match: [{ uri: { regex: `^/api/${i}/.*` } }], timeout: '2s', route: [{ destination: { host: `svc-${i}` }, weight: 100 }] }] },
        source: { file: 'gen.yaml', line: 1, doc: i },
      });
    }
    validateResource(rs[0]); // schema compilation is a one-time cost, not what is measured
    const t = performance.now();
    const { accepted, problems } = validateResources(rs);
    const ms = performance.now() - t;
    assert.deepEqual(problems, []);
    assert.equal(accepted.length, 10_000);
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
  });
});

// Cost of one authorize() against a realistic edge policy set: 10 AuthorizationPolicies with
// 50 rules between them (2 DENY, 7 ALLOW, 1 AUDIT), mixing IP blocks, JWT principals and
// claims, hosts, methods, paths and headers. Printed as ns per call for a few request
// shapes, from the cheapest to the one that walks every rule. Not a test: numbers depend on
// the machine. Run: node_modules/.bin/node loadtest/authz.bench.ts
import type { AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, RequestFacts } from '../api/policy.ts';
import { compileAuthorization, type AuthInfo } from '../policies/authz.ts';

const NO_SOURCE: AuthzSource = {
  principals: null, notPrincipals: null, requestPrincipals: null, notRequestPrincipals: null,
  namespaces: null, notNamespaces: null, ipBlocks: null, notIpBlocks: null, remoteIpBlocks: null, notRemoteIpBlocks: null,
};
const NO_OPERATION: AuthzOperation = {
  hosts: null, notHosts: null, ports: null, notPorts: null, methods: null, notMethods: null, paths: null, notPaths: null,
};

function rule(from: Partial<AuthzSource>[], to: Partial<AuthzOperation>[], when: AuthzRule['when'] = []): AuthzRule {
  return { from: from.map((s) => ({ ...NO_SOURCE, ...s })), to: to.map((o) => ({ ...NO_OPERATION, ...o })), when };
}

function policySet(): AuthzPolicy[] {
  const out: AuthzPolicy[] = [];
  out.push({
    source: 'authorizationpolicy/istio-system/block-abuse', action: 'DENY', rules: [
      rule([{ remoteIpBlocks: ['198.51.100.0/24', '192.0.2.0/24', '2001:db8:bad::/48', '100.64.0.0/10'] }], []),
      rule([{ notRequestPrincipals: ['*'] }], [{ paths: ['/admin', '/admin/*'] }]),
      rule([], [{ paths: ['*.php', '/wp-admin*', '/.env', '/.git/*'] }]),
      rule([], [], [{ key: 'request.headers[x-debug]', values: ['*'], notValues: null }]),
      rule([{ notIpBlocks: ['10.0.0.0/8'] }], [{ paths: ['/internal/*'] }]),
    ],
  });
  out.push({
    source: 'authorizationpolicy/istio-system/deny-methods', action: 'DENY', rules: [
      rule([], [{ methods: ['TRACE', 'CONNECT'] }]),
      rule([], [{ methods: ['DELETE'], notPaths: ['/api/v1/*'] }]),
      rule([], [{ hosts: ['legacy.example.com'], methods: ['POST', 'PUT', 'PATCH'] }]),
      rule([], [], [{ key: 'request.auth.claims[suspended]', values: ['true'], notValues: null }]),
      rule([], [{ ports: ['9090'] }]),
    ],
  });
  const teams = ['billing', 'orders', 'catalog', 'search', 'users', 'payments', 'reports'];
  for (const team of teams) {
    out.push({
      source: `authorizationpolicy/${team}/allow-${team}`, action: 'ALLOW', rules: [
        rule([], [{ hosts: [`${team}.example.com`], methods: ['GET', 'HEAD'], paths: [`/api/v1/${team}/public/*`] }]),
        rule([{ requestPrincipals: ['https://login.example.com/*'] }], [{ hosts: [`${team}.example.com`], paths: [`/api/v1/${team}/*`] }],
          [{ key: 'request.auth.claims[groups]', values: [`${team}-readers`, `${team}-admins`], notValues: null }]),
        rule([{ requestPrincipals: ['https://login.example.com/*'] }], [{ hosts: [`${team}.example.com`], methods: ['POST', 'PUT', 'DELETE'], paths: [`/api/v1/${team}/{*}/items/{**}`] }],
          [{ key: 'request.auth.claims[groups]', values: [`${team}-admins`], notValues: null }]),
        rule([{ ipBlocks: ['10.0.0.0/8'] }], [{ hosts: [`${team}.example.com`], paths: ['/healthz', '/metrics'] }]),
        rule([], [{ hosts: [`${team}.example.com`] }], [{ key: 'request.auth.claims[scope]', values: [`${team}:write`], notValues: null }]),
      ],
    });
  }
  out.push({
    source: 'authorizationpolicy/istio-system/audit-writes', action: 'AUDIT', rules: [
      rule([], [{ methods: ['POST', 'PUT', 'PATCH', 'DELETE'] }]),
      rule([], [{ paths: ['/api/v1/payments/*'] }]),
      rule([{ requestPrincipals: ['https://partner.example.com/*'] }], []),
      rule([], [], [{ key: 'request.headers[x-impersonate]', values: ['*'], notValues: null }]),
      rule([{ remoteIpBlocks: ['203.0.113.0/24'] }], [{ methods: ['GET'] }]),
    ],
  });
  return out;
}

function facts(over: Partial<RequestFacts>): RequestFacts {
  return {
    method: 'GET', path: '/', query: '', host: 'billing.example.com', port: 8443,
    headers: { 'user-agent': ['bench'], accept: ['application/json'] },
    sourceIp: '10.1.2.3', remoteIp: '203.0.113.9', sni: 'billing.example.com', peerPrincipal: '', peerNamespace: '',
    ...over,
  };
}

const user: AuthInfo = {
  principal: 'https://login.example.com/u-1234',
  claims: { iss: 'https://login.example.com', sub: 'u-1234', groups: ['staff', 'reports-readers'], scope: 'openid profile' },
  audiences: ['api'],
  presenter: 'web',
};

const scenarios: { name: string; facts: RequestFacts; auth: AuthInfo | null; expect: boolean }[] = [
  { name: 'allowed by the first ALLOW rule', facts: facts({ path: '/api/v1/billing/public/plans' }), auth: null, expect: true },
  { name: 'denied by the first DENY rule', facts: facts({ remoteIp: '198.51.100.20' }), auth: null, expect: false },
  { name: 'JWT groups claim, last ALLOW policy', facts: facts({ host: 'reports.example.com', path: '/api/v1/reports/daily' }), auth: user, expect: true },
  { name: 'no rule matches (walks all 50)', facts: facts({ host: 'unknown.example.com', path: '/nothing', method: 'POST' }), auth: user, expect: false },
  { name: 'encoded slash in the path', facts: facts({ host: 'reports.example.com', path: '/api/v1/reports/a%2Fb' }), auth: user, expect: true },
];

const authorizer = compileAuthorization(policySet());
const ITERATIONS = 300_000;
let sink = 0;

console.log('authorize(): 10 policies, 50 rules');
for (const s of scenarios) {
  const d = authorizer.authorize(s.facts, s.auth);
  if (d.allowed !== s.expect) throw new Error(`${s.name}: expected allowed=${s.expect}, got ${JSON.stringify(d)}`);
  for (let i = 0; i < ITERATIONS / 3; i++) sink += authorizer.authorize(s.facts, s.auth).status;
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITERATIONS; i++) sink += authorizer.authorize(s.facts, s.auth).status;
  const ns = Number(process.hrtime.bigint() - start) / ITERATIONS;
  console.log(`  ${s.name.padEnd(40)} ${ns.toFixed(0).padStart(6)} ns/call  (${d.allowed ? 'allowed' : 'denied'}${d.audit.length ? ', audited' : ''})`);
}
if (sink === 0) console.log('');

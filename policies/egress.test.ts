import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseConfigText } from '../api/load.ts';
import { qualifyHost } from '../api/hosts.ts';
import type { ServiceEntrySpec } from '../api/istio.ts';
import type { EgressConfig, EgressEntry } from '../api/policy.ts';
import { compileEgress, validateEgress, egressProblem, EgressConfigError, type EgressRequest, type EgressPolicy } from './egress.ts';

const SAMPLES = '/work/shared/istio-samples';

/** ServiceEntries of a YAML text as the allowlist reads them (what pilot's translation will do). */
function entriesFromYaml(file: string, text: string): EgressEntry[] {
  const { resources, problems } = parseConfigText(file, text);
  assert.deepEqual(problems.filter((p) => p.severity === 'error'), []);
  return resources.filter((r) => r.kind === 'ServiceEntry').map((r) => {
    const spec = r.spec as ServiceEntrySpec;
    const ns = r.metadata.namespace;
    return {
      source: `serviceentry/${ns}/${r.metadata.name}`,
      hosts: spec.hosts.map((h) => qualifyHost(h, ns)),
      addresses: spec.addresses ?? [],
      ports: (spec.ports ?? []).map((p) => ({ number: p.number, protocol: p.protocol ?? '', name: p.name })),
      location: spec.location ?? 'MESH_EXTERNAL',
      resolution: spec.resolution ?? 'NONE',
    };
  });
}

function sampleEntries(path: string): EgressEntry[] {
  return entriesFromYaml(path, readFileSync(`${SAMPLES}/${path}`, 'utf8'));
}

function entry(name: string, hosts: string[], ports: [number, string][], addresses: string[] = []): EgressEntry {
  return {
    source: `serviceentry/default/${name}`, hosts, addresses,
    ports: ports.map(([number, protocol]) => ({ number, protocol, name: `${protocol.toLowerCase()}-${number}` })),
    location: 'MESH_EXTERNAL', resolution: 'DNS',
  };
}

function policy(entries: EgressEntry[], mode: EgressConfig['mode'] = 'REGISTRY_ONLY', audit = false): EgressPolicy {
  return compileEgress({ mode, audit, entries });
}

function http(host: string, port = 80): EgressRequest {
  return { host, port, protocol: 'HTTP', sni: null, address: null };
}
function connect(host: string, port: number, sni: string | null): EgressRequest {
  return { host, port, protocol: 'TLS', sni, address: null };
}
function tcp(address: string, port: number, host = ''): EgressRequest {
  return { host, port, protocol: 'TCP', sni: null, address };
}

const BASIC = [
  entry('httpbin', ['httpbin.org'], [[80, 'HTTP'], [443, 'HTTPS']]),
  entry('wild', ['*.example.com'], [[443, 'HTTPS']]),
  entry('tls-pair', ['api.partner.io', 'cdn.partner.io'], [[443, 'TLS']]),
  entry('db', ['db.corp.net'], [[5432, 'TCP']]),
];

describe('egress allowlist: hosts and ports (REGISTRY_ONLY)', () => {
  const p = policy(BASIC);

  test('a declared HTTP host is allowed and the decision names its ServiceEntry', () => {
    const d = p.decide(http('httpbin.org'));
    assert.equal(d.allowed, true);
    assert.equal(d.audited, false);
    assert.equal(d.entry, 'serviceentry/default/httpbin');
    assert.equal(d.resolution, 'DNS');
    assert.match(d.reason, /httpbin\.org.*80/);
  });

  test('an undeclared host is blocked with a reason naming host and port', () => {
    const d = p.decide(http('evil.com'));
    assert.equal(d.allowed, false);
    assert.equal(d.entry, null);
    assert.equal(d.reason, 'no ServiceEntry declares host evil.com (port 80)');
  });

  test('a declared host on a port it does not list is blocked, listing the ports it has', () => {
    const d = p.decide(connect('httpbin.org', 8443, null));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /host httpbin\.org is declared by serviceentry\/default\/httpbin but not on port 8443 \(ports: 80, 443\)/);
  });

  test('*.example.com covers one or more labels but not example.com itself nor aexample.com', () => {
    assert.equal(p.decide(connect('a.example.com', 443, 'a.example.com')).entry, 'serviceentry/default/wild');
    assert.equal(p.decide(connect('a.b.example.com', 443, null)).allowed, true);
    const apex = p.decide(connect('example.com', 443, null));
    assert.equal(apex.allowed, false);
    assert.match(apex.reason, /no ServiceEntry declares host example\.com/);
    assert.equal(p.decide(connect('aexample.com', 443, null)).allowed, false);
    assert.equal(p.decide(connect('example.com.evil.net', 443, null)).allowed, false);
  });

  test('the most specific host that has the port wins: an exact entry without it does not hide a wildcard', () => {
    const q = policy([
      entry('wild', ['*.example.com'], [[443, 'HTTPS']]),
      entry('exact', ['api.example.com'], [[80, 'HTTP']]),
      entry('deeper', ['*.eu.example.com'], [[443, 'HTTPS']]),
    ]);
    assert.equal(q.decide(http('api.example.com')).entry, 'serviceentry/default/exact');
    assert.equal(q.decide(connect('api.example.com', 443, null)).entry, 'serviceentry/default/wild');
    assert.equal(q.decide(connect('x.eu.example.com', 443, null)).entry, 'serviceentry/default/deeper');
    const d = q.decide(http('x.eu.example.com'));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /declared by \*\.eu\.example\.com in serviceentry\/default\/deeper but not on port 80 \(ports: 443\)/);
  });

  test('protocols must fit the port: TLS on an HTTP port, plain HTTP on an HTTPS port, raw TCP on an HTTP port are refused', () => {
    const q = policy([entry('split', ['split.io'], [[80, 'HTTP'], [443, 'HTTPS']])]);
    const tlsOnHttp = q.decide(connect('split.io', 80, 'split.io'));
    assert.equal(tlsOnHttp.allowed, false);
    assert.match(tlsOnHttp.reason, /port 80 of host split\.io is declared HTTP .* needs a port declared HTTPS or TLS/);
    const httpOnTls = q.decide(http('split.io', 443));
    assert.equal(httpOnTls.allowed, false);
    assert.match(httpOnTls.reason, /declared HTTPS .*HTTP traffic needs a port declared HTTP/);
    assert.equal(q.decide({ host: 'split.io', port: 80, protocol: 'TCP', sni: null, address: null }).allowed, false);
    assert.equal(q.decide({ host: 'split.io', port: 443, protocol: 'HTTPS', sni: 'split.io', address: null }).allowed, true);
  });

  test('a TCP port without addresses matches by host only; any bytes may cross it', () => {
    assert.equal(p.decide({ host: 'db.corp.net', port: 5432, protocol: 'TCP', sni: null, address: '10.1.2.3' }).allowed, true);
    assert.equal(p.decide(connect('db.corp.net', 5432, 'db.corp.net')).allowed, true);
    const other = p.decide(tcp('10.1.2.3', 5432));
    assert.equal(other.allowed, false);
    assert.match(other.reason, /protocol TCP on port 5432 to 10\.1\.2\.3 needs addresses \(CIDR\) in the ServiceEntry/);
  });

  test('host names are compared case-insensitively and without a trailing dot, in requests and in entries', () => {
    const q = policy([entry('mixed', ['API.Mixed.IO.', '*.Wild.IO'], [[443, 'https']])]);
    assert.equal(q.decide(connect('api.mixed.io', 443, 'API.MIXED.IO.')).allowed, true);
    assert.equal(q.decide(connect('API.Mixed.io.', 443, null)).allowed, true);
    assert.equal(q.decide(connect('X.WILD.IO.', 443, 'x.wild.io')).allowed, true);
    assert.equal(p.decide(http('HTTPBIN.ORG.')).entry, 'serviceentry/default/httpbin');
  });

  test('an IP literal is not allowed by a host entry, even one for the name that resolves to it', () => {
    const d = p.decide(http('93.184.216.34'));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /host 93\.184\.216\.34 is an IP address; IP destinations are allowed only by a ServiceEntry's addresses/);
    assert.equal(p.decide(connect('[2606:2800:220:1::1]', 443, null)).allowed, false);
  });

  test('hostile request names are refused as malformed, whatever the mode', () => {
    const open = policy(BASIC, 'ALLOW_ANY', true);
    for (const host of ['127.1', '2130706433', '0x7f.0.0.1', 'httpbin.org:80', 'a b.com', 'httpbin.org\u0000.evil.com', '*.example.com', 'a..example.com', 'x y.example.com', '-x.example.com']) {
      for (const q of [p, open]) {
        const d = q.decide(http(host));
        assert.equal(d.allowed, false, host);
        assert.equal(d.audited, false, host);
      }
    }
    assert.match(p.decide(http('127.1')).reason, /numeric but not a dotted-quad/);
    assert.equal(p.decide(http('httpbin.org', 0)).allowed, false);
    assert.equal(p.decide(http('httpbin.org', 70000)).allowed, false);
    assert.equal(p.decide({ ...http('httpbin.org'), protocol: 'UDP' as 'TCP' }).allowed, false);
  });
});

describe('egress allowlist: TLS SNI against the CONNECT host', () => {
  const p = policy(BASIC);

  test('matching SNI is allowed; SNI of a host outside the entry is refused (smuggling)', () => {
    assert.equal(p.decide(connect('httpbin.org', 443, 'httpbin.org')).allowed, true);
    const d = p.decide(connect('httpbin.org', 443, 'evil.com'));
    assert.equal(d.allowed, false);
    assert.equal(d.entry, null);
    assert.match(d.reason, /SNI evil\.com does not match the CONNECT host httpbin\.org \(port 443\)/);
    // another allowed host, but of a different ServiceEntry: still a mismatch
    assert.equal(p.decide(connect('httpbin.org', 443, 'a.example.com')).allowed, false);
  });

  test('an SNI covered by the same ServiceEntry (exact or wildcard) is accepted', () => {
    assert.equal(p.decide(connect('api.partner.io', 443, 'cdn.partner.io')).allowed, true);
    assert.equal(p.decide(connect('a.example.com', 443, 'b.c.example.com')).allowed, true);
    assert.equal(p.decide(connect('a.example.com', 443, 'example.com')).allowed, false);
  });

  test('before the ClientHello (sni null) the host decides; an IP or malformed SNI is refused', () => {
    assert.equal(p.decide(connect('httpbin.org', 443, null)).allowed, true);
    assert.equal(p.decide(connect('httpbin.org', 443, '')).allowed, true);
    assert.equal(p.decide(connect('httpbin.org', 443, '10.0.0.1')).allowed, false);
    assert.equal(p.decide(connect('httpbin.org', 443, 'bad name')).allowed, false);
  });

  test('TLS seen without a CONNECT host is decided by its SNI', () => {
    assert.equal(p.decide({ host: '', port: 443, protocol: 'TLS', sni: 'httpbin.org', address: '203.0.113.9' }).entry, 'serviceentry/default/httpbin');
    assert.equal(p.decide({ host: '', port: 443, protocol: 'TLS', sni: 'evil.com', address: '203.0.113.9' }).allowed, false);
  });

  test('a CONNECT to an IP with an allowed SNI is not allowed by that SNI', () => {
    const d = p.decide({ host: '203.0.113.9', port: 443, protocol: 'TLS', sni: 'httpbin.org', address: null });
    assert.equal(d.allowed, false);
  });
});

describe('egress allowlist: addresses (CIDR) for TCP', () => {
  const p = policy([
    entry('v4', ['dummy.v4.test'], [[22, 'TCP'], [80, 'HTTP'], [443, 'TLS']], ['10.20.0.0/16', '10.20.5.7', '192.0.2.0/24']),
    entry('v4-narrow', ['dummy.narrow.test'], [[2222, 'TCP']], ['10.20.5.0/24']),
    entry('v6', ['dummy.v6.test'], [[22, 'TCP']], ['2001:db8:abcd::/48']),
  ]);

  test('IPv4 addresses inside a block are allowed on its TCP port, outside are not', () => {
    assert.equal(p.decide(tcp('10.20.200.1', 22)).entry, 'serviceentry/default/v4');
    const d = p.decide(tcp('10.21.0.1', 22));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /protocol TCP on port 22 to 10\.21\.0\.1 needs addresses \(CIDR\)/);
  });

  test('the most specific block with the port names the entry; a block without the port does not block a wider one', () => {
    assert.equal(p.decide(tcp('10.20.5.9', 2222)).entry, 'serviceentry/default/v4-narrow');
    assert.equal(p.decide(tcp('10.20.5.9', 22)).entry, 'serviceentry/default/v4');
    const d = p.decide(tcp('10.20.6.1', 2222));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /address block 10\.20\.0\.0\/16 is declared .* but not on port 2222 \(ports: 22, 80, 443\)/);
  });

  test('IPv6 blocks match IPv6 destinations; IPv4-mapped IPv6 is read as IPv4', () => {
    assert.equal(p.decide(tcp('2001:db8:abcd:12::1', 22)).entry, 'serviceentry/default/v6');
    assert.equal(p.decide(tcp('2001:db8:abce::1', 22)).allowed, false);
    assert.equal(p.decide(tcp('::ffff:10.20.1.1', 22)).entry, 'serviceentry/default/v4');
    assert.equal(p.decide(tcp('::ffff:a14:101', 22)).allowed, true);
  });

  test('a TCP port of an entry with addresses ignores its hosts', () => {
    const byName = p.decide({ host: 'dummy.v4.test', port: 22, protocol: 'TCP', sni: null, address: '8.8.8.8' });
    assert.equal(byName.allowed, false);
    assert.match(byName.reason, /matched by destination address; 8\.8\.8\.8 is not among them/);
    const unresolved = p.decide({ host: 'dummy.v4.test', port: 22, protocol: 'TCP', sni: null, address: null });
    assert.equal(unresolved.allowed, false);
    assert.match(unresolved.reason, /destination address is not known/);
    // any name that resolves into the block is allowed: on a TCP port the address decides
    assert.equal(p.decide({ host: 'other.test', port: 22, protocol: 'TCP', sni: null, address: '10.20.1.1' }).allowed, true);
  });

  test('an HTTP port of such an entry accepts a request to the IP itself; a TLS port never matches by address', () => {
    assert.equal(p.decide(http('10.20.1.1')).entry, 'serviceentry/default/v4');
    assert.equal(p.decide({ host: 'evil.com', port: 80, protocol: 'HTTP', sni: null, address: '10.20.1.1' }).allowed, false);
    assert.equal(p.decide({ host: '10.20.1.1', port: 443, protocol: 'TLS', sni: null, address: null }).allowed, false);
  });

  test('a bare address is one host (/32), not the block around it', () => {
    const q = policy([entry('one', ['one.test'], [[22, 'TCP']], ['10.0.0.5'])]);
    assert.equal(q.decide(tcp('10.0.0.5', 22)).allowed, true);
    assert.equal(q.decide(tcp('10.0.0.6', 22)).allowed, false);
  });
});

describe('egress allowlist: modes', () => {
  test('audit mode lets a blocked request through, marked audited with the REGISTRY_ONLY reason', () => {
    const strict = policy(BASIC);
    const audit = policy(BASIC, 'REGISTRY_ONLY', true);
    const blocked = strict.decide(connect('httpbin.org', 443, 'evil.com'));
    const audited = audit.decide(connect('httpbin.org', 443, 'evil.com'));
    assert.equal(audited.allowed, true);
    assert.equal(audited.audited, true);
    assert.equal(audited.reason, blocked.reason);
    const ok = audit.decide(http('httpbin.org'));
    assert.equal(ok.allowed, true);
    assert.equal(ok.audited, false);
    assert.equal(ok.entry, 'serviceentry/default/httpbin');
  });

  test('ALLOW_ANY allows undeclared hosts and still names the entry when one matches', () => {
    const any = policy(BASIC, 'ALLOW_ANY');
    const d = any.decide(http('evil.com'));
    assert.equal(d.allowed, true);
    assert.equal(d.audited, false);
    assert.equal(d.entry, null);
    assert.match(d.reason, /ALLOW_ANY.*no ServiceEntry declares host evil\.com/);
    assert.equal(any.decide(http('httpbin.org')).entry, 'serviceentry/default/httpbin');
    assert.equal(any.decide(tcp('198.51.100.1', 22)).allowed, true);
  });

  test('with no entries, REGISTRY_ONLY blocks everything', () => {
    const none = policy([]);
    assert.equal(none.decide(http('httpbin.org')).allowed, false);
    assert.equal(none.decide(tcp('10.0.0.1', 22)).allowed, false);
  });
});

describe('egress allowlist: bad config is rejected naming the entry and field', () => {
  function rejects(e: EgressEntry, field: string, text: RegExp): void {
    const errs = validateEgress({ mode: 'REGISTRY_ONLY', audit: false, entries: [e] });
    assert.equal(errs.length, 1, errs.map((x) => x.message).join('\n'));
    assert.equal(errs[0].source, e.source);
    assert.equal(errs[0].field, field);
    assert.match(errs[0].reason, text);
    assert.throws(() => policy([e]), (err: unknown) => err instanceof EgressConfigError && err.message.startsWith(`${e.source} ${field}: `));
  }

  test('a host with a scheme', () => {
    rejects(entry('scheme', ['good.io', 'https://x.io'], [[443, 'HTTPS']]), 'spec.hosts[1]', /has a scheme; write the bare host name "x\.io"/);
  });

  test('hosts that are ports, paths, IPs, "*", partial wildcards or numeric names', () => {
    rejects(entry('h', ['x.io:443'], [[443, 'HTTPS']]), 'spec.hosts[0]', /has a port/);
    rejects(entry('h', ['x.io/path'], [[443, 'HTTPS']]), 'spec.hosts[0]', /has a "\/"/);
    rejects(entry('h', ['10.0.0.1'], [[443, 'HTTPS']]), 'spec.hosts[0]', /is an IP address; .*spec\.addresses/);
    rejects(entry('h', ['2001:db8::1'], [[443, 'HTTPS']]), 'spec.hosts[0]', /is an IP address/);
    rejects(entry('h', ['*'], [[443, 'HTTPS']]), 'spec.hosts[0]', /ALLOW_ANY/);
    rejects(entry('h', ['*foo.com'], [[443, 'HTTPS']]), 'spec.hosts[0]', /whole-label wildcards/);
    rejects(entry('h', ['a.*.com'], [[443, 'HTTPS']]), 'spec.hosts[0]', /only be the first label/);
    rejects(entry('h', ['127.1'], [[443, 'HTTPS']]), 'spec.hosts[0]', /numeric/);
    rejects(entry('h', ['bad_host!.io'], [[443, 'HTTPS']]), 'spec.hosts[0]', /characters not allowed/);
  });

  test('a CIDR with a "/" but no prefix length, or a prefix past the family, or not an address', () => {
    rejects(entry('c', ['c.io'], [[22, 'TCP']], ['10.0.0.0/']), 'spec.addresses[0]', /not an IP address or CIDR block/);
    rejects(entry('c', ['c.io'], [[22, 'TCP']], ['10.0.0.0/8', '10.0.0.0/33']), 'spec.addresses[1]', /prefix length/);
    rejects(entry('c', ['c.io'], [[22, 'TCP']], ['2001:db8::/129']), 'spec.addresses[0]', /not an IP address/);
    rejects(entry('c', ['c.io'], [[22, 'TCP']], ['github.com']), 'spec.addresses[0]', /not an IP address/);
    rejects(entry('c', ['c.io'], [[22, 'TCP']], ['010.0.0.0/8']), 'spec.addresses[0]', /not an IP address/);
  });

  test('a port without a protocol, an unknown protocol, a bad or repeated number', () => {
    const noProto = entry('p', ['p.io'], [[80, 'HTTP'], [8080, '']]);
    rejects(noProto, 'spec.ports[1].protocol', /port 8080 has no protocol; set one of HTTP/);
    rejects(entry('p', ['p.io'], [[53, 'UDP']]), 'spec.ports[0].protocol', /"UDP" is not a protocol/);
    rejects(entry('p', ['p.io'], [[0, 'TCP']]), 'spec.ports[0].number', /not a port number/);
    rejects(entry('p', ['p.io'], [[80, 'HTTP'], [80, 'TCP']]), 'spec.ports[1].number', /listed twice/);
    rejects(entry('p', ['p.io'], []), 'spec.ports', /at least one port/);
  });

  test('a bad mode is rejected; every problem is reported, the thrown one says how many more', () => {
    assert.throws(() => compileEgress({ mode: 'DENY_ALL' as 'ALLOW_ANY', audit: false, entries: [] }), /outboundTrafficPolicy\.mode: "DENY_ALL" is not a mode/);
    const bad = [entry('a', ['https://a.io'], [[80, '']]), entry('b', ['b.io'], [[22, 'TCP']], ['1.2.3.4/'])];
    const errs = validateEgress({ mode: 'REGISTRY_ONLY', audit: false, entries: bad });
    assert.deepEqual(errs.map((e) => `${e.source} ${e.field}`), [
      'serviceentry/default/a spec.hosts[0]', 'serviceentry/default/a spec.ports[0].protocol', 'serviceentry/default/b spec.addresses[0]',
    ]);
    assert.throws(() => policy(bad), /and 2 more problems/);
    const problem = egressProblem(errs[0]);
    assert.equal(problem.resource, 'ServiceEntry/default/a');
    assert.equal(problem.field, 'spec.hosts[0]');
    assert.equal(problem.code, 'MG_CONFIG_HOST');
  });

  test('a ServiceEntry port without protocol, loaded from YAML, is rejected with its file field', () => {
    const entries = entriesFromYaml('se.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: noproto, namespace: apps}
spec:
  hosts: [api.vendor.com]
  ports:
  - {number: 443, name: https}
`);
    assert.throws(() => policy(entries), /^EgressConfigError: serviceentry\/apps\/noproto spec\.ports\[0\]\.protocol: port 443 has no protocol/);
  });
});

describe('egress allowlist: the Istio samples, enforced as written', () => {
  test('external/github.yaml: HTTPS to github.com, SSH to GitHub\'s published addresses', () => {
    const p = policy(sampleEntries('external/github.yaml'));
    assert.equal(p.size, 2);
    assert.equal(p.decide(connect('github.com', 443, 'github.com')).entry, 'serviceentry/default/github-https');
    assert.equal(p.decide(connect('api.github.com', 443, null)).allowed, false);
    assert.equal(p.decide(connect('github.com', 443, 'gist.github.com')).allowed, false);
    assert.equal(p.decide(http('github.com')).allowed, false);
    // SSH: 140.82.112.0/20 covers 140.82.112.0 - 140.82.127.255; single addresses are /32
    assert.equal(p.decide(tcp('140.82.121.4', 22)).entry, 'serviceentry/default/github-tcp');
    assert.equal(p.decide(tcp('140.82.127.255', 22)).allowed, true);
    assert.equal(p.decide(tcp('140.82.128.0', 22)).allowed, false);
    assert.equal(p.decide(tcp('13.229.188.59', 22)).allowed, true);
    assert.equal(p.decide(tcp('13.229.188.60', 22)).allowed, false);
    assert.equal(p.decide(tcp('185.199.111.153', 22)).allowed, true);
    assert.equal(p.decide(tcp('140.82.121.4', 443)).allowed, false);
    assert.equal(p.decide({ host: 'github.com', port: 22, protocol: 'TCP', sni: null, address: '140.82.113.3' }).allowed, true);
  });

  test('external/aptget.yaml: plain HTTP to the Debian/Ubuntu mirrors only', () => {
    const p = policy(sampleEntries('external/aptget.yaml'));
    for (const h of ['deb.debian.org', 'cdn-fastly.deb.debian.org', 'security.debian.org', 'archive.ubuntu.com', 'security.ubuntu.com']) {
      assert.equal(p.decide(http(h)).entry, 'serviceentry/default/make-aptget-work', h);
    }
    assert.equal(p.decide(http('ftp.debian.org')).allowed, false);
    assert.equal(p.decide(connect('deb.debian.org', 443, 'deb.debian.org')).allowed, false);
  });

  test('external/pypi.yaml: three HTTPS hosts, each its own entry', () => {
    const p = policy(sampleEntries('external/pypi.yaml'));
    assert.equal(p.decide(connect('pypi.org', 443, 'pypi.org')).entry, 'serviceentry/default/pypi-https');
    assert.equal(p.decide(connect('files.pythonhosted.org', 443, 'files.pythonhosted.org')).entry, 'serviceentry/default/pythonhosted-https');
    assert.equal(p.decide(connect('pypi.python.org', 443, null)).entry, 'serviceentry/default/python-https');
    // allowed hosts of different entries cannot vouch for each other's SNI
    assert.equal(p.decide(connect('pypi.org', 443, 'files.pythonhosted.org')).allowed, false);
    assert.equal(p.decide(http('pypi.org')).allowed, false);
    assert.equal(p.decide(connect('test.pypi.org', 443, null)).allowed, false);
  });

  test('bookinfo egress-rule-google-apis.yaml: HTTP on 80 (routed to 443 with TLS origination) and HTTPS on 443', () => {
    const p = policy(sampleEntries('bookinfo/networking/egress-rule-google-apis.yaml'));
    assert.equal(p.size, 1);
    const plain = p.decide(http('www.googleapis.com'));
    assert.equal(plain.entry, 'serviceentry/default/googleapis');
    assert.equal(plain.resolution, 'DNS');
    assert.equal(p.decide(connect('www.googleapis.com', 443, 'www.googleapis.com')).allowed, true);
    assert.equal(p.decide(http('www.googleapis.com', 443)).allowed, false);
    assert.equal(p.decide(http('storage.googleapis.com')).allowed, false);
    assert.match(p.decide(http('www.googleapis.com', 8080)).reason, /not on port 8080 \(ports: 80, 443\)/);
  });
});

describe('egress allowlist: size does not change answers', () => {
  test('5,000 entries of each kind answer as a small config does', () => {
    const many: EgressEntry[] = [];
    for (let i = 0; i < 5000; i++) {
      many.push(entry(`e${i}`, [`h${i}.exact.test`], [[443, 'HTTPS']]));
      many.push(entry(`w${i}`, [`*.w${i}.wild.test`], [[443, 'HTTPS']]));
      many.push(entry(`c${i}`, [`c${i}.cidr.test`], [[22, 'TCP']], [`10.${i >> 8}.${i & 255}.0/24`]));
    }
    const p = policy(many);
    assert.equal(p.size, 15000);
    assert.equal(p.decide(connect('h4999.exact.test', 443, null)).entry, 'serviceentry/default/e4999');
    assert.equal(p.decide(connect('a.b.w4999.wild.test', 443, null)).entry, 'serviceentry/default/w4999');
    assert.equal(p.decide(connect('w4999.wild.test', 443, null)).allowed, false);
    assert.equal(p.decide(tcp('10.19.135.77', 22)).entry, 'serviceentry/default/c4999');
    assert.equal(p.decide(tcp('10.19.136.1', 22)).allowed, false);
    assert.equal(p.decide(http('h5000.exact.test', 443)).allowed, false);
  });
});

describe('egress allowlist: STATIC endpoints', () => {
  const mongo: EgressEntry = {
    ...entry('mongo', ['mongo.partner.example'], [[27018, 'TLS']]),
    resolution: 'STATIC',
    endpoints: [{ address: '203.0.113.10', ports: {} }, { address: '2001:db8::11', ports: { 'tls-27018': 27019 } }],
  };

  test('an allowed destination of a STATIC entry carries its endpoints, the port mapped by the port\'s name', () => {
    const p = policy([...BASIC, mongo]);
    const d = p.decide(connect('mongo.partner.example', 27018, null));
    assert.equal(d.allowed, true);
    assert.deepEqual(d.targets, [{ address: '203.0.113.10', port: 27018 }, { address: '2001:db8::11', port: 27019 }]);
    // Other resolutions have none: the tunnel goes to the named host.
    assert.equal(p.decide(connect('api.partner.io', 443, null)).targets ?? null, null);
    assert.equal(p.decide(connect('other.example', 443, null)).targets ?? null, null);
  });

  test('an endpoint that is not an IP address, or a port mapping that is not a port, is an error at the field', () => {
    const bad: EgressEntry = { ...mongo, endpoints: [{ address: 'mongo-1.partner.example', ports: {} }, { address: '203.0.113.12', ports: { 'tls-27018': 70000 } }] };
    const errors = validateEgress({ mode: 'REGISTRY_ONLY', audit: false, entries: [bad] });
    assert.deepEqual(errors.map((e) => e.field), ['spec.endpoints[0].address', 'spec.endpoints[1].ports.tls-27018']);
    assert.match(errors[0].message, /"mongo-1\.partner\.example" is not an IP address/);
  });
});

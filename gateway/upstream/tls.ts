// Upstream TLS as DestinationRule `tls` describes it (SIMPLE / MUTUAL), compiled once per
// cluster into a shared SecureContext: files are read when the config is applied (a file
// that cannot be read or a key that does not fit its certificate fails the update, so the
// proxy NACKs), never per connection.
//
// Identity check: with `subjectAltNames`, the upstream certificate must carry one of them
// (exact DNS, URI or IP SAN; a `*.suffix` DNS SAN covers exactly one label, so
// `*.example.com` does not vouch for `a.b.example.com`). Without them, the certificate must
// be valid for the SNI we send. SANs containing NUL bytes fail the check outright.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { PeerCertificate, SecureContext } from 'node:tls';
import type { Cluster } from '../../api/proxyconfig.ts';

export interface TlsSetup {
  secureContext: SecureContext;
  /** SNI sent; '' = none. */
  servername: string;
  rejectUnauthorized: boolean;
  checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
}

function readPem(cluster: Cluster, field: string, inline: string | null, file: string | null): string | null {
  if (inline !== null) return inline;
  if (file === null) return null;
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cluster ${cluster.name}: cannot read tls ${field} file ${file}: ${(err as Error).message}`);
  }
}

/** Builds the cluster's TLS client setup; throws with a message naming the cluster and field. */
export function buildTls(cluster: Cluster): TlsSetup | null {
  const t = cluster.tls;
  if (t === null) return null;
  const ca = readPem(cluster, 'caCertificates', t.caPem, t.caFile);
  const mutual = t.mode === 'MUTUAL';
  const cert = mutual ? readPem(cluster, 'clientCertificate', t.certPem, t.certFile) : null;
  const key = mutual ? readPem(cluster, 'privateKey', t.keyPem, t.keyFile) : null;
  if (mutual && (cert === null || key === null)) {
    throw new Error(`cluster ${cluster.name}: tls mode MUTUAL needs a client certificate and private key`);
  }
  let secureContext: SecureContext;
  try {
    secureContext = tls.createSecureContext({
      ...(ca !== null ? { ca } : {}),
      ...(cert !== null ? { cert } : {}),
      ...(key !== null ? { key } : {}),
    });
  } catch (err) {
    throw new Error(`cluster ${cluster.name}: tls material is not usable: ${(err as Error).message}`);
  }
  const servername = t.sni;
  const sans = t.subjectAltNames.map((s) => s.toLowerCase());
  let check: TlsSetup['checkServerIdentity'];
  if (t.insecureSkipVerify) check = acceptAnyIdentity;
  else if (sans.length > 0) check = (_host, peer) => checkSans(peer, sans);
  else check = (host, peer) => tls.checkServerIdentity(servername || host, peer);
  return { secureContext, servername, rejectUnauthorized: !t.insecureSkipVerify, checkServerIdentity: check };
}

function acceptAnyIdentity(): undefined { return undefined; }

/** Node's `subjectaltname`: `DNS:a, URI:spiffe://x, IP Address:1.2.3.4`; odd values come JSON-quoted. */
export function parseSubjectAltNames(s: string | undefined): { type: string; value: string }[] | null {
  const out: { type: string; value: string }[] = [];
  if (!s) return out;
  let at = 0;
  while (at < s.length) {
    const colon = s.indexOf(':', at);
    if (colon === -1) return null;
    const type = s.slice(at, colon);
    let value: string;
    let next: number;
    if (s[colon + 1] === '"') {
      // A JSON string: find its closing quote, skipping escapes.
      let i = colon + 2;
      while (i < s.length && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
      try { value = JSON.parse(s.slice(colon + 1, i + 1)) as string; } catch { return null; }
      next = i + 1;
    } else {
      const comma = s.indexOf(', ', colon);
      next = comma === -1 ? s.length : comma;
      value = s.slice(colon + 1, next);
    }
    out.push({ type, value });
    at = next;
    if (s.startsWith(', ', at)) at += 2;
  }
  return out;
}

export function checkSans(peer: PeerCertificate, wanted: string[]): Error | undefined {
  const sans = parseSubjectAltNames(peer.subjectaltname);
  if (sans === null) return new Error('upstream certificate subjectAltName cannot be parsed');
  for (const san of sans) {
    if (san.value.includes('\0')) return new Error('upstream certificate has a SAN with a NUL byte');
  }
  for (const san of sans) {
    const v = san.value.toLowerCase();
    for (const w of wanted) {
      if (san.type === 'DNS' ? dnsSanMatches(v, w) : v === w) return undefined;
    }
  }
  return new Error(`upstream certificate SANs do not include any of: ${wanted.join(', ')}`);
}

/** Exact, or a leading `*.` standing for exactly one non-empty label. */
export function dnsSanMatches(certSan: string, wanted: string): boolean {
  if (certSan === wanted) return true;
  if (!certSan.startsWith('*.')) return false;
  const suffix = certSan.slice(1);
  if (!wanted.endsWith(suffix)) return false;
  const label = wanted.slice(0, wanted.length - suffix.length);
  return label.length > 0 && !label.includes('.');
}

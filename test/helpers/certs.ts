// Test certificates made on the fly with node-forge: a CA and leaf certificates it signs,
// so TLS tests run against real certificate chains without files in the repo.
import forge from 'node-forge';
import { generateKeyPairSync } from 'node:crypto';

export interface Pem { certPem: string; keyPem: string }
export interface TestCA extends Pem { key: forge.pki.rsa.PrivateKey; cert: forge.pki.Certificate }

let serial = 1;
// Keys come from node's native crypto (forge's JS RSA generation is slow); 2048 bits is
// the least OpenSSL 3 accepts at its default security level.
function newKeys(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const priv = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  return { privateKey: priv, publicKey: forge.pki.setRsaPublicKey(priv.n, priv.e) };
}

function newCert(publicKey: forge.pki.PublicKey, cn: string, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = (serial++).toString(16).padStart(2, '0') + Date.now().toString(16);
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: cn }]);
  return cert;
}

export function makeCA(cn = 'meshgate test CA'): TestCA {
  const keys = newKeys();
  const cert = newCert(keys.publicKey, cn, 365);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return {
    key: keys.privateKey,
    cert,
    certPem: forge.pki.certificateToPem(cert),
    keyPem: forge.pki.privateKeyToPem(keys.privateKey),
  };
}

export interface LeafOptions {
  dnsNames?: string[];
  ips?: string[];
  /** SPIFFE or other URI SANs. */
  uris?: string[];
  client?: boolean;
}

export function issueCert(ca: TestCA, cn: string, opts: LeafOptions = {}): Pem {
  const keys = newKeys();
  const cert = newCert(keys.publicKey, cn, 30);
  cert.setIssuer(ca.cert.subject.attributes);
  const altNames: { type: number; value?: string; ip?: string }[] = [];
  for (const d of opts.dnsNames ?? []) altNames.push({ type: 2, value: d });
  for (const ip of opts.ips ?? []) altNames.push({ type: 7, ip });
  for (const u of opts.uris ?? []) altNames.push({ type: 6, value: u });
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: !opts.client, clientAuth: true },
    ...(altNames.length ? [{ name: 'subjectAltName', altNames }] : []),
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey) };
}

/** A Kubernetes `kubernetes.io/tls` Secret as YAML, for credentialName tests. */
export function tlsSecretYaml(name: string, namespace: string, pem: Pem, caPem?: string): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Secret',
    'type: kubernetes.io/tls',
    'metadata:',
    `  name: ${name}`,
    `  namespace: ${namespace}`,
    'data:',
    `  tls.crt: ${b64(pem.certPem)}`,
    `  tls.key: ${b64(pem.keyPem)}`,
    ...(caPem ? [`  ca.crt: ${b64(caPem)}`] : []),
    '',
  ].join('\n');
}

// A certificate made fresh for each run (never checked in): self-signed, for the host the
// scenarios use and for 127.0.0.1, so nginx, meshgate and the direct upstream all serve the
// same chain and the same key size — the TLS cost is then comparable.
import forge from 'node-forge';
import { generateKeyPairSync } from 'node:crypto';

export interface Pem { certPem: string; keyPem: string }

export function selfSigned(host: string): Pem {
  // node's native RSA generation; forge's JavaScript one takes seconds.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = '01' + Date.now().toString(16);
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const name = [{ name: 'commonName', value: host }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: host }, { type: 2, value: `*.${host}` }, { type: 7, ip: '127.0.0.1' }] },
  ]);
  cert.sign(key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

/** A Kubernetes `kubernetes.io/tls` Secret, which a Gateway's `credentialName` names. */
export function tlsSecretYaml(name: string, namespace: string, pem: Pem): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return `apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: ${name}
  namespace: ${namespace}
data:
  tls.crt: ${b64(pem.certPem)}
  tls.key: ${b64(pem.keyPem)}
`;
}

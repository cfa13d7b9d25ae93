// Host name rules shared by validation and translation, following Istio:
// a short name is qualified with the namespace of the resource that wrote it
// (`reviews` in `default` → `reviews.default.svc.cluster.local`); names with a dot,
// wildcards and `*` stay as written. Everything is compared lower-cased (DNS is
// case-insensitive; comparing case-sensitively in one place and not another is
// CVE-2021-39155).

export const CLUSTER_DOMAIN = 'svc.cluster.local';

export function qualifyHost(host: string, namespace: string): string {
  const h = host.toLowerCase();
  if (h === '*' || h.includes('.') || h.startsWith('*')) return h;
  return `${h}.${namespace}.${CLUSTER_DOMAIN}`;
}

/** True when `host` (exact name) is matched by `pattern` (exact, `*.suffix` or `*`). */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*')) {
    // `*.example.com` matches `a.example.com` and `a.b.example.com` as in Istio/Envoy
    // virtual host domains (not as in TLS SAN matching, which is one label only).
    const suffix = pattern.slice(1);
    return host.length > suffix.length && host.endsWith(suffix);
  }
  return pattern === host;
}

/**
 * The intersection of two host patterns, as Istio computes VirtualService hosts against
 * Gateway server hosts: the more specific of the two when one covers the other, else null.
 */
export function intersectHosts(a: string, b: string): string | null {
  if (a === b) return a;
  if (hostMatches(a, b) && !b.startsWith('*')) return b;
  if (hostMatches(b, a) && !a.startsWith('*')) return a;
  if (a.startsWith('*') && b.startsWith('*')) {
    // both wildcards: the longer suffix is the narrower set
    if (a === '*') return b;
    if (b === '*') return a;
    if (b.endsWith(a.slice(1))) return b;
    if (a.endsWith(b.slice(1))) return a;
  }
  return null;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** A host as allowed in VirtualService/Gateway/ServiceEntry hosts: DNS name, `*.suffix` or `*`. */
export function isValidHost(host: string): boolean {
  if (host === '*') return true;
  if (host.length === 0 || host.length > 253) return false;
  let h = host.toLowerCase();
  if (h.startsWith('*.')) h = h.slice(2);
  else if (h.startsWith('*')) h = h.slice(1); // Istio allows `*foo.com`-style prefixes in some places
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.split('.').every((l) => LABEL.test(l));
}

/** Splits a Gateway server host `ns/host` into its namespace part (or `*`) and host. */
export function splitNamespacedHost(h: string): { namespace: string; host: string } {
  const i = h.indexOf('/');
  if (i < 0) return { namespace: '*', host: h.toLowerCase() };
  return { namespace: h.slice(0, i), host: h.slice(i + 1).toLowerCase() };
}

// How the data plane turns host names into addresses: for ServiceEntry clusters with
// `resolution: DNS`, for the egress forward proxy's CONNECT tunnels and passthrough
// requests, and for the CIDR check of a tunnel's destination. One Resolver per process, so
// every connection the proxy makes agrees on what a name means.
//
// Overrides (`--resolve host=addr[,addr]`, like curl's --resolve) pin names to addresses
// before DNS is asked. Tests use them to make "external" hosts local servers; operators use
// them the way they would use /etc/hosts, without touching the machine's resolver.
import dns from 'node:dns';
import net from 'node:net';

export interface Resolver {
  /** node's `dns.lookup` signature, for the `lookup` option of net/tls/http2/undici connects. */
  readonly lookup: net.LookupFunction;
  /** Every address of `host` (an IP literal resolves to itself); overrides first. Rejects (code ENOTFOUND) when there is none. */
  resolve(host: string): Promise<string[]>;
  /** The pinned names, for the admin port. */
  readonly overrides: ReadonlyMap<string, readonly string[]>;
}

function notFound(host: string): NodeJS.ErrnoException {
  const err = new Error(`getaddrinfo ENOTFOUND ${host}`) as NodeJS.ErrnoException;
  err.code = 'ENOTFOUND';
  (err as unknown as { hostname: string }).hostname = host;
  return err;
}

function bareHost(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

export function createResolver(overrides: ReadonlyMap<string, readonly string[]> = new Map()): Resolver {
  const pinned = new Map<string, readonly string[]>();
  for (const [h, addrs] of overrides) pinned.set(bareHost(h), addrs.slice());

  const lookup = ((hostname: string, options: dns.LookupOptions | ((...a: unknown[]) => void), callback?: (...a: unknown[]) => void): void => {
    const cb = (typeof options === 'function' ? options : callback) as (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;
    const opts: dns.LookupOptions = typeof options === 'object' && options !== null ? options : {};
    const addrs = pinned.get(bareHost(hostname));
    if (addrs === undefined) {
      dns.lookup(hostname, opts, cb as never);
      return;
    }
    const wanted = opts.family === 4 || opts.family === 'IPv4' ? 4 : opts.family === 6 || opts.family === 'IPv6' ? 6 : 0;
    const list = addrs.map((address) => ({ address, family: net.isIPv6(address) ? 6 : 4 })).filter((a) => wanted === 0 || a.family === wanted);
    process.nextTick(() => {
      if (list.length === 0) cb(notFound(hostname), opts.all ? [] : '', 0);
      else if (opts.all) cb(null, list);
      else cb(null, list[0].address, list[0].family);
    });
  }) as net.LookupFunction;

  return {
    lookup,
    overrides: pinned,
    async resolve(host: string): Promise<string[]> {
      const h = bareHost(host);
      if (net.isIP(h) !== 0) return [h];
      const addrs = pinned.get(h);
      if (addrs !== undefined) {
        if (addrs.length === 0) throw notFound(host);
        return addrs.slice();
      }
      const found = await dns.promises.lookup(h, { all: true, verbatim: true });
      if (found.length === 0) throw notFound(host);
      return found.map((a) => a.address);
    },
  };
}

/**
 * `--resolve` values: `host=addr[,addr…]`, repeatable. Throws an Error naming the bad value
 * (the CLI turns it into a usage error).
 */
export function parseResolveFlags(values: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new Error(`"${v}" is not host=address[,address]`);
    const host = bareHost(v.slice(0, eq).trim());
    if (host === '' || host.includes('/') || host.includes(':') && net.isIP(host) === 0) throw new Error(`"${v}": "${v.slice(0, eq)}" is not a host name`);
    const addrs = v.slice(eq + 1).split(',').map((a) => a.trim()).filter((a) => a !== '');
    if (addrs.length === 0) throw new Error(`"${v}" names no address`);
    for (const a of addrs) if (net.isIP(a) === 0) throw new Error(`"${v}": "${a}" is not an IP address`);
    out.set(host, [...(out.get(host) ?? []), ...addrs]);
  }
  return out;
}

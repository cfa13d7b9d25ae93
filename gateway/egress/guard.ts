// Where the egress proxy must never connect on a client's behalf, whatever the allowlist
// says: a forward proxy that passes traffic through (ALLOW_ANY, audit mode, wildcard
// entries) is an SSRF pivot unless it refuses
//   - link-local addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254): cloud metadata
//     services hand out credentials there;
//   - unspecified addresses (0.0.0.0/8, ::): Linux connects them to the local machine;
//   - its own ports on loopback (admin 15000 with /config_dump and its key material, health,
//     metrics, the forward proxy itself — a loop — and the Gateway listeners).
// Other loopback ports stay reachable: a workload's own sidecar or test servers live there,
// and an operator allows them explicitly with a ServiceEntry like any other destination.
//
// The check runs on the address actually connected to: on IP literals before anything
// happens, and inside the lookup of passthrough destinations and tunnels, so a name that
// resolves somewhere harmless first and to 169.254.169.254 later (DNS rebinding) is still
// refused.
import net, { BlockList, type LookupFunction } from 'node:net';

const ALWAYS = new BlockList();
ALWAYS.addSubnet('169.254.0.0', 16, 'ipv4');
ALWAYS.addSubnet('0.0.0.0', 8, 'ipv4');
ALWAYS.addSubnet('fe80::', 10, 'ipv6');
ALWAYS.addAddress('fd00:ec2::254', 'ipv6');
ALWAYS.addAddress('::', 'ipv6');

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** `::ffff:169.254.169.254` is 169.254.169.254 to the kernel: check it as such. */
function plain(address: string): { address: string; family: 'ipv4' | 'ipv6' } | null {
  let a = address;
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  const v = net.isIP(a);
  if (v === 4) return { address: a, family: 'ipv4' };
  if (v !== 6) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped !== null) return { address: mapped[1], family: 'ipv4' };
  return { address: a, family: 'ipv6' };
}

export class DestinationGuard {
  /** Ports this process serves on (admin, health, metrics, forward proxy, listeners). */
  private readonly own = new Set<number>();

  /** Adds ports this process listens on; 0 (not bound) is ignored. */
  addOwnPorts(ports: Iterable<number>): void {
    for (const p of ports) if (p > 0) this.own.add(p);
  }

  ownPorts(): number[] {
    return [...this.own].sort((a, b) => a - b);
  }

  /** Null when the proxy may connect to address:port for a client; else why not. */
  check(address: string, port: number): string | null {
    const p = plain(address);
    if (p === null) return null;
    if (ALWAYS.check(p.address, p.family)) {
      return `${address} is a link-local or unspecified address (cloud metadata, this machine); the egress proxy never connects there for a client`;
    }
    if (this.own.has(port) && LOOPBACK.check(p.address, p.family)) {
      return `${address}:${port} is this proxy's own port (admin, health, metrics, listeners or the forward proxy itself)`;
    }
    return null;
  }

  /**
   * `inner` with the addresses the guard refuses for `port` left out; when none is left the
   * lookup fails (code EGRESSFORBIDDEN) with the reason, so the connect fails before a SYN.
   */
  lookup(inner: LookupFunction, port: number): LookupFunction {
    return ((hostname: string, options: unknown, callback: (...a: unknown[]) => void) => {
      const cb = typeof options === 'function' ? options as (...a: unknown[]) => void : callback;
      const opts = (typeof options === 'object' && options !== null ? options : {}) as { all?: boolean };
      inner(hostname, { ...opts, all: true } as never, ((err: NodeJS.ErrnoException | null, addrs: { address: string; family: number }[]) => {
        if (err !== null) { cb(err); return; }
        let why = '';
        const ok = addrs.filter((a) => {
          const w = this.check(a.address, port);
          if (w !== null) why = w;
          return w === null;
        });
        if (ok.length === 0) {
          const e = new Error(why === '' ? `${hostname} has no address` : `${hostname}: ${why}`) as NodeJS.ErrnoException;
          e.code = why === '' ? 'ENOTFOUND' : 'EGRESSFORBIDDEN';
          cb(e);
          return;
        }
        if (opts.all) cb(null, ok);
        else cb(null, ok[0].address, ok[0].family);
      }) as never);
    }) as LookupFunction;
  }
}

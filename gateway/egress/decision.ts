// How the forward proxy words, logs and counts its decisions, shared by plain requests
// (proxy.ts) and tunnels (tunnel.ts).
import type { EgressDecision } from '../../policies/egress.ts';
import { clientAddress } from '../headers.ts';
import type { EgressVerdict } from '../metrics.ts';
import type { EgressRuntime } from './runtime.ts';

/** The header every refusal carries, so a client (or a test) can tell policy from upstream 502s. */
export const EGRESS_HEADER = 'x-meshgate-egress';

/** Destination as the client named it, IPv6 in brackets: `api.example.com:443`, `[::1]:80`. */
export function shownDestination(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The 502 body: names host, port and the reason, as the issue asks. */
export function blockedBody(host: string, port: number, reason: string): string {
  return `egress to ${shownDestination(host, port)} blocked: ${reason}\n`;
}

/**
 * Logs and counts one decision. Refusals at warn (someone tried to reach what the
 * allowlist does not hold), audited ones at info as "would be blocked", allowed ones at debug.
 */
export function noteDecision(rt: EgressRuntime, host: string, port: number, protocol: 'http' | 'connect', d: EgressDecision, client: string | undefined, sni: string | null): EgressVerdict {
  const verdict: EgressVerdict = !d.allowed ? 'blocked' : d.audited ? 'audited' : 'allowed';
  const log = rt.shared.log;
  // Allowed requests are the common case: no log object is built unless debug is on.
  if (log !== null && (verdict !== 'allowed' || log.isLevelEnabled('debug'))) {
    const fields = { host, port, protocol, reason: d.reason, entry: d.entry, client: clientAddress(client), ...(sni !== null ? { sni } : {}) };
    if (verdict === 'blocked') log.warn(fields, 'egress blocked');
    else if (verdict === 'audited') log.info(fields, 'egress would be blocked (allowed by audit mode)');
    else log.debug(fields, 'egress allowed');
  }
  rt.shared.metrics?.egressDecision(host, port, protocol, verdict);
  return verdict;
}


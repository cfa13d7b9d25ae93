// The HTTP/1.1 fast path (downstream codec in conn.ts, upstream client in client.ts) is
// switched by MESHGATE_H1_FASTPATH: `1` on, `0` off, unset: the default below. Read when a
// listener or cluster is built, so a process (or a test) decides once, before it serves.
const DEFAULT_ON = true;

export function h1FastPathEnabled(): boolean {
  const v = process.env.MESHGATE_H1_FASTPATH;
  if (v === '1') return true;
  if (v === '0') return false;
  return DEFAULT_ON;
}

/**
 * What the fast path did in this process, for tests and the curious: requests it served,
 * connections it handed to node's server, requests its upstream client sent, response heads
 * it passed to the client as bytes (no header map).
 */
export const h1Stats = { served: 0, fallbacks: 0, upstreamRequests: 0, rawHeads: 0 };

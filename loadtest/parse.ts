// Reading the load generators' output into one shape, so a wrk run against nginx and an
// h2load run against meshgate land in the same table. Pure functions over strings: the
// tests feed them output captured from real runs, without needing the tools installed.

export interface LoadResult {
  /** Completed requests (any status). */
  requests: number;
  /** Measured duration in seconds, as the tool reports it. */
  seconds: number;
  rps: number;
  /** Latency percentiles in milliseconds; null when the tool saw no completed request. */
  p50: number | null;
  p90: number | null;
  p99: number | null;
  /** Responses outside 2xx (wrk counts outside 2xx/3xx; no 3xx is expected here). */
  non2xx: number;
  /** Connect, read, write and timeout errors, and requests that never completed. */
  socketErrors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** wrk's duration strings: `134.00us`, `1.31ms`, `2.00s`, `1.02m`. */
export function wrkDurationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new Error(`not a wrk duration: "${text}"`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

/** `wrk --latency` output. */
export function parseWrk(out: string): LoadResult {
  const done = /(\d+) requests in ([\d.]+\w+),/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!done || !rps) throw new Error(`wrk output has no summary:\n${out.slice(0, 2000)}`);
  const pct = (p: number): number | null => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+\\w+)\\s*$`, 'm').exec(out);
    return m ? wrkDurationMs(m[1]) : null;
  };
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(done[1]),
    seconds: wrkDurationMs(done[2]) / 1000,
    rps: Number(rps[1]),
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0,
  };
}

/** `hey` summary output (the default format). */
export function parseHey(out: string): LoadResult {
  const total = /Total:\s+([\d.]+) secs/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!total || !rps) throw new Error(`hey output has no summary:\n${out.slice(0, 2000)}`);
  const pct = (p: number): number | null => {
    const m = new RegExp(`^\\s+${p}% in ([\\d.]+) secs`, 'm').exec(out);
    return m ? Number(m[1]) * 1000 : null;
  };
  let ok = 0;
  let other = 0;
  const statusBlock = /Status code distribution:\n((?:\s+\[\d+\]\s+\d+ responses\n?)+)/.exec(out);
  for (const m of (statusBlock?.[1] ?? '').matchAll(/\[(\d+)\]\s+(\d+) responses/g)) {
    if (m[1].startsWith('2')) ok += Number(m[2]); else other += Number(m[2]);
  }
  let errors = 0;
  const errorBlock = /Error distribution:\n((?:\s+\[\d+\]\s+.*\n?)+)/.exec(out);
  for (const m of (errorBlock?.[1] ?? '').matchAll(/^\s+\[(\d+)\]\s/gm)) errors += Number(m[1]);
  const seconds = Number(total[1]);
  return {
    requests: ok + other,
    seconds,
    // hey's own Requests/sec counts failed attempts too (a run refused outright reports
    // thousands per second); completed responses over time is what wrk reports.
    rps: seconds > 0 ? (ok + other) / seconds : 0,
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    non2xx: other,
    socketErrors: errors,
  };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/**
 * h2load: the summary for counts and rate, and its `--log-file` (one line per request:
 * start µs, status, elapsed µs) for the percentiles, which the summary does not print.
 */
export function parseH2load(out: string, log: string): LoadResult {
  const fin = /finished in ([\d.]+)(ms|s|m), ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !req) throw new Error(`h2load output has no summary:\n${out.slice(0, 2000)}`);
  const elapsed: number[] = [];
  let logNon2xx = 0;
  for (const line of log.split('\n')) {
    const f = line.split('\t');
    if (f.length < 3) continue;
    const status = Number(f[1]);
    if (status >= 200 && status < 300) elapsed.push(Number(f[2]) / 1000);
    else if (status > 0) logNon2xx++;
  }
  const lat = Float64Array.from(elapsed).sort();
  const non2xx = codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : logNon2xx;
  return {
    requests: Number(req[3]),
    seconds: Number(fin[1]) * UNIT_MS[fin[2]] / 1000,
    rps: Number(fin[3]),
    p50: percentile(lat, 50),
    p90: percentile(lat, 90),
    p99: percentile(lat, 99),
    non2xx,
    // `failed` includes non-2xx; `errored` is its transport-level subset (resets, closed
    // connections, timeouts), which is what the socket-error column means.
    socketErrors: Number(req[6]),
  };
}

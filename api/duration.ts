// Durations as Istio's CRDs accept them: protobuf Duration written in Go's
// time.ParseDuration syntax (`500ms`, `1.5s`, `1m30s`). Negative values, bare numbers and
// spelled-out units are refused, as the Kubernetes API server refuses them.

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3, // Go accepts both the micro sign and the Greek mu
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

// One `<number><unit>` term; the whole string is one or more terms with nothing between.
// Go orders the alternatives so that `ms` wins over `m` followed by `s`.
const TERM = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Longest input we look at; real durations are a handful of characters. */
const MAX_LENGTH = 64;

/** Parses a duration to milliseconds (fractions kept, e.g. `100us` → 0.1), or null if invalid. */
export function parseDuration(s: string): number | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > MAX_LENGTH) return null;
  // `0` alone is the one unitless value Go accepts.
  if (s === '0') return 0;
  let total = 0;
  TERM.lastIndex = 0;
  let at = 0;
  while (at < s.length) {
    TERM.lastIndex = at;
    const m = TERM.exec(s);
    if (m === null) return null;
    total += Number(m[1]) * UNIT_MS[m[2]];
    at = TERM.lastIndex;
  }
  return Number.isFinite(total) ? total : null;
}

/** Formats milliseconds back as a duration string, for messages and config dumps. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  if (Number.isInteger(ms)) return `${ms}ms`;
  return `${Math.round(ms * 1000)}us`;
}

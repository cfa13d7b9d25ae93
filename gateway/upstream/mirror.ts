// Request mirroring (Envoy's shadowing): a copy of the request goes to the mirror cluster
// with `-shadow` appended to the host part of the authority; the response is read and
// dropped. It is fire-and-forget: no retries, nothing waits on it, and its failures are
// only counted (and logged at debug) — the main request never sees them.
import type { Logger } from 'pino';
import type { ClusterRuntime } from './cluster.ts';
import { requestHash } from './lb.ts';
import { admit } from './pool.ts';
import type { Call, FailureKind, Sink } from './pool.ts';
import type { HeaderMap, UpstreamRequest } from './types.ts';

const EMPTY = Buffer.alloc(0);

/** `foo.com` → `foo.com-shadow`; `foo.com:8080` → `foo.com-shadow:8080` (as Envoy). */
export function shadowAuthority(authority: string): string {
  const colon = authority.lastIndexOf(':');
  const bracket = authority.lastIndexOf(']');
  if (colon > bracket && colon !== -1) return `${authority.slice(0, colon)}-shadow${authority.slice(colon)}`;
  return `${authority}-shadow`;
}

class MirrorSink implements Sink {
  readonly c: ClusterRuntime;
  readonly log: Logger | null;
  timer: NodeJS.Timeout | null = null;
  call: Call | null = null;
  finished = false;

  constructor(c: ClusterRuntime, log: Logger | null) {
    this.c = c;
    this.log = log;
  }

  upstreamHeaders(call: Call, status: number, _headers: HeaderMap): void {
    this.c.recordStatus(call.ep, status);
    if (status >= 500) this.c.mirrorErrors++;
  }

  upstreamData(): void {}

  upstreamEnd(): void { this.finish(); }

  upstreamError(call: Call, kind: FailureKind, err: Error): void {
    if (kind !== 'invalid') this.c.recordLocalFailure(call.ep);
    this.fail(err);
  }

  fail(err: Error): void {
    this.c.mirrorErrors++;
    this.log?.debug({ cluster: this.c.name, err: err.message }, 'mirror request failed');
    this.finish();
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.c.done();
  }
}

function onMirrorTimeout(sink: MirrorSink): void {
  sink.timer = null;
  if (sink.finished) return;
  sink.call?.abort();
  sink.fail(new Error('mirror request timed out'));
}

export function mirrorTo(c: ClusterRuntime, up: UpstreamRequest, log: Logger | null): void {
  c.inflight++;
  c.mirrorsSent++;
  const sink = new MirrorSink(c, log);
  const ep = c.picker.pick(requestHash(c.def.lb, up), null);
  if (ep === null) { sink.fail(new Error('no healthy upstream')); return; }
  const call = c.newCall(ep, sink, {
    method: up.method,
    path: up.path,
    authority: shadowAuthority(up.authority),
    headers: up.headers,
    body: up.body ?? EMPTY,
  });
  sink.call = call;
  if (up.timeoutMs !== null && up.timeoutMs > 0) sink.timer = setTimeout(onMirrorTimeout, up.timeoutMs, sink);
  if (!admit(call)) { c.overflows++; sink.fail(new Error('overflow')); }
}

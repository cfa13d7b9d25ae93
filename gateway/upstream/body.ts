// Streaming a downstream request body to one try at a time. Each try gets its own
// Readable that starts pulling from the downstream request only when the transport first
// reads it — i.e. once a connection (or stream) is up. So a try that fails to connect has
// consumed nothing and the request can still be retried; once a byte has been handed to a
// try, it cannot (`consumed > 0`). The downstream request is never destroyed from here:
// a failed try must still leave the client able to receive a local reply.
import { Readable } from 'node:stream';

const kSource = Symbol('meshgate.bodysource');
type TaggedReq = Readable & { [kSource]?: BodySource };

export class BodySource {
  readonly req: TaggedReq;
  consumed = 0;
  /** The downstream request failed (client went away mid-body). */
  failed = false;
  current: TryBody | null = null;

  constructor(req: Readable) {
    this.req = req as TaggedReq;
    this.req[kSource] = this;
  }

  /** A Readable for the next try. */
  open(): TryBody {
    this.detach();
    return new TryBody(this);
  }

  detach(): void {
    const cur = this.current;
    if (cur === null) return;
    this.current = null;
    const req = this.req;
    req.off('data', onSourceData);
    req.off('end', onSourceEnd);
    req.off('error', onSourceError);
    req.off('aborted', onSourceAborted);
    req.pause();
  }
}

export class TryBody extends Readable {
  readonly src: BodySource;
  attached = false;

  constructor(src: BodySource) {
    super();
    this.src = src;
  }

  override _read(): void {
    const src = this.src;
    if (!this.attached) {
      this.attached = true;
      src.current = this;
      const req = src.req;
      if (req.readableEnded) { this.push(null); return; }
      req.on('data', onSourceData);
      req.on('end', onSourceEnd);
      req.on('error', onSourceError);
      req.on('aborted', onSourceAborted);
    }
    if (src.current === this) src.req.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.src.current === this) this.src.detach();
    cb(err);
  }
}

function onSourceData(this: TaggedReq, chunk: Buffer): void {
  const src = this[kSource]!;
  const cur = src.current;
  if (cur === null) return;
  src.consumed += chunk.length;
  if (!cur.push(chunk)) this.pause();
}

function onSourceEnd(this: TaggedReq): void {
  const src = this[kSource]!;
  const cur = src.current;
  if (cur !== null) cur.push(null);
}

function onSourceError(this: TaggedReq, err: Error): void {
  const src = this[kSource]!;
  src.failed = true;
  const cur = src.current;
  src.detach();
  cur?.destroy(err);
}

function onSourceAborted(this: TaggedReq): void {
  onSourceError.call(this, new Error('downstream request aborted'));
}

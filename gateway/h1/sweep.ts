// One unref'd interval timer over a set of members, running while the set is not empty:
// the fast path's periodic checks (idle client connections, idle upstream connections)
// without a timer per connection.
export class Sweep<T> {
  readonly members = new Set<T>();
  private timer: NodeJS.Timeout | null = null;
  private readonly periodMs: number;
  private readonly visit: (members: Set<T>) => void;

  constructor(periodMs: number, visit: (members: Set<T>) => void) {
    this.periodMs = periodMs;
    this.visit = visit;
  }

  add(m: T): void {
    this.members.add(m);
    if (this.timer === null) {
      this.timer = setInterval(this.visit, this.periodMs, this.members);
      this.timer.unref();
    }
  }

  delete(m: T): void {
    if (!this.members.delete(m)) return;
    if (this.members.size === 0 && this.timer !== null) { clearInterval(this.timer); this.timer = null; }
  }
}

// The proxy's side of discovery: connect to pilot, say who we are, apply each pushed
// version and answer ACK or NACK. When pilot goes away the proxy keeps serving the last
// config it applied and reconnects with capped, jittered exponential backoff, telling
// pilot which version it runs so an unchanged config is not pushed again.
import WebSocket from 'ws';
import type { ConfigMessage, ProxyToPilot } from '../api/discovery.ts';
import type { ProxyConfig, ProxyIdentity } from '../api/proxyconfig.ts';
import type { Logger } from '../api/logger.ts';

export interface Applier {
  readonly version: string | null;
  apply(config: ProxyConfig): Promise<void>;
  setConfigProblems(lines: string[]): void;
  setDiscoveryStatus(status: object): void;
}


export interface DiscoveryClientOptions {
  /** `host:port` of pilot's discovery port. */
  pilot: string;
  node: ProxyIdentity;
  dataplane: Applier;
  log?: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

const MAX_CONFIG_MESSAGE = 256 * 1024 * 1024;

export class DiscoveryClient {
  private ws: WebSocket | null = null;
  private closed = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  // Pushes are applied one at a time; if several arrive during an apply, only the newest
  // matters.
  private applying = false;
  private pending: ConfigMessage | null = null;
  private readonly log: Logger;
  private state: { connected: boolean; pilot: string; lastError: string | null; lastNack: string | null; connects: number };

  private readonly opts: DiscoveryClientOptions;

  constructor(opts: DiscoveryClientOptions) {
    this.opts = opts;
    this.log = opts.log ?? { info() {}, warn() {}, error() {} };
    this.state = { connected: false, pilot: opts.pilot, lastError: null, lastNack: null, connects: 0 };
  }

  start(): void {
    this.connect();
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.ws?.terminate();
  }

  private report(): void {
    this.opts.dataplane.setDiscoveryStatus({ ...this.state });
  }

  private connect(): void {
    const ws = new WebSocket(`ws://${this.opts.pilot}/v1/discovery`, { maxPayload: MAX_CONFIG_MESSAGE, handshakeTimeout: 5000 });
    this.ws = ws;
    ws.on('open', () => {
      this.state.connected = true;
      this.state.connects++;
      this.state.lastError = null;
      this.report();
      this.send({ type: 'hello', node: this.opts.node, version: this.opts.dataplane.version });
      this.log.info({ pilot: this.opts.pilot }, 'connected to pilot');
    });
    ws.on('message', (data) => {
      let msg: ConfigMessage;
      try {
        msg = JSON.parse(data.toString()) as ConfigMessage;
      } catch {
        this.log.error({}, 'malformed message from pilot; ignored');
        return;
      }
      if (msg.type !== 'config') return;
      this.failures = 0;
      this.pending = msg;
      void this.drain();
    });
    ws.on('error', (err) => {
      this.state.lastError = err.message;
    });
    ws.on('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      const wasConnected = this.state.connected;
      this.state.connected = false;
      this.report();
      if (this.closed) return;
      if (wasConnected) this.log.warn({ pilot: this.opts.pilot }, 'lost pilot; serving the last applied config while reconnecting');
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const min = this.opts.minBackoffMs ?? 100;
    const max = this.opts.maxBackoffMs ?? 5000;
    const ceiling = Math.min(max, min * 2 ** Math.min(this.failures, 16));
    this.failures++;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.retryTimer.unref?.();
  }

  private send(msg: ProxyToPilot): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private async drain(): Promise<void> {
    if (this.applying) return;
    this.applying = true;
    try {
      while (this.pending) {
        const msg = this.pending;
        this.pending = null;
        try {
          // The same version again carries new problems only: nothing to apply.
          if (msg.version !== this.opts.dataplane.version) await this.opts.dataplane.apply(msg.config);
          this.opts.dataplane.setConfigProblems(msg.problems ?? []);
          this.state.lastNack = null;
          this.send({ type: 'ack', version: msg.version, nonce: msg.nonce });
          for (const p of msg.problems ?? []) if (p.startsWith('error')) this.log.error({}, p);
        } catch (err) {
          const reason = (err as Error).message;
          this.state.lastNack = `${msg.version}: ${reason}`;
          this.log.error({ version: msg.version, reason }, 'config rejected; keeping the previous version');
          this.send({ type: 'nack', version: msg.version, nonce: msg.nonce, error: reason });
        }
        this.report();
      }
    } finally {
      this.applying = false;
    }
  }
}

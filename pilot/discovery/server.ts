// The discovery server: proxies connect over one long-lived WebSocket, say who they are,
// and receive their compiled config whenever it changes. Each push is versioned by a
// content hash (an unchanged config is never re-sent), debounced (a burst of config
// changes is one push), and ACKed or NACKed by the proxy.
//
// This port is plaintext and binds to loopback by default; the mTLS port (15012) comes
// with the CA. Nothing a client sends may crash pilot: messages are size-capped, parsed
// defensively, and a client that misbehaves is disconnected.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { ConfigMessage, ProxyToPilot } from '../../api/discovery.ts';
import type { ProxyConfig, ProxyIdentity } from '../../api/proxyconfig.ts';
import { formatProblem, type Problem } from '../../api/problems.ts';
import type { Logger } from '../../api/logger.ts';
import { translate } from '../translate/index.ts';
import type { ConfigStore, StoreState } from '../store.ts';

export type { Logger } from '../../api/logger.ts';

export interface DiscoveryServerOptions {
  store: ConfigStore;
  host?: string;
  port?: number;
  /** Quiet time after a config change before pushing. */
  debounceMs?: number;
  /** Longest a change waits while changes keep coming. */
  maxDelayMs?: number;
  log?: Logger;
}

export interface ProxyStatus {
  id: string;
  namespace: string;
  labels: Record<string, string>;
  connectedAt: string;
  /** Last version sent, and the last one the proxy acknowledged. */
  sent: string | null;
  acked: string | null;
  /** The reason of the last NACK, until a later version is ACKed. */
  nack: string | null;
}

interface Conn {
  ws: WebSocket;
  node: ProxyIdentity | null;
  status: ProxyStatus | null;
  nonce: string | null;
  /** The problem lines last sent, so a change in problems alone is pushed too. */
  problems: string;
}

/** Largest message a proxy may send (hello, ack, nack). */
const MAX_CLIENT_MESSAGE = 64 * 1024;

const silent: Logger = { info() {}, warn() {}, error() {} };

export function configVersion(config: Omit<ProxyConfig, 'version'>): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 16);
}

export class DiscoveryServer {
  private readonly opts: Required<Omit<DiscoveryServerOptions, 'log'>> & { log: Logger };
  private http: Server | null = null;
  private wss: WebSocketServer | null = null;
  private readonly conns = new Set<Conn>();
  private timer: NodeJS.Timeout | null = null;
  private firstPendingAt = 0;
  private readonly onUpdate = () => this.schedulePush();

  constructor(opts: DiscoveryServerOptions) {
    this.opts = { host: '127.0.0.1', port: 15010, debounceMs: 100, maxDelayMs: 1000, log: silent, ...opts } as DiscoveryServer['opts'];
  }

  async start(): Promise<number> {
    this.http = createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' });
      res.end('meshgate discovery: connect with a WebSocket\n');
    });
    this.wss = new WebSocketServer({ server: this.http, maxPayload: MAX_CLIENT_MESSAGE, path: '/v1/discovery' });
    this.wss.on('connection', (ws) => this.accept(ws));
    this.opts.store.on('update', this.onUpdate);
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    return (this.http.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.opts.store.off('update', this.onUpdate);
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.conns) c.ws.terminate();
    this.wss?.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
  }

  proxies(): ProxyStatus[] {
    return [...this.conns].flatMap((c) => (c.status ? [c.status] : []));
  }

  private accept(ws: WebSocket): void {
    const conn: Conn = { ws, node: null, status: null, nonce: null, problems: '' };
    this.conns.add(conn);
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    ws.on('close', () => {
      this.conns.delete(conn);
      if (conn.node) this.opts.log.info({ proxy: conn.node.id }, 'proxy disconnected');
    });
    ws.on('error', (err) => this.opts.log.warn({ err: err.message }, 'discovery connection error'));
    // A client that never says hello holds a socket for nothing.
    const helloTimer = setTimeout(() => { if (!conn.node) ws.close(4000, 'no hello'); }, 10_000);
    helloTimer.unref();
  }

  private onMessage(conn: Conn, data: Buffer, isBinary: boolean): void {
    let msg: ProxyToPilot;
    try {
      if (isBinary) throw new Error('binary frame');
      msg = JSON.parse(data.toString('utf8')) as ProxyToPilot;
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') throw new Error('not a message');
    } catch (err) {
      this.drop(conn, `malformed message: ${(err as Error).message}`);
      return;
    }
    if (msg.type === 'hello') {
      const node = msg.node;
      if (conn.node || !isIdentity(node)) {
        this.drop(conn, conn.node ? 'second hello' : 'hello without a valid node {id, namespace, labels, egress?}');
        return;
      }
      conn.node = node;
      conn.status = {
        id: node.id, namespace: node.namespace, labels: node.labels, connectedAt: new Date().toISOString(),
        sent: typeof msg.version === 'string' ? msg.version : null,
        acked: typeof msg.version === 'string' ? msg.version : null,
        nack: null,
      };
      this.opts.log.info({ proxy: node.id, labels: node.labels, version: conn.status.acked }, 'proxy connected');
      this.pushTo(conn, this.opts.store.state);
      return;
    }
    if (!conn.node || !conn.status) {
      this.drop(conn, `${msg.type} before hello`);
      return;
    }
    if (msg.type === 'ack' || msg.type === 'nack') {
      if (msg.nonce !== conn.nonce) return; // an answer to a push that was superseded
      if (msg.type === 'ack') {
        conn.status.acked = String(msg.version);
        conn.status.nack = null;
        this.opts.log.info({ proxy: conn.node.id, version: msg.version }, 'config applied');
      } else {
        conn.status.nack = String(msg.error).slice(0, 4096);
        this.opts.log.error({ proxy: conn.node.id, version: msg.version, reason: conn.status.nack }, 'proxy rejected config; it keeps its previous version');
      }
      return;
    }
    this.drop(conn, `unknown message type ${JSON.stringify(String((msg as { type: unknown }).type)).slice(0, 64)}`);
  }

  private drop(conn: Conn, reason: string): void {
    this.opts.log.warn({ proxy: conn.node?.id, reason }, 'closing discovery connection');
    conn.ws.close(1008, reason.slice(0, 120));
  }

  private schedulePush(): void {
    const now = Date.now();
    if (!this.timer) this.firstPendingAt = now;
    else clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.debounceMs, this.firstPendingAt + this.opts.maxDelayMs - now));
    this.timer = setTimeout(() => {
      this.timer = null;
      const state = this.opts.store.state;
      // Proxies with the same identity-relevant inputs get the same config: translate once.
      const cache = new Map<string, { config: Omit<ProxyConfig, 'version'>; problems: Problem[] }>();
      for (const c of this.conns) if (c.node) this.pushTo(c, state, cache);
    }, wait);
  }

  private pushTo(conn: Conn, state: StoreState, cache?: Map<string, { config: Omit<ProxyConfig, 'version'>; problems: Problem[] }>): void {
    const node = conn.node!;
    const key = JSON.stringify([node.namespace, Object.entries(node.labels).sort(), node.egress === true]);
    let result = cache?.get(key);
    if (!result) {
      try {
        result = translate(state.snapshot, { ...node, id: 'proxy' });
      } catch (err) {
        // A translation bug must not take pilot down; the proxy keeps its config.
        this.opts.log.error({ proxy: node.id, err: (err as Error).stack }, 'translation failed');
        return;
      }
      cache?.set(key, result);
    }
    const body = { ...result.config, proxy: node };
    const version = configVersion(result.config);
    // The store reports problems of the whole config and translation those of this proxy;
    // some are both (a broken route, an unusable ServiceEntry): list each once.
    const problems = [...new Set([...state.problems, ...result.problems].map(formatProblem))];
    const problemsKey = problems.join('\n');
    // A rejected edit changes no config but must still reach the proxy's admin port, so a
    // change in problems alone is pushed too (the proxy re-applies nothing for a version it runs).
    if (version === conn.status!.sent && problemsKey === conn.problems) return;
    const nonce = randomUUID();
    const msg: ConfigMessage = { type: 'config', version, nonce, config: { version, ...body }, problems };
    conn.problems = problemsKey;
    conn.nonce = nonce;
    conn.status!.sent = version;
    conn.ws.send(JSON.stringify(msg));
  }
}

function isIdentity(n: unknown): n is ProxyIdentity {
  if (!n || typeof n !== 'object') return false;
  const o = n as Record<string, unknown>;
  if (typeof o.id !== 'string' || o.id.length === 0 || o.id.length > 253) return false;
  if (typeof o.namespace !== 'string' || !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(o.namespace)) return false;
  if (!o.labels || typeof o.labels !== 'object' || Array.isArray(o.labels)) return false;
  if (o.egress !== undefined && typeof o.egress !== 'boolean') return false;
  const labels = Object.entries(o.labels as Record<string, unknown>);
  return labels.length <= 64 && labels.every(([k, v]) => typeof v === 'string' && k.length <= 317 && v.length <= 63);
}

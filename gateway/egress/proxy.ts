// The egress forward proxy: the port workloads name in HTTP_PROXY / HTTPS_PROXY (3128 by
// default). Three kinds of request arrive, and each is decided by the allowlist before
// anything leaves the proxy:
//
//   GET http://host[:port]/path   absolute-form (curl with HTTP_PROXY)
//   GET /path + Host: host[:port] origin-form (a workload whose traffic is sent here)
//       → policy (HTTP) → 502 naming host and reason, or: rewritten to origin-form and run
//         through the normal request pipeline with the outbound route table of that port.
//   CONNECT host:port             tunnels (TLS, or opaque TCP matched by address)
//       → tunnel.ts: policy on the CONNECT line, again on the ClientHello's SNI, then bytes.
//
// Requests and tunnels read the runtime once, so a new config version decides new requests
// and new tunnels while those already running finish on the version they started with.
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { EgressDecision } from '../../policies/egress.ts';
import { clientAddress } from '../headers.ts';
import { HEADERS_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, MAX_HEADER_BYTES, listenOn } from '../listener.ts';
import { writeSocketReply } from '../local-reply.ts';
import { BLACKHOLE_CLUSTER } from '../../api/proxyconfig.ts';
import { declaredRequestBytes, NO_FLAGS } from '../metrics.ts';
import { handleRequest, handleUpgrade, isWebSocketUpgrade } from '../pipeline.ts';
import { blockedBody, EGRESS_HEADER, noteDecision, shownDestination } from './decision.ts';
import { outboundRuntime, type EgressRuntime } from './runtime.ts';
import { parseHttpTarget, type Destination, type HttpTarget } from './target.ts';
import { handleConnect, type TunnelSet } from './tunnel.ts';

export class ForwardProxy {
  readonly address: string;
  readonly localPort: number;
  runtime: EgressRuntime;
  boundPort = 0;
  private readonly server: http.Server;
  private readonly reusePort: boolean;
  /** Every client connection, tunnels included (close() cuts what is left after the grace). */
  private readonly sockets = new Set<net.Socket>();
  readonly tunnels: TunnelSet = new Set();

  constructor(address: string, localPort: number, runtime: EgressRuntime, reusePort = false) {
    this.address = address;
    this.localPort = localPort;
    this.runtime = runtime;
    this.reusePort = reusePort;
    this.server = http.createServer({
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: 0,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      noDelay: true,
      shouldUpgradeCallback: isWebSocketUpgrade,
    }, (req, res) => proxyRequest(this, req, res));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => proxyUpgrade(this, req, socket, head));
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => handleConnect(this, this.runtime, req, socket as net.Socket, head));
    // Node's default answers a request it cannot parse with a bare 400; say what was wrong.
    this.server.on('clientError', (err: NodeJS.ErrnoException & { reason?: string }, socket: Duplex) => {
      if (!socket.writable || err.code === 'ECONNRESET') { socket.destroy(); return; }
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      writeSocketReply(socket, status, status === 400 ? `forward proxy: malformed request (${err.reason ?? err.code ?? 'parse error'})\n` : '', '');
    });
    this.server.on('connection', (sock: net.Socket) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => { /* resets are normal */ });
    });
  }

  async listen(port = this.localPort): Promise<void> {
    this.boundPort = await listenOn(this.server, this.address, port, this.reusePort);
  }

  update(runtime: EgressRuntime): void {
    this.runtime = runtime;
  }

  /**
   * A destination that is this proxy itself: with ALLOW_ANY (or a loose entry) a request to
   * it would be passed back in, again and again, until sockets run out.
   */
  isSelf(address: string, port: number): boolean {
    if (port !== this.boundPort || this.boundPort === 0) return false;
    const a = clientAddress(address);
    if (a === this.address || a === 'localhost') return true;
    if (a === '0.0.0.0' || a === '::' || a === '::1') return true;
    return net.isIPv4(a) && a.startsWith('127.');
  }

  /** Stops accepting; requests and tunnels get `graceMs`, then every connection is cut. */
  close(graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => { /* resolved below once sockets are gone */ });
      this.server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      const check = () => {
        if (this.sockets.size === 0 && this.tunnels.size === 0) return resolve();
        this.server.closeIdleConnections();
        if (Date.now() >= deadline) {
          for (const s of this.sockets) s.destroy();
          for (const t of this.tunnels) t.destroy();
          return resolve();
        }
        setTimeout(check, 20).unref();
      };
      check();
    });
  }
}

// ---------------------------------------------------------------- decisions

function selfDecision(dest: Destination): EgressDecision {
  return {
    allowed: false, audited: false, entry: null, resolution: null, location: null,
    reason: `${shownDestination(dest.host, dest.port)} is this forward proxy; the request would loop back into it`,
  };
}

function decideHttp(fp: ForwardProxy, rt: EgressRuntime, dest: Destination): EgressDecision {
  if (dest.ip && fp.isSelf(dest.host, dest.port)) return selfDecision(dest);
  if (dest.host === 'localhost' && dest.port === fp.boundPort) return selfDecision(dest);
  const forbidden = dest.ip ? rt.guard.check(dest.host, dest.port) : null;
  if (forbidden !== null) return { allowed: false, audited: false, entry: null, resolution: null, location: null, reason: forbidden };
  return rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'HTTP', sni: null, address: null });
}

// ---------------------------------------------------------------- plain HTTP

function proxyRequest(fp: ForwardProxy, req: http.IncomingMessage, res: http.ServerResponse): void {
  const rt = fp.runtime;
  const t0 = rt.shared.metrics === null ? 0 : performance.now();
  const parsed = parseHttpTarget(req.url ?? '', req.headers.host);
  if (!parsed.ok) return badRequest(rt, req, res, parsed.why, t0);
  const dest = parsed.value.dest;
  const d = decideHttp(fp, rt, dest);
  noteDecision(rt, dest.host, dest.port, 'http', d, req.socket.remoteAddress, null);
  if (!d.allowed) return blocked(rt, req, res, dest, d.reason, t0);
  toOriginForm(req, parsed.value);
  handleRequest(outboundRuntime(rt, dest.port), req, res);
}

function proxyUpgrade(fp: ForwardProxy, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const rt = fp.runtime;
  socket.on('error', () => { /* the client went away */ });
  const parsed = parseHttpTarget(req.url ?? '', req.headers.host);
  if (!parsed.ok) return writeSocketReply(socket, 400, `forward proxy: ${parsed.why}\n`, '');
  const dest = parsed.value.dest;
  const d = decideHttp(fp, rt, dest);
  noteDecision(rt, dest.host, dest.port, 'http', d, req.socket.remoteAddress, null);
  if (!d.allowed) return writeSocketReply(socket, 502, blockedBody(dest.host, dest.port, d.reason), `${EGRESS_HEADER}: blocked\r\n`);
  toOriginForm(req, parsed.value);
  handleUpgrade(outboundRuntime(rt, dest.port), req, socket, head);
}

/**
 * What the upstream must see: origin-form target, Host = the authority the client named
 * (the absolute-form one wins over a Host header, RFC 9112 3.2.2), and none of the headers
 * meant for this proxy.
 */
function toOriginForm(req: http.IncomingMessage, t: HttpTarget): void {
  req.url = t.path;
  const h = req.headers;
  const hostChanged = h.host !== t.dest.authority;
  h.host = t.dest.authority;
  const proxyHeaders = h['proxy-authorization'] !== undefined || h['proxy-connection'] !== undefined;
  delete h['proxy-authorization'];
  delete h['proxy-connection'];
  if (hostChanged || proxyHeaders) {
    // Route header matches and policies read each value as received (headersDistinct):
    // they must see the same request the upstream gets.
    const d = req.headersDistinct;
    d.host = [t.dest.authority];
    delete d['proxy-authorization'];
    delete d['proxy-connection'];
  }
}

function badRequest(rt: EgressRuntime, req: http.IncomingMessage, res: http.ServerResponse, why: string, t0: number): void {
  const body = `forward proxy: ${why}\n`;
  res.writeHead(400, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
  const m = rt.shared.metrics;
  if (m !== null) m.record(m.destination(null), false, 400, '', NO_FLAGS, declaredRequestBytes(req), Buffer.byteLength(body), performance.now() - t0);
}

function blocked(rt: EgressRuntime, req: http.IncomingMessage, res: http.ServerResponse, dest: Destination, reason: string, t0: number): void {
  const body = blockedBody(dest.host, dest.port, reason);
  const len = Buffer.byteLength(body);
  res.writeHead(502, { 'content-type': 'text/plain', 'content-length': String(len), [EGRESS_HEADER]: 'blocked' });
  res.end(body);
  // Istio counts what REGISTRY_ONLY refused against BlackHoleCluster.
  const m = rt.shared.metrics;
  if (m !== null) m.record(m.destination(BLACKHOLE_CLUSTER), false, 502, '', NO_FLAGS, declaredRequestBytes(req), len, performance.now() - t0);
}

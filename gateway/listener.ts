// One bound port of the data plane. Plaintext ports speak HTTP/1.1 and h2c (prior
// knowledge) on the same socket, told apart by the first bytes as Envoy's codec
// auto-detection does; TLS ports pick the certificate by SNI and negotiate h2 or
// http/1.1 by ALPN. What a port serves (`runtime`, `sni`) is swapped on apply without
// re-binding, so certificates and routes change with no dropped connection.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Listener, ServerCertificate } from '../api/proxyconfig.ts';
import { handleRequest, handleUpgrade, isWebSocketUpgrade, type ListenerRuntime } from './pipeline.ts';
import { closeIdleFast, FastConnection, type FastPort } from './h1/conn.ts';
import { h1FastPathEnabled } from './h1/enabled.ts';

/** Node's limit is per message; Envoy's default is 60 KiB, and clients beyond it get 431. */
export const MAX_HEADER_BYTES = 60 * 1024;
export const HEADERS_TIMEOUT_MS = 60_000;
export const KEEP_ALIVE_TIMEOUT_MS = 60_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A connection that sends nothing this long is closed before any codec is chosen. */
const DETECT_TIMEOUT_MS = 15_000;
const H2_SETTINGS: http2.Settings = { maxConcurrentStreams: 1024, maxHeaderListSize: MAX_HEADER_BYTES };

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

// ---------------------------------------------------------------- SNI

export interface SniEntry {
  source: string;
  mode: 'SIMPLE' | 'MUTUAL';
  context: tls.SecureContext;
  /** The options the context was made from (the server's no-SNI default needs options). */
  options: tls.SecureContextOptions;
  subjectAltNames: string[];
}

export interface SniTable {
  exact: Map<string, SniEntry>;
  /** `*.suffix` as `.suffix`, longest first. */
  wildcards: { suffix: string; entry: SniEntry }[];
  star: SniEntry | null;
  /** Connections without SNI: the `*` server, else the first. */
  fallback: SniEntry;
  anyMutual: boolean;
}

async function readPem(inline: string | null, file: string | null, what: string, where: string): Promise<string | null> {
  if (inline !== null && inline !== '') return inline;
  if (file === null || file === '') return null;
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${where}: cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

async function compileCertificate(c: ServerCertificate, listenerName: string): Promise<SniEntry> {
  const where = `listener ${listenerName} ${c.source}`;
  const cert = await readPem(c.certPem, c.certFile, 'certFile', where);
  const key = await readPem(c.keyPem, c.keyFile, 'keyFile', where);
  if (cert === null || key === null) throw new Error(`${where}: TLS server has no certificate or key`);
  const ca = c.mode === 'MUTUAL' ? await readPem(c.caPem, c.caFile, 'caFile', where) : null;
  if (c.mode === 'MUTUAL' && ca === null) throw new Error(`${where}: MUTUAL TLS needs a CA certificate to verify clients`);
  const options: tls.SecureContextOptions = {
    cert,
    key,
    minVersion: c.minVersion ?? 'TLSv1.2',
    maxVersion: c.maxVersion ?? 'TLSv1.3',
  };
  if (ca !== null) options.ca = ca;
  if (c.cipherSuites.length > 0) options.ciphers = c.cipherSuites.join(':');
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext(options);
  } catch (e) {
    throw new Error(`${where}: unusable certificate/key: ${(e as Error).message}`);
  }
  return { source: c.source, mode: c.mode, context, options, subjectAltNames: c.subjectAltNames };
}

/** Reads key material (files on this host included) and builds every context up front. */
export async function compileSniTable(l: Listener): Promise<SniTable | null> {
  if (l.tls === null) return null;
  if (l.tls.certificates.length === 0) throw new Error(`listener ${l.name}: TLS listener has no certificates`);
  const entries: SniEntry[] = [];
  for (const c of l.tls.certificates) entries.push(await compileCertificate(c, l.name));
  const t: SniTable = { exact: new Map(), wildcards: [], star: null, fallback: entries[0], anyMutual: false };
  l.tls.certificates.forEach((c, i) => {
    const e = entries[i];
    if (e.mode === 'MUTUAL') t.anyMutual = true;
    for (const raw of c.sniHosts) {
      const h = raw.toLowerCase();
      if (h === '*') t.star ??= e;
      else if (h.startsWith('*')) {
        const suffix = h.slice(1);
        if (!t.wildcards.some((w) => w.suffix === suffix)) t.wildcards.push({ suffix, entry: e });
      } else if (!t.exact.has(h)) t.exact.set(h, e);
    }
  });
  t.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  if (t.star !== null) t.fallback = t.star;
  return t;
}

/** Envoy's filter-chain order: exact SNI, longest wildcard, `*`; no SNI → fallback. */
export function selectCertificate(t: SniTable, servername: string | null | undefined): SniEntry | null {
  if (!servername) return t.fallback;
  const name = servername.toLowerCase();
  const exact = t.exact.get(name);
  if (exact !== undefined) return exact;
  const w = t.wildcards;
  for (let i = 0; i < w.length; i++) {
    const s = w[i].suffix;
    if (name.length > s.length && name.endsWith(s)) return w[i].entry;
  }
  return t.star;
}

/** `subjectaltname` of a peer certificate (`DNS:a, URI:spiffe://…`) contains one of `want`. */
function sanAllowed(sock: tls.TLSSocket, want: string[]): boolean {
  const san = sock.getPeerCertificate().subjectaltname;
  if (!san) return false;
  for (const part of san.split(', ')) {
    const colon = part.indexOf(':');
    const value = part.slice(colon + 1);
    // Node quotes values with unusual characters (NUL included); those never match.
    if (want.includes(value)) return true;
  }
  return false;
}

// ---------------------------------------------------------------- the port

/**
 * Binds `server` (exclusive: worker processes share ports through SO_REUSEPORT, not through
 * the cluster module) and resolves with the bound port, or rejects with the bind error.
 */
export function listenOn(server: net.Server, host: string, port: number, reusePort: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => { server.removeListener('listening', onListening); reject(err); };
    const onListening = () => {
      server.removeListener('error', onError);
      resolve((server.address() as net.AddressInfo).port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ port, host, exclusive: true, reusePort });
  });
}

export class PortListener implements FastPort {
  readonly address: string;
  readonly gatewayPort: number;
  readonly localPort: number;
  readonly tls: boolean;
  runtime: ListenerRuntime;
  sni: SniTable | null;
  boundPort = 0;
  private readonly server: net.Server;
  private readonly h1: http.Server | null = null;
  private readonly h2: http2.Http2Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  /** SO_REUSEPORT: several worker processes bind the same port and the kernel spreads connections. */
  private readonly reusePort: boolean;
  /**
   * HTTP/1.1 connections start on the fast path (h1/conn.ts), node's server takes what it
   * declines: plaintext ones that are not HTTP/2, TLS ones that did not negotiate h2.
   */
  private readonly fastH1: boolean;
  /** TLS sockets on the fast path (the `sockets` set holds their TCP sockets). */
  private readonly fastTls = new Set<tls.TLSSocket>();
  /** The TLS server's own HTTP setup for a connection (h2 session, or node's HTTP/1.1). */
  private secureInner: ((s: tls.TLSSocket) => void) | null = null;
  readonly keepAliveMs = KEEP_ALIVE_TIMEOUT_MS;
  readonly keepAliveHeader = `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(KEEP_ALIVE_TIMEOUT_MS / 1000)}\r\n`;

  constructor(address: string, gatewayPort: number, localPort: number, runtime: ListenerRuntime, sni: SniTable | null, reusePort = false) {
    this.reusePort = reusePort;
    this.fastH1 = h1FastPathEnabled();
    this.address = address;
    this.gatewayPort = gatewayPort;
    this.localPort = localPort;
    this.tls = sni !== null;
    this.runtime = runtime;
    this.sni = sni;
    const onRequest = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => handleRequest(this.runtime, req, res);
    const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => handleUpgrade(this.runtime, req, socket, head);
    if (sni === null) {
      const h1 = http.createServer({
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: HEADERS_TIMEOUT_MS,
        // Off: streaming requests (uploads, gRPC, long polls) may legitimately last long.
        requestTimeout: 0,
        keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
        // Only WebSocket upgrades leave the request path; `Upgrade: h2c` etc. are served
        // as plain HTTP/1.1 with the upgrade header dropped, as Envoy does.
        shouldUpgradeCallback: isWebSocketUpgrade,
      }, onRequest);
      h1.on('upgrade', onUpgrade);
      // h1 never listens itself (sockets are handed to it), but its timeout checker only
      // starts on 'listening'; without it slow-header clients would never be cut off.
      h1.emit('listening');
      const h2 = http2.createServer({ settings: H2_SETTINGS }, onRequest);
      h2.on('sessionError', () => { /* a broken client session; the session closes itself */ });
      this.h1 = h1;
      this.h2 = h2;
      this.server = net.createServer({ noDelay: true }, (sock) => this.detect(sock));
    } else {
      const server = http2.createSecureServer({
        // Nagle off, as on the plaintext server and in nginx: a response's last TLS record
        // must not wait for the client's ACK of the one before it.
        noDelay: true,
        allowHTTP1: true,
        settings: H2_SETTINGS,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        // The per-connection decision (MUTUAL or not) is made after SNI in admitTls; the
        // handshake only asks for the certificate.
        requestCert: sni.anyMutual,
        rejectUnauthorized: false,
        SNICallback: (servername, cb) => {
          const e = this.sni === null ? null : selectCertificate(this.sni, servername);
          if (e === null) cb(new Error(`no certificate for SNI ${servername}`), undefined);
          else cb(null, e.context);
        },
        ...sni.fallback.options,
        http1Options: { maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: 0, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS },
      } as http2.SecureServerOptions, onRequest);
      (server as unknown as { shouldUpgradeCallback: (req: http.IncomingMessage) => boolean }).shouldUpgradeCallback = isWebSocketUpgrade;
      server.on('upgrade', onUpgrade);
      server.on('sessionError', () => { /* see above */ });
      server.on('tlsClientError', () => { /* failed handshakes (unknown SNI, bad client cert) */ });
      // Run the MUTUAL check before node sets up HTTP on the socket.
      const inner = server.listeners('secureConnection') as ((s: tls.TLSSocket) => void)[];
      server.removeAllListeners('secureConnection');
      this.secureInner = (sock) => { for (const fn of inner) fn.call(server, sock); };
      server.on('secureConnection', (sock: tls.TLSSocket) => {
        if (!this.admitTls(sock)) { sock.destroy(); return; }
        // HTTP/1.1 (by ALPN, or no ALPN at all) starts on the fast path, as plaintext does.
        if (this.fastH1 && sock.alpnProtocol !== 'h2') {
          this.fastTls.add(sock);
          sock.on('close', () => this.fastTls.delete(sock));
          new FastConnection(sock, this);
          return;
        }
        this.secureInner!(sock);
      });
      this.server = server;
    }
    this.server.on('connection', (sock: net.Socket) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => { /* resets are normal; the owning server reports protocol errors */ });
    });
  }

  /**
   * Reads until the bytes either are the HTTP/2 preface or cannot be, then hands the socket
   * (data pushed back) to the right server. HTTP/2 reads buffered data itself; HTTP/1 needs
   * the socket resumed.
   */
  private detect(sock: net.Socket): void {
    let buf: Buffer | null = null;
    sock.setTimeout(DETECT_TIMEOUT_MS, () => sock.destroy());
    const onData = (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const n = Math.min(buf.length, H2_PREFACE.length);
      const prefixOfPreface = buf.compare(H2_PREFACE, 0, n, 0, n) === 0;
      if (prefixOfPreface && n < H2_PREFACE.length) return;
      sock.removeListener('data', onData);
      sock.setTimeout(0);
      if (!prefixOfPreface && this.fastH1) {
        new FastConnection(sock, this).onData(buf);
        return;
      }
      sock.pause();
      sock.unshift(buf);
      if (prefixOfPreface) {
        this.h2!.emit('connection', sock);
      } else {
        this.h1!.emit('connection', sock);
        sock.resume();
      }
    };
    sock.on('data', onData);
  }

  /** A connection the fast path declined (bytes already pushed back): node's server from here on. */
  fallback(sock: net.Socket): void {
    if (this.secureInner !== null) {
      this.fastTls.delete(sock as tls.TLSSocket);
      this.secureInner(sock as tls.TLSSocket);
    } else {
      this.h1!.emit('connection', sock);
    }
    sock.resume();
  }

  private closeIdleFastConnections(): void {
    if (!this.fastH1) return;
    if (this.tls) for (const s of this.fastTls) closeIdleFast(s);
    else for (const s of this.sockets) closeIdleFast(s);
  }

  private admitTls(sock: tls.TLSSocket): boolean {
    const t = this.sni;
    if (t === null) return false;
    const e = selectCertificate(t, (sock as unknown as { servername?: string | false }).servername || null);
    if (e === null) return false;
    if (e.mode !== 'MUTUAL') return true;
    if (!sock.authorized) return false;
    return e.subjectAltNames.length === 0 || sanAllowed(sock, e.subjectAltNames);
  }

  async listen(port = this.localPort): Promise<void> {
    this.boundPort = await listenOn(this.server, this.address, port, this.reusePort);
  }

  /** Swaps what this port serves. TLS: new connections use the new certificates. */
  update(runtime: ListenerRuntime, sni: SniTable | null): void {
    this.runtime = runtime;
    if (sni !== null && this.sni !== sni) {
      const s = this.server as tls.Server;
      s.setSecureContext(sni.fallback.options);
      (s as unknown as { requestCert: boolean }).requestCert = sni.anyMutual;
    }
    this.sni = sni;
  }

  /** Stops accepting now; lets in-flight requests finish for up to `graceMs`, then cuts. */
  close(graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => { /* resolved below once sockets are gone */ });
      if (this.h1 !== null) {
        this.h1.close(() => {});
        this.h1.closeIdleConnections();
      }
      this.closeIdleFastConnections();
      if (this.h2 !== null) this.h2.close(() => {});
      (this.server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      const sockets = this.sockets;
      const deadline = Date.now() + graceMs;
      const check = () => {
        if (sockets.size === 0) return resolve();
        // Keep-alive connections that finished their last request since the previous check.
        this.h1?.closeIdleConnections();
        this.closeIdleFastConnections();
        (this.server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
        if (Date.now() >= deadline) {
          for (const s of sockets) s.destroy();
          return resolve();
        }
        setTimeout(check, 20).unref();
      };
      check();
    });
  }

  /** Frees the port without touching connections (used to re-bind the port for another protocol). */
  stopAccepting(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      // server.close waits for connections; the port itself is released at once.
      setImmediate(resolve);
    });
  }
}

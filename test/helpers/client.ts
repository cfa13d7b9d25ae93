// Clients for data plane tests: HTTP/1.1, h2c (prior knowledge), TLS (h2 or http/1.1 by
// ALPN) and raw bytes, each returning what a user would see. Every call has a timeout.
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface ReqOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string;
  timeoutMs?: number;
}

export function h1(port: number, path: string, o: ReqOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: o.headers, agent: false, timeout: o.timeoutMs ?? 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${path}`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** One request over a fresh HTTP/2 session: h2c when `tlsOpts` is absent. */
export function h2(port: number, path: string, o: ReqOptions & { tlsOpts?: tls.ConnectionOptions } = {}): Promise<Reply & { alpn: string | undefined }> {
  return new Promise((resolve, reject) => {
    const session = o.tlsOpts
      ? http2.connect(`https://127.0.0.1:${port}`, { ...o.tlsOpts })
      : http2.connect(`http://127.0.0.1:${port}`);
    const timer = setTimeout(() => { session.destroy(); reject(new Error(`timeout: ${path}`)); }, o.timeoutMs ?? 5000);
    session.on('error', (e) => { clearTimeout(timer); reject(e); });
    const stream = session.request({ ':method': o.method ?? 'GET', ':path': path, ...o.headers }, { endStream: o.body === undefined });
    let headers: Record<string, string | string[] | undefined> = {};
    let body = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => { headers = h as Record<string, string | string[] | undefined>; });
    stream.on('data', (c: string) => { body += c; });
    stream.on('end', () => {
      clearTimeout(timer);
      if (headers[':status'] === undefined) { session.destroy(); reject(new Error(`no response: ${path}`)); return; }
      const alpn = session.alpnProtocol;
      session.close();
      resolve({ status: Number(headers[':status']), headers, body, alpn });
    });
    stream.on('error', (e) => { clearTimeout(timer); session.destroy(); reject(e); });
    if (o.body !== undefined) stream.end(o.body);
  });
}

/** HTTPS over HTTP/1.1 with the given TLS options (servername, cert, ca…). */
export function https1(port: number, path: string, tlsOpts: tls.ConnectionOptions, o: ReqOptions = {}): Promise<Reply & { peerCN: string | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ALPNProtocols: ['http/1.1'], ...tlsOpts });
    socket.on('error', reject);
    socket.once('secureConnect', () => {
      const peerCN = socket.getPeerCertificate().subject?.CN as string | undefined;
      const req = http.request({ createConnection: () => socket, path, method: o.method ?? 'GET', headers: { host: String(tlsOpts.servername ?? 'localhost'), ...o.headers }, timeout: o.timeoutMs ?? 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => { socket.destroy(); resolve({ status: res.statusCode ?? 0, headers: res.headers, body, peerCN }); });
      });
      req.on('timeout', () => req.destroy(new Error(`timeout: ${path}`)));
      req.on('error', reject);
      req.end(o.body);
    });
  });
}

/**
 * Sends raw bytes (several parts: separate writes 30 ms apart), returns everything the server
 * wrote until it closed (or the timeout). `tlsOpts`: over TLS (writes wait for the handshake).
 */
export function raw(port: number, bytes: string | string[], timeoutMs = 3000, tlsOpts?: tls.ConnectionOptions): Promise<string> {
  const parts = typeof bytes === 'string' ? [bytes] : bytes;
  return new Promise((resolve, reject) => {
    const sock = tlsOpts === undefined ? net.connect(port, '127.0.0.1') : tls.connect({ port, host: '127.0.0.1', ...tlsOpts });
    let out = '';
    const timer = setTimeout(() => { sock.destroy(); resolve(out); }, timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (c: string) => { out += c; });
    sock.on('close', () => { clearTimeout(timer); resolve(out); });
    sock.on('error', (e) => { clearTimeout(timer); if (out) resolve(out); else reject(e); });
    let i = 0;
    const next = () => {
      if (i >= parts.length) return;
      sock.write(parts[i++]);
      if (i < parts.length) setTimeout(next, 30);
    };
    if (tlsOpts === undefined) next(); else sock.once('secureConnect', next);
  });
}

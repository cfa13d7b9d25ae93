// Real protocols through a real `meshgate up` process: HTTPS with a certificate per host
// picked by SNI, HTTP/2 over TLS (ALPN) and h2c, gRPC (unary, server streaming, status and
// trailers) with @grpc/grpc-js on both ends, and WebSocket.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { makeCA, issueCert, tlsSecretYaml, type TestCA } from './helpers/certs.ts';
import { startEcho, freePort, type Upstream } from './helpers/upstream.ts';
import { tempDir, type TempDir } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady, type Proc } from './helpers/meshgate.ts';

const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const ECHO_SERVICE = {
  Say: { path: '/demo.Echo/Say', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
  Count: { path: '/demo.Echo/Count', requestStream: false, responseStream: true, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
} satisfies grpc.ServiceDefinition;

async function startGrpc(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new grpc.Server();
  server.addService(ECHO_SERVICE, {
    Say: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const text = call.request.toString();
      if (text === 'missing') return cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
      const trailer = new grpc.Metadata();
      trailer.set('x-served', 'grpc-upstream');
      cb(null, Buffer.from(`hello ${text}`), trailer);
    },
    Count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 1; i <= n; i++) call.write(Buffer.from(String(i)));
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

describe('protocols through meshgate up', () => {
  let ca: TestCA;
  let dir: TempDir;
  let proc: Proc;
  let web: Upstream;
  let grpcUp: { port: number; close(): Promise<void> };
  let plain: number;
  let secure: number;

  before(async () => {
    ca = makeCA();
    const certA = issueCert(ca, 'a.example.com', { dnsNames: ['a.example.com'] });
    const certB = issueCert(ca, 'b.example.com', { dnsNames: ['b.example.com'] });
    web = await startEcho({ name: 'web', websocket: true });
    grpcUp = await startGrpc();
    plain = await freePort();
    secure = await freePort();
    const ports = await gatewayPorts();
    dir = await tempDir();
    await dir.write('secrets.yaml', `${tlsSecretYaml('a-cert', 'istio-system', certA)}---\n${tlsSecretYaml('b-cert', 'istio-system', certB)}`);
    await dir.write('config.yaml', `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: ${plain}, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: ${secure}, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: ${secure}, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-cert}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${web.port}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: grpc}
spec:
  hosts: [echo.grpc.internal]
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {grpc: ${grpcUp.port}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - match: [{uri: {prefix: /demo.Echo/}}]
    route: [{destination: {host: echo.grpc.internal}}]
  - route: [{destination: {host: web.internal}}]
    headers: {response: {set: {x-host-route: any}}}
`);
    proc = run(['up', '--config', dir.path, ...portFlags(ports),
      '--discovery-port', String(await freePort()), '--debug-port', String(await freePort())]);
    await waitReady(proc, ports.health);
  });

  after(async () => {
    await proc?.stop();
    await web?.close();
    await grpcUp?.close();
    await dir?.cleanup();
  });

  test('HTTPS: each host gets its own certificate by SNI', async () => {
    for (const host of ['a.example.com', 'b.example.com']) {
      const cn = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: secure, servername: host, ca: ca.certPem }, () => {
          const c = s.getPeerCertificate();
          s.end();
          resolve(String(c.subject.CN));
        });
        s.on('error', reject);
      });
      assert.equal(cn, host);
    }
  });

  test('HTTP/2 over TLS (ALPN h2) and HTTPS over HTTP/1.1 both route', async () => {
    const session = http2.connect(`https://127.0.0.1:${secure}`, { servername: 'b.example.com', ca: ca.certPem });
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({ ':path': '/h2-path', ':authority': 'b.example.com' });
        let status = 0;
        let body = '';
        req.on('response', (h) => { status = Number(h[':status']); });
        req.on('data', (d: Buffer) => { body += d.toString(); });
        req.on('end', () => resolve({ status, body }));
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 200);
      const echoed = JSON.parse(body) as { path: string; authority: string; headers: Record<string, string> };
      assert.equal(echoed.path, '/h2-path');
      assert.equal(echoed.headers['x-forwarded-proto'], 'https');
    } finally {
      session.close();
    }
    const https = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: secure, servername: 'a.example.com', headers: { host: 'a.example.com' }, ca: ca.certPem, path: '/h1' }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
    });
    assert.equal(status, 200);
  });

  test('h2c with prior knowledge on the plaintext port', async () => {
    const session = http2.connect(`http://127.0.0.1:${plain}`);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({ ':path': '/h2c' });
        req.on('response', (h) => { resolve(h); req.resume(); });
        req.on('error', reject);
        req.end();
      });
      assert.equal(headers[':status'], 200);
      assert.equal(headers['x-host-route'], 'any');
    } finally {
      session.close();
    }
  });

  test('gRPC unary, status codes, trailers and server streaming', async () => {
    const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
    const client = new Client(`127.0.0.1:${plain}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
    try {
      const { value, trailer } = await new Promise<{ value: string; trailer: grpc.Metadata }>((resolve, reject) => {
        let trailer = new grpc.Metadata();
        const call = client.Say(Buffer.from('mesh'), (err: grpc.ServiceError | null, v: Buffer) => (err ? reject(err) : setImmediate(() => resolve({ value: v.toString(), trailer }))));
        call.on('status', (s: grpc.StatusObject) => { trailer = s.metadata; });
      });
      assert.equal(value, 'hello mesh');
      assert.deepEqual(trailer.get('x-served'), ['grpc-upstream']);

      const err = await new Promise<grpc.ServiceError>((resolve) => client.Say(Buffer.from('missing'), (e: grpc.ServiceError) => resolve(e)));
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(err.details, 'no such thing');

      const items = await new Promise<string[]>((resolve, reject) => {
        const out: string[] = [];
        const call = client.Count(Buffer.from('5'));
        call.on('data', (d: Buffer) => out.push(d.toString()));
        call.on('end', () => resolve(out));
        call.on('error', reject);
      });
      assert.deepEqual(items, ['1', '2', '3', '4', '5']);
    } finally {
      client.close();
    }
  });

  test('WebSocket upgrade is tunnelled both ways', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${plain}/chat`);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('message', (m) => {
        messages.push(m.toString());
        if (messages.length === 1) ws.send('ping');
        if (messages.length === 2) resolve();
      });
      ws.on('error', reject);
    });
    ws.close();
    assert.deepEqual(messages, ['web connected /chat', 'web: ping']);
  });
});

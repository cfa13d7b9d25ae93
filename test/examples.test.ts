// What the README promises: `npm start` serves examples/ and its curl lines answer as
// printed. Runs the same entry point (examples/start.ts) on the same ports the README uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { ROOT } from './helpers/meshgate.ts';
import { eventually } from './helpers/tmp.ts';
import { freePort } from './helpers/upstream.ts';

test('npm start: the README curl lines answer as printed', async (t) => {
  const node = join(ROOT, 'node_modules', '.bin', 'node');
  // The README's ports, except metrics: 15090 may be taken by another test process's gateway.
  const metricsPort = await freePort();
  const child = spawn(node, [join(ROOT, 'examples', 'start.ts'), '--log-level', 'warn', '--metrics-port', String(metricsPort)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`npm start exited: ${out}`);
    return (await fetch('http://localhost:15021/healthz/ready').catch(() => null))?.status === 200;
  }, 15_000, `ready\n${out}`);

  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`http://localhost:8080${path}`, { headers, redirect: 'manual' });

  assert.ok(readme.includes('curl -s localhost:8080/productpage'));
  assert.match(await (await get('/productpage')).text(), /^productpage v1/);

  assert.ok(readme.includes(`curl -s -H 'end-user: jason' localhost:8080/reviews/1`));
  for (let i = 0; i < 5; i++) {
    const r = (await (await get('/reviews/1', { 'end-user': 'jason' })).json()) as { version: string };
    assert.equal(r.version, 'v2');
  }

  const versions = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const r = (await (await get('/reviews/1')).json()) as { version: string };
    versions.set(r.version, (versions.get(r.version) ?? 0) + 1);
  }
  assert.deepEqual([...versions.keys()].sort(), ['v1', 'v3'], 'an 80/20 split between v1 and v3');
  const v1 = versions.get('v1')!;
  assert.ok(v1 > 130 && v1 < 190, `v1 got ${v1} of 200 (expected about 160)`);

  const hb = (await (await get('/httpbin/anything')).json()) as { url: string; headers: Record<string, string> };
  assert.equal(hb.url, '/anything');
  assert.equal(hb.headers['x-routed-by'], 'meshgate');

  const redirect = await get('/docs/old');
  assert.equal(redirect.status, 301);
  assert.match(redirect.headers.get('location') ?? '', /\/productpage$/);

  assert.equal(await (await get('/ping')).text(), 'pong\n');
  assert.equal((await get('/nothing-here')).status, 404);

  assert.ok(readme.includes('localhost:8080/secure/data'));
  assert.equal((await get('/secure/data')).status, 403);
  const token = readFileSync(join(ROOT, 'examples', 'tokens', 'demo.jwt'), 'utf8').trim();
  const secure = await get('/secure/data', { authorization: `Bearer ${token}` });
  assert.equal(secure.status, 200);
  assert.equal(((await secure.json()) as { url: string }).url, '/secure/data');
  assert.equal((await get('/ping', { authorization: 'Bearer not.a.token' })).status, 401);

  // The egress proxy on 3128, as curl -x sends to it (absolute-form).
  const viaProxy = (url: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: '127.0.0.1', port: 3128, path: url, headers: { host: u.host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
  assert.ok(readme.includes('curl -s -x localhost:3128 http://httpbin.org/anything'));
  const allowed = await viaProxy('http://httpbin.org/anything');
  assert.equal(allowed.status, 200);
  assert.equal((JSON.parse(allowed.body) as { headers: { host: string } }).headers.host, 'httpbin.org');
  const blockedLine = /curl -s -x localhost:3128 http:\/\/example\.com\/ +# → 502 (.*)\n/.exec(readme);
  assert.ok(blockedLine, 'the README shows the blocked request');
  const blocked = await viaProxy('http://example.com/');
  assert.equal(blocked.status, 502);
  assert.equal(blocked.body.trim(), blockedLine[1].trim());

  const dump = (await (await fetch('http://127.0.0.1:15000/config_dump')).json()) as { version: string };
  assert.match(dump.version, /^[0-9a-f]+$/);
});

// Load balancer decisions, without sockets: which endpoint a pick returns.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { EndpointState } from './endpoint.ts';
import { Candidates, createPicker, cookieValue, queryValue, requestHash, smoothSchedule, hashCookieAttributes } from './lb.ts';
import type { LoadBalancer } from '../../api/proxyconfig.ts';

function eps(...weights: number[]): EndpointState[] {
  return weights.map((w, i) => new EndpointState({ address: `10.0.0.${i + 1}`, port: 8080, labels: {}, weight: w }, i));
}

function counts(list: (EndpointState | null)[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of list) m.set(e?.hostPort ?? 'none', (m.get(e?.hostPort ?? 'none') ?? 0) + 1);
  return m;
}

const HASH = (by: 'header' | 'cookie' | 'sourceIp' | 'queryParam', name: string | null = null): LoadBalancer => ({ kind: 'CONSISTENT_HASH', by, name, cookiePath: null, cookieTtlMs: null });

describe('round robin', () => {
  test('equal weights take turns', () => {
    const e = eps(1, 1, 1);
    const p = createPicker({ kind: 'ROUND_ROBIN' }, new Candidates(e));
    const c = counts(Array.from({ length: 30 }, () => p.pick(-1, null)));
    assert.deepEqual([...c.values()], [10, 10, 10]);
  });

  test('weights split in proportion and heavy endpoints are interleaved, not bunched', () => {
    const e = eps(1, 3);
    const p = createPicker({ kind: 'ROUND_ROBIN' }, new Candidates(e));
    const picks = Array.from({ length: 40 }, () => p.pick(-1, null)!);
    const c = counts(picks);
    assert.equal(c.get(e[0].hostPort), 10);
    assert.equal(c.get(e[1].hostPort), 30);
    const sched = smoothSchedule(eps(1, 3));
    assert.equal(sched.length, 4);
    // The light endpoint is not first-and-last or adjacent to itself; the heavy one never runs 3 in a row twice.
    assert.equal([...sched].filter((i) => i === 0).length, 1);
  });

  test('skips ejected endpoints; nothing usable gives null', () => {
    const e = eps(1, 1, 1);
    const cand = new Candidates(e);
    const p = createPicker({ kind: 'ROUND_ROBIN' }, cand);
    e[1].ejected = true;
    cand.refresh(0);
    for (let i = 0; i < 10; i++) assert.notEqual(p.pick(-1, null), e[1]);
    for (const x of e) x.ejected = true;
    cand.refresh(0);
    assert.equal(p.pick(-1, null), null);
  });

  test('panic (healthy share below minHealthPercent) balances over every endpoint', () => {
    const e = eps(1, 1);
    const cand = new Candidates(e);
    const p = createPicker({ kind: 'ROUND_ROBIN' }, cand);
    e[0].ejected = true;
    cand.refresh(60);
    assert.equal(cand.panic, true);
    const c = counts(Array.from({ length: 10 }, () => p.pick(-1, null)));
    assert.equal(c.get(e[0].hostPort), 5);
  });

  test('a retry avoids the endpoints already tried while others are available', () => {
    const e = eps(1, 1, 1);
    for (const kind of ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM'] as const) {
      const p = createPicker({ kind }, new Candidates(e));
      for (let i = 0; i < 20; i++) {
        assert.equal(p.pick(-1, [e[0], e[2]]), e[1], kind);
      }
    }
    // Only the tried one left: it is used again rather than failing.
    const one = eps(1);
    assert.equal(createPicker({ kind: 'ROUND_ROBIN' }, new Candidates(one)).pick(-1, [one[0]]), one[0]);
  });
});

describe('least request', () => {
  test('prefers the endpoint with fewer active requests', () => {
    const e = eps(1, 1);
    const p = createPicker({ kind: 'LEAST_REQUEST' }, new Candidates(e));
    e[0].active = 5;
    for (let i = 0; i < 50; i++) assert.equal(p.pick(-1, null), e[1]);
  });
});

describe('consistent hash', () => {
  test('the same key always lands on the same endpoint; keys spread over endpoints', () => {
    const e = eps(1, 1, 1, 1);
    const p = createPicker(HASH('header', 'x-user'), new Candidates(e));
    const owners = new Set<EndpointState>();
    for (let k = 0; k < 200; k++) {
      const h = requestHash(HASH('header', 'x-user'), { hashHeaders: { 'x-user': `user-${k}` }, sourceIp: '', query: '' });
      const first = p.pick(h, null)!;
      owners.add(first);
      for (let i = 0; i < 3; i++) assert.equal(p.pick(h, null), first);
    }
    assert.equal(owners.size, 4);
  });

  test('adding an endpoint moves only a share of the keys', () => {
    const before = eps(1, 1, 1);
    const after = eps(1, 1, 1, 1);
    const p1 = createPicker(HASH('sourceIp'), new Candidates(before));
    const p2 = createPicker(HASH('sourceIp'), new Candidates(after));
    let kept = 0;
    const N = 2000;
    for (let k = 0; k < N; k++) {
      const h = requestHash(HASH('sourceIp'), { hashHeaders: {}, sourceIp: `192.168.${k >> 8}.${k & 255}`, query: '' });
      if (p1.pick(h, null)!.hostPort === p2.pick(h, null)!.hostPort) kept++;
    }
    // Ideal is 3/4; a modulo hash would keep about 1/4.
    assert.ok(kept / N > 0.65, `kept ${kept} of ${N}`);
  });

  test('an ejected owner hands its keys to the next endpoint on the ring, and gets them back', () => {
    const e = eps(1, 1, 1);
    const cand = new Candidates(e);
    const p = createPicker(HASH('header', 'k'), cand);
    const h = requestHash(HASH('header', 'k'), { hashHeaders: { k: 'abc' }, sourceIp: '', query: '' });
    const owner = p.pick(h, null)!;
    owner.ejected = true;
    cand.refresh(0);
    const other = p.pick(h, null)!;
    assert.notEqual(other, owner);
    owner.ejected = false;
    cand.refresh(0);
    assert.equal(p.pick(h, null), owner);
  });

  test('hash inputs: missing key is -1 (random pick), cookies and query parameters parsed', () => {
    assert.equal(requestHash(HASH('header', 'x-user'), { hashHeaders: {}, sourceIp: '', query: '' }), -1);
    assert.equal(cookieValue('a=1; session="xyz"; b=2', 'session'), 'xyz');
    assert.equal(cookieValue(['a=1', 'sess=2'], 'sess'), '2');
    assert.equal(cookieValue('xsession=1', 'session'), null);
    assert.equal(queryValue('?a=1&user=bob&user=eve', 'user'), 'bob');
    assert.equal(queryValue('users=1', 'user'), null);
    assert.equal(queryValue('flag', 'flag'), '');
  });

  test('cookie generation only with a ttl, and never with a path that would break the header', () => {
    const lb = (ttl: number | null, path: string | null): LoadBalancer => ({ kind: 'CONSISTENT_HASH', by: 'cookie', name: 'sticky', cookiePath: path, cookieTtlMs: ttl });
    assert.equal(hashCookieAttributes(lb(null, null)), null);
    assert.equal(hashCookieAttributes(lb(60_000, '/app')), '; Max-Age=60; Path=/app; HttpOnly');
    assert.equal(hashCookieAttributes(lb(0, null)), '; Path=/; HttpOnly');
    assert.equal(hashCookieAttributes(lb(1000, '/a;\r\nSet-Cookie: x=1')), null);
  });
});

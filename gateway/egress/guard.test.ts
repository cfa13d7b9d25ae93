// The destinations the egress proxy refuses whatever the allowlist says (guard.ts): what a
// security team needs to hold even in ALLOW_ANY or audit mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DestinationGuard } from './guard.ts';
import { createResolver } from '../resolver.ts';

test('link-local and unspecified addresses are refused on every port, in every spelling', () => {
  const g = new DestinationGuard();
  for (const a of ['169.254.169.254', '169.254.0.1', '0.0.0.0', '0.1.2.3', '::', 'fe80::1', 'fd00:ec2::254', '::ffff:169.254.169.254', '[fe80::1]']) {
    assert.match(g.check(a, 80) ?? '', /link-local or unspecified/, a);
  }
  for (const a of ['93.184.216.34', '10.0.0.1', '2001:db8::1', '127.0.0.1', '::1', 'not-an-ip']) assert.equal(g.check(a, 80), null, a);
});

test("loopback is refused only on the proxy's own ports", () => {
  const g = new DestinationGuard();
  g.addOwnPorts([15000, 15021, 0, 3128]);
  assert.deepEqual(g.ownPorts(), [3128, 15000, 15021]);
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.match(g.check(a, 15000) ?? '', /own port/, a);
  assert.equal(g.check('127.0.0.1', 8080), null);
  assert.equal(g.check('10.0.0.5', 15000), null, 'another machine may use the same port');
});

test('a guarded lookup drops refused addresses and fails when none is left', async () => {
  const g = new DestinationGuard();
  g.addOwnPorts([15000]);
  const r = createResolver(new Map([
    ['meta.test', ['169.254.169.254']],
    ['mixed.test', ['169.254.169.254', '127.0.0.1']],
    ['self.test', ['127.0.0.1']],
  ]));
  const look = (host: string, port: number, all: boolean) => new Promise<{ err: NodeJS.ErrnoException | null; res: unknown }>((resolve) => {
    g.lookup(r.lookup, port)(host, { all }, (err: NodeJS.ErrnoException | null, res: unknown) => resolve({ err, res }));
  });
  const meta = await look('meta.test', 80, false);
  assert.equal(meta.err?.code, 'EGRESSFORBIDDEN');
  assert.match(meta.err?.message ?? '', /meta\.test: 169\.254\.169\.254 is a link-local/);
  const mixed = await look('mixed.test', 80, true);
  assert.equal(mixed.err, null);
  assert.deepEqual(mixed.res, [{ address: '127.0.0.1', family: 4 }]);
  const self = await look('self.test', 15000, false);
  assert.equal(self.err?.code, 'EGRESSFORBIDDEN');
  const ok = await look('self.test', 8080, false);
  assert.deepEqual(ok, { err: null, res: '127.0.0.1' });
});

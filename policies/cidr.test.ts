import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CidrSet, IpAddr, parseCidr, parseIp } from './cidr.ts';

function inBlock(block: string, ip: string): boolean {
  const c = parseCidr(block);
  assert.notEqual(c, null, `${block} should parse`);
  const a = new IpAddr();
  assert.ok(parseIp(ip, a), `${ip} should parse`);
  return new CidrSet([c!]).contains(a);
}

describe('parseIp', () => {
  test('accepts IPv4, IPv6 in its short forms, and strips a zone', () => {
    const a = new IpAddr();
    for (const ip of ['1.2.3.4', '0.0.0.0', '255.255.255.255', '::', '::1', '2001:db8::1', '1:2:3:4:5:6:7:8', '1::', 'fe80::1%eth0', '64:ff9b::192.0.2.1']) {
      assert.ok(parseIp(ip, a), ip);
    }
  });

  test('rejects malformed addresses, including octal-looking octets', () => {
    const a = new IpAddr();
    for (const ip of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '010.0.0.1', '1.2.3.4 ', 'a.b.c.d', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1', '1:', '12345::', 'g::1', '::1.2.3', '1.2.3.4::']) {
      assert.equal(parseIp(ip, a), false, ip);
      assert.equal(a.family, 0, ip);
    }
  });

  test('an IPv4-mapped IPv6 address is the IPv4 address', () => {
    const a = new IpAddr();
    const b = new IpAddr();
    parseIp('::ffff:10.1.2.3', a);
    parseIp('10.1.2.3', b);
    assert.equal(a.family, 4);
    assert.equal(a.w0, b.w0);
    parseIp('::ffff:a01:203', a);
    assert.equal(a.family, 4);
    assert.equal(a.w0, b.w0);
  });
});

describe('parseCidr and matching', () => {
  test('/0 covers its whole family and only that family', () => {
    assert.ok(inBlock('0.0.0.0/0', '1.2.3.4'));
    assert.ok(inBlock('0.0.0.0/0', '255.255.255.255'));
    assert.equal(inBlock('0.0.0.0/0', '::1'), false);
    assert.ok(inBlock('::/0', '2001:db8::1'));
    assert.equal(inBlock('::/0', '1.2.3.4'), false);
  });

  test('/32 and /128 are single addresses; a bare address is the same', () => {
    assert.ok(inBlock('10.0.0.1/32', '10.0.0.1'));
    assert.equal(inBlock('10.0.0.1/32', '10.0.0.2'), false);
    assert.ok(inBlock('10.0.0.1', '10.0.0.1'));
    assert.ok(inBlock('2001:db8::1/128', '2001:db8::1'));
    assert.equal(inBlock('2001:db8::1/128', '2001:db8::2'), false);
    assert.ok(inBlock('2001:db8::1', '2001:db8:0:0:0:0:0:1'));
  });

  test('prefix boundaries, including ones inside a 32-bit word of an IPv6 address', () => {
    assert.ok(inBlock('10.0.0.0/8', '10.255.255.255'));
    assert.equal(inBlock('10.0.0.0/8', '11.0.0.0'), false);
    assert.ok(inBlock('192.168.1.0/25', '192.168.1.127'));
    assert.equal(inBlock('192.168.1.0/25', '192.168.1.128'), false);
    assert.ok(inBlock('2001:db8::/33', '2001:db8:7fff::1'));
    assert.equal(inBlock('2001:db8::/33', '2001:db8:8000::1'), false);
    assert.ok(inBlock('2001:db8::/127', '2001:db8::1'));
    assert.equal(inBlock('2001:db8::/127', '2001:db8::2'), false);
  });

  test('host bits after the prefix are masked off, as Envoy does', () => {
    assert.ok(inBlock('10.1.2.3/8', '10.200.0.1'));
  });

  test('IPv4-mapped blocks and addresses meet plain IPv4', () => {
    assert.ok(inBlock('::ffff:10.0.0.0/104', '10.9.9.9'));
    assert.ok(inBlock('10.0.0.0/8', '::ffff:10.9.9.9'));
    assert.equal(inBlock('::ffff:10.0.0.0/104', '11.0.0.1'), false);
    assert.ok(inBlock('::ffff:1.2.3.4', '1.2.3.4'));
  });

  test('rejects malformed blocks', () => {
    for (const b of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/08', '10.0.0.0/8/8', '::/129', 'fe80::1%eth0/64', '10.0.0/8', 'example.com/8', '', '/8', '10.0.0.0/ 8']) {
      assert.equal(parseCidr(b), null, b);
    }
  });

  test('a set of single addresses and blocks', () => {
    const set = new CidrSet(['1.1.1.1', '2.2.2.2', '10.0.0.0/8', '2001:db8::/32'].map((b) => parseCidr(b)!));
    const a = new IpAddr();
    const check = (ip: string): boolean => { parseIp(ip, a); return set.contains(a); };
    assert.ok(check('2.2.2.2'));
    assert.ok(check('10.3.3.3'));
    assert.ok(check('2001:db8:1::5'));
    assert.equal(check('3.3.3.3'), false);
    assert.equal(check('not-an-ip'), false);
  });
});

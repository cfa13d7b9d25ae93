// The gateway flags `gateway` and `up` share: --resolve, --egress, --proxy-port,
// --proxy-address. What they turn into (identity, forward proxy, resolver), and bad values
// refused with exit code 2 and a message naming the flag and the value.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs } from 'node:util';
import { gatewayFlags, readGatewayFlags } from './common.ts';
import { runToEnd } from '../test/helpers/meshgate.ts';

/** The flags as main.ts parses them. */
function flags(...args: string[]) {
  const { values } = parseArgs({ args, options: gatewayFlags, strict: true });
  return readGatewayFlags(values);
}

describe('egress flags', () => {
  test('an ingress gateway (default labels) is no egress proxy and runs no forward proxy', () => {
    const gw = flags();
    assert.equal(gw.node.egress, undefined);
    assert.equal(gw.forwardProxy, null);
  });

  test('istio=egressgateway makes an egress proxy with the forward proxy on 0.0.0.0:3128', () => {
    const gw = flags('--labels', 'app=edge,istio=egressgateway');
    assert.equal(gw.node.egress, true);
    assert.deepEqual(gw.forwardProxy, { port: 3128, address: '0.0.0.0' });
  });

  test('--egress with any labels; --proxy-port and --proxy-address move it; --proxy-port off runs none', () => {
    const gw = flags('--egress', '--proxy-port', '0', '--proxy-address', '127.0.0.1');
    assert.equal(gw.node.egress, true);
    assert.deepEqual(gw.node.labels, { istio: 'ingressgateway' });
    assert.deepEqual(gw.forwardProxy, { port: 0, address: '127.0.0.1' });
    const off = flags('--labels', 'istio=egressgateway', '--proxy-port', 'off');
    assert.equal(off.node.egress, true, 'still an egress proxy: routed egress traffic through its Gateway listeners');
    assert.equal(off.forwardProxy, null);
    assert.equal(flags('--proxy-port', '8888').forwardProxy, null, 'a proxy port alone does not make an egress proxy');
  });

  test('--resolve pins names (repeatable, several addresses each); others are left to DNS', async () => {
    const gw = flags('--resolve', 'api.example.test=127.0.0.1', '--resolve', 'API.other.test=127.0.0.2,::1', '--resolve', 'api.example.test=127.0.0.3');
    assert.deepEqual([...gw.resolver.overrides], [['api.example.test', ['127.0.0.1', '127.0.0.3']], ['api.other.test', ['127.0.0.2', '::1']]]);
    assert.deepEqual(await gw.resolver.resolve('api.other.test'), ['127.0.0.2', '::1']);
    assert.deepEqual(await gw.resolver.resolve('127.0.0.9'), ['127.0.0.9']);
    assert.equal(flags().resolver.overrides.size, 0);
  });
});

describe('bad egress flag values: exit 2, the flag and the value named', () => {
  for (const [command, args, message] of [
    ['gateway', ['--resolve', 'x=notip'], /--resolve: "x=notip": "notip" is not an IP address/],
    ['gateway', ['--resolve', 'api.example.test'], /--resolve: "api.example.test" is not host=address/],
    ['gateway', ['--resolve', 'http://x/=127.0.0.1'], /--resolve: "http:\/\/x\/=127.0.0.1": "http:\/\/x\/" is not a host name/],
    ['gateway', ['--egress', '--proxy-port', '99999'], /--proxy-port: "99999" is not a port number/],
    ['gateway', ['--egress', '--proxy-address', 'everywhere'], /--proxy-address: "everywhere" is not an IP address/],
    ['up', ['--resolve', 'x=300.1.1.1'], /--resolve: "x=300.1.1.1": "300.1.1.1" is not an IP address/],
  ] as const) {
    test(`meshgate ${command} ${args.join(' ')}`, async () => {
      const r = await runToEnd([command, ...args]);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, message);
    });
  }

  test('--help lists the new flags', async () => {
    for (const command of ['gateway', 'up']) {
      const r = await runToEnd([command, '--help']);
      assert.equal(r.code, 0);
      for (const f of ['--resolve VALUE (repeatable)', '--egress', '--proxy-port VALUE (default "3128")', '--proxy-address VALUE (default "0.0.0.0")']) {
        assert.ok(r.stdout.includes(f), `${command} --help lacks ${f}:\n${r.stdout}`);
      }
    }
  });
});

// The forward proxy's counters as a scrape shows them: per destination host, capped so a
// client cycling through random names cannot grow the exposition without bound, and summed
// over --concurrency processes like every other family.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GatewayMetrics, MAX_EGRESS_HOSTS, renderMetrics } from '../metrics.ts';
import { parseProm, total } from '../../test/helpers/prometheus.ts';

test('destination_host values stop at the cap; later hosts are counted as "other"', async () => {
  const m = new GatewayMetrics();
  for (let i = 0; i < MAX_EGRESS_HOSTS + 250; i++) m.egressDecision(`h${i}.example.com`, 443, 'connect', 'blocked');
  // A host seen before the cap keeps its own series.
  m.egressDecision('h0.example.com', 443, 'connect', 'blocked');
  const s = parseProm(await renderMetrics([m.json()]));
  const hosts = new Set(s.filter((x) => x.name === 'meshgate_egress_requests_total').map((x) => x.labels.destination_host));
  assert.equal(hosts.size, MAX_EGRESS_HOSTS + 1);
  assert.equal(total(s, 'meshgate_egress_requests_total', { destination_host: 'other' }), 250);
  assert.equal(total(s, 'meshgate_egress_requests_total', { destination_host: 'h0.example.com' }), 2);
  assert.equal(total(s, 'meshgate_egress_requests_total'), MAX_EGRESS_HOSTS + 251);
});

test('egress counters and tunnel bytes of several processes add up in one scrape', async () => {
  const a = new GatewayMetrics();
  const b = new GatewayMetrics();
  a.egressDecision('api.example.com', 80, 'http', 'allowed');
  b.egressDecision('api.example.com', 80, 'http', 'allowed');
  b.egressDecision('evil.example', 80, 'http', 'blocked');
  let sent = 10;
  const open = { sent: () => sent, received: () => 7 };
  a.tunnelOpened(open);
  const done = { sent: () => 100, received: () => 1000 };
  b.tunnelOpened(done);
  b.tunnelClosed(done);
  sent = 40;
  const s = parseProm(await renderMetrics([a.json(), b.json()]));
  assert.equal(total(s, 'meshgate_egress_requests_total', { destination_host: 'api.example.com', decision: 'allowed' }), 2);
  assert.equal(total(s, 'meshgate_egress_requests_total', { decision: 'blocked' }), 1);
  assert.equal(total(s, 'meshgate_egress_tunnels_active'), 1);
  // An open tunnel's bytes show while it runs; a closed one's stay counted.
  assert.equal(total(s, 'meshgate_egress_tunnel_bytes_total', { direction: 'sent' }), 140);
  assert.equal(total(s, 'meshgate_egress_tunnel_bytes_total', { direction: 'received' }), 1007);
});

test('a gateway that never proxied egress shows no egress families', async () => {
  const s = parseProm(await renderMetrics([new GatewayMetrics().json()]));
  assert.equal(s.filter((x) => x.name.startsWith('meshgate_egress_')).length, 0);
});

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseDuration, formatDuration } from './duration.ts';

describe('parseDuration', () => {
  test('accepts the Go duration forms Istio users write', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1s'), 1000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('2h'), 7_200_000);
    assert.equal(parseDuration('100us'), 0.1);
    assert.equal(parseDuration('1h2m3s4ms'), 3_723_004);
    assert.equal(parseDuration('0s'), 0);
    assert.equal(parseDuration('0'), 0);
    assert.equal(parseDuration('.5s'), 500);
    assert.equal(parseDuration('250000ns'), 0.25);
  });

  test('rejects everything else', () => {
    for (const bad of ['5 seconds', '-1s', '1', '', 's', '1S', '1d', '1.5', ' 1s', '1s ', '1 s', '+1s', '1s1', 'ms', '1..5s', 'NaN', `${'9'.repeat(80)}s`]) {
      assert.equal(parseDuration(bad), null, `${JSON.stringify(bad)} should be rejected`);
    }
  });

  test('does not treat ms as minutes followed by seconds', () => {
    assert.equal(parseDuration('1ms'), 1);
    assert.equal(parseDuration('1m1s'), 61_000);
  });

  test('formatDuration round-trips whole units', () => {
    for (const s of ['0s', '2h', '5m', '30s', '250ms', '100us']) assert.equal(formatDuration(parseDuration(s)!), s);
  });
});

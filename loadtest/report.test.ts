// The README blocks the benchmarks generate: regenerating replaces them in place and never
// touches the hand-written text around them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONNECT_END, CONNECT_START, PERF_END, PERF_START, replaceConnectSection, replacePerfSection } from './report.ts';

const README = `# x\n\n## Performance\n\n${PERF_START}\nold table\n${PERF_END}\n\nhand-written text\n`;

test('the CONNECT block goes right after the load-test table, then is replaced in place', () => {
  const once = replaceConnectSection(README, 'first run');
  assert.equal(once, `# x\n\n## Performance\n\n${PERF_START}\nold table\n${PERF_END}\n\n${CONNECT_START}\nfirst run\n${CONNECT_END}\n\nhand-written text\n`);
  const twice = replaceConnectSection(once, 'second run');
  assert.equal(twice, once.replace('first run', 'second run'));
  // The load-test table can be regenerated without losing the CONNECT block.
  assert.equal(replacePerfSection(twice, 'new table'), twice.replace('old table', 'new table'));
});

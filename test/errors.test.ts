// The code registry and docs/errors.md list the same codes, both ways, so a user can always
// find the code they were shown (fastify checks its error list against its docs the same way).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROBLEM_CODES } from '../api/problems.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const doc = readFileSync(join(repoRoot, 'docs', 'errors.md'), 'utf8');

/** Sections of the page: `## CODE` heading → body up to the next heading. */
function sections(): Map<string, string> {
  const out = new Map<string, string>();
  const parts = doc.split(/^## /m).slice(1);
  for (const p of parts) {
    const nl = p.indexOf('\n');
    out.set(p.slice(0, nl).trim(), p.slice(nl + 1));
  }
  return out;
}

test('every code in the registry has a section in docs/errors.md', () => {
  const documented = sections();
  const missing = Object.keys(PROBLEM_CODES).filter((c) => !documented.has(c));
  assert.deepEqual(missing, [], 'codes without a section in docs/errors.md');
});

test('every section of docs/errors.md is a code in the registry', () => {
  const unknown = [...sections().keys()].filter((c) => !(c in PROBLEM_CODES));
  assert.deepEqual(unknown, [], 'sections for codes the registry does not have');
});

test('each section explains the code, shows a line as formatProblem prints it, and says how to fix it', () => {
  for (const [code, body] of sections()) {
    const example = /```\n(.*)\n```/.exec(body);
    assert.ok(example, `${code}: no example line`);
    assert.match(example[1], new RegExp(`^(error|warning) ${code} \\S+:\\d+(:\\d+)? `), `${code}: the example is not a formatProblem line`);
    assert.match(body, /^Fix:/m, `${code}: no "Fix:" paragraph`);
    assert.ok(body.split('```')[0].trim().length > 40, `${code}: no explanation before the example`);
  }
});

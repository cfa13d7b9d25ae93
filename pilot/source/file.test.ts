import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileSource, type SourceState } from './file.ts';
import { tempDir, eventually } from '../../test/helpers/tmp.ts';

const vs = (name: string, prefix: string) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${name}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match:
    - uri:
        prefix: ${prefix}
    route:
    - destination:
        host: svc
`;

function names(s: SourceState): string[] {
  return s.resources.map((r) => `${r.kind}/${r.metadata.name}`).sort();
}

test('file source: sees files added, edited and removed, one change event per burst', async (t) => {
  const dir = await tempDir();
  const src = new FileSource(dir.path, { debounceMs: 30 });
  t.after(async () => { src.close(); await dir.cleanup(); });
  await dir.write('a.yaml', vs('a', '/a'));
  assert.deepEqual(names(await src.load()), ['VirtualService/a']);

  const events: SourceState[] = [];
  src.on('change', (s: SourceState) => events.push(s));
  src.watch();
  // A burst: three files written back to back.
  await dir.write('b.yaml', vs('b', '/b'));
  await dir.write('nested/c.yml', vs('c', '/c'));
  await dir.write('a.yaml', vs('a', '/a2'));
  const last: SourceState = await eventually(() => {
    const e = events.at(-1);
    return e && names(e).length === 3 ? e : null;
  }, 2000, 'three resources');
  assert.equal(events.length, 1, 'a burst of writes is one change');
  const a = last.resources.find((r) => r.metadata.name === 'a')!;
  assert.equal((a.spec as { http: { match: { uri: { prefix: string } }[] }[] }).http[0].match[0].uri.prefix, '/a2');

  await dir.remove('b.yaml');
  await eventually(() => events.length === 2, 2000, 'removal event');
  assert.deepEqual(names(events[1]), ['VirtualService/a', 'VirtualService/c']);
});

test('file source: a file that stops parsing keeps its last good resources and reports line and column', async (t) => {
  const dir = await tempDir();
  const src = new FileSource(dir.path, { debounceMs: 30 });
  t.after(async () => { src.close(); await dir.cleanup(); });
  await dir.write('a.yaml', vs('a', '/a'));
  await src.load();
  const events: SourceState[] = [];
  src.on('change', (s: SourceState) => events.push(s));
  src.watch();
  await dir.write('a.yaml', 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [\n  http: x\n');
  const s: SourceState = await eventually(() => events.at(-1) ?? null, 2000, 'change event');
  assert.deepEqual(names(s), ['VirtualService/a'], 'the last good version is kept');
  const yamlProblem = s.problems.find((p) => p.code === 'MG_CONFIG_YAML');
  assert.ok(yamlProblem, 'the YAML error is reported');
  assert.equal(yamlProblem.file?.endsWith('a.yaml'), true);
  assert.ok(typeof yamlProblem.line === 'number' && yamlProblem.line >= 6, `line of the error: ${yamlProblem.line}`);
  assert.ok(typeof yamlProblem.column === 'number');
  assert.match(yamlProblem.message, /keeping the last version/);
});

test('file source: a folder that does not exist yet is empty, not an error', async () => {
  const src = new FileSource('/nonexistent/meshgate/config');
  const s = await src.load();
  assert.deepEqual(s.resources, []);
  src.close();
});

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText, positionOf, parseFieldPath, documentKeys } from './load.ts';
import { fieldPath } from './problems.ts';

const text = `# leading comment
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        "x-user.id":
          exact: a
    route:
    - destination:
        host: reviews
---
apiVersion: v1
kind: Secret
metadata: {name: s}
type: kubernetes.io/tls
data:
  tls.crt: eA==
`;

describe('positions of fields', () => {
  const { resources, problems } = parseConfigText('p.yaml', text);
  const [vs, secret] = resources;

  test('resources remember their file and first line, and default to namespace default', () => {
    assert.deepEqual(problems, []);
    assert.deepEqual(vs.source, { file: 'p.yaml', line: 2, doc: 0 });
    assert.equal(vs.metadata.namespace, 'default');
    assert.equal(secret.source.line, 17);
  });

  test('a field path resolves to the line and column of its key or list item', () => {
    assert.deepEqual(positionOf(vs, 'spec.http[0].route[0].destination.host'), { line: 15, column: 9 });
    assert.deepEqual(positionOf(vs, ['spec', 'http', 0, 'match', 0, 'headers', 'x-user.id', 'exact']), { line: 12, column: 11 });
    assert.deepEqual(positionOf(vs, 'spec.http[0].match[0]'), { line: 10, column: 7 });
  });

  test('a missing field falls back to its nearest existing ancestor', () => {
    assert.deepEqual(positionOf(vs, 'spec.http[0].timeout'), { line: 9, column: 5 });
    assert.deepEqual(positionOf(vs, 'spec.http[7].route'), { line: 8, column: 3 });
  });

  test('Secret fields lifted into spec point at their top-level keys', () => {
    assert.deepEqual(positionOf(secret, 'spec.data["tls.crt"]'), { line: 22, column: 3 });
    assert.deepEqual(positionOf(secret, 'spec.type'), { line: 20, column: 1 });
  });

  test('resources not loaded from text have no position', () => {
    assert.equal(positionOf({ ...vs }, 'spec'), undefined);
    assert.equal(documentKeys({ ...vs }), undefined);
    assert.deepEqual(documentKeys(vs), ['apiVersion', 'kind', 'metadata', 'spec']);
  });

  test('parseFieldPath reverses fieldPath', () => {
    for (const segs of [['spec', 'http', 0, 'route', 12, 'weight'], ['spec', 'data', 'tls.crt'], ['spec', 'headers', 'a"b[c]', 'x']] as (string | number)[][]) {
      assert.deepEqual(parseFieldPath(fieldPath(segs)), segs);
    }
  });
});

describe('loader robustness', () => {
  test('metadata that is not a mapping does not leak into the resource', () => {
    const { resources } = parseConfigText('m.yaml', 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: gw\nspec: {}\n');
    assert.equal(resources[0].metadata.name, '');
    assert.equal(Object.keys(resources[0].metadata).sort().join(','), 'name,namespace');
  });

  test('documents that are empty or comments only are skipped', () => {
    const { resources, problems } = parseConfigText('e.yaml', '---\n# nothing\n---\n\n---\n');
    assert.deepEqual([resources, problems], [[], []]);
  });
});

describe('documents that are not resources', () => {
  test('a resource missing its kind is an error; a data file with no resource fields is skipped with a warning', () => {
    const missing = parseConfigText('k.yaml', 'apiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {}\n');
    assert.deepEqual(missing.problems.map((p) => [p.code, p.severity, p.line]), [['MG_CONFIG_MISSING_TYPE', 'error', 1]]);
    const jwks = parseConfigText('jwks.json', '{"keys": [{"kty": "RSA", "e": "AQAB"}]}');
    assert.deepEqual(jwks.problems.map((p) => [p.code, p.severity]), [['MG_CONFIG_MISSING_TYPE', 'warning']]);
    assert.deepEqual(jwks.resources, []);
  });
});

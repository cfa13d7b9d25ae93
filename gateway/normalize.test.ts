import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeTarget, removeDotSegments } from './normalize.ts';

function path(target: string, mergeSlashes = false): string | null {
  return normalizeTarget(target, { mergeSlashes })?.path ?? null;
}

describe('normalizeTarget (Istio BASE normalisation)', () => {
  test('leaves ordinary paths alone and splits the query', () => {
    assert.deepEqual(normalizeTarget('/api/v1/items?x=1&y=2'), { path: '/api/v1/items', query: 'x=1&y=2' });
    assert.deepEqual(normalizeTarget('/'), { path: '/', query: '' });
  });

  test('resolves dot segments: /a/../b reaches /b, not /a/../b', () => {
    assert.equal(path('/a/../b'), '/b');
    assert.equal(path('/a/./b/.'), '/a/b/');
    assert.equal(path('/a/b/..'), '/a/');
  });

  test('%2e%2e resolves like .. (upper and lower case hex)', () => {
    assert.equal(path('/a/%2e%2e/b'), '/b');
    assert.equal(path('/a/%2E%2E/admin'), '/admin');
    assert.equal(path('/a/.%2e/b'), '/b');
  });

  test('/.. and /../.. cannot climb above the root', () => {
    assert.equal(path('/..'), '/');
    assert.equal(path('/../../etc/passwd'), '/etc/passwd');
  });

  test('a fragment is cut: /admin#/../public is /admin [CVE-2021-39156]', () => {
    assert.deepEqual(normalizeTarget('/admin#/../public'), { path: '/admin', query: '' });
    assert.deepEqual(normalizeTarget('/p?x=1#frag'), { path: '/p', query: 'x=1' });
  });

  test('%00 and raw control characters are refused', () => {
    assert.equal(normalizeTarget('/%00'), null);
    assert.equal(normalizeTarget('/a%00b'), null);
    assert.equal(normalizeTarget('/a\x01b'), null);
    assert.equal(normalizeTarget('/a?x=\x7f'), null);
  });

  test('encoded slashes and backslashes stay encoded (Istio default) [CVE-2021-31920]', () => {
    assert.equal(path('/admin%2Fx'), '/admin%2Fx');
    assert.equal(path('/admin%2fx'), '/admin%2Fx');
    assert.equal(path('/admin%5Cx'), '/admin%5Cx');
    assert.equal(path('/a%2F..%2Fadmin'), '/a%2F..%2Fadmin');
  });

  test('unreserved escapes are decoded, others keep their escape', () => {
    assert.equal(path('/%61dmin'), '/admin');
    assert.equal(path('/a%7Eb%20c'), '/a~b%20c');
    assert.equal(path('/bad%zzescape%4'), '/bad%zzescape%4');
  });

  test('a backslash is a slash', () => {
    assert.equal(path('/a\\..\\admin'), '/admin');
  });

  test('duplicate slashes are kept unless merging is on', () => {
    assert.equal(path('//admin'), '//admin');
    assert.equal(path('//admin//x', true), '/admin/x');
  });

  test('targets that do not start with / are refused', () => {
    assert.equal(normalizeTarget('*'), null);
    assert.equal(normalizeTarget(''), null);
  });

  test('removeDotSegments follows RFC 3986 5.2.4', () => {
    assert.equal(removeDotSegments('/a/b/c/./../../g'), '/a/g');
    assert.equal(removeDotSegments('/mid/content=5/../6'), '/mid/6');
  });
});

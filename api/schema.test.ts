import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { validateSpecSchema, hasSchema, suggest } from './schema.ts';

const V1 = 'networking.istio.io/v1';

describe('Istio CRD schemas', () => {
  test('the supported kinds have schemas for every served version; unknown versions have none', () => {
    for (const kind of ['Gateway', 'VirtualService', 'DestinationRule', 'ServiceEntry']) {
      for (const v of ['v1', 'v1beta1', 'v1alpha3']) assert.ok(hasSchema(kind, `networking.istio.io/${v}`), `${kind} ${v}`);
    }
    assert.equal(hasSchema('VirtualService', 'networking.istio.io/v9'), false);
    assert.equal(validateSpecSchema('Frobnicator', V1, {}), null);
  });

  test('the CRD duration rule applies to every duration field, including ones with no hand-written check', () => {
    const issues = validateSpecSchema('VirtualService', V1, { hosts: ['a'], http: [{ retries: { backoff: 'soon' }, route: [{ destination: { host: 'a' } }] }] });
    assert.deepEqual(issues, [{ code: 'MG_CONFIG_DURATION', severity: 'error', path: ['spec', 'http', 0, 'retries', 'backoff'], message: '"soon" is not a duration (use forms like 500ms, 1s, 1m30s)' }]);
  });

  test('the CRD port-range rule is applied', () => {
    const issues = validateSpecSchema('ServiceEntry', V1, { hosts: ['a'], ports: [{ number: 70000, name: 'p' }] });
    assert.deepEqual(issues?.map((i) => [i.code, i.path.join('.')]), [['MG_CONFIG_INVALID', 'spec.ports.0.number']]);
  });

  test('fields under preserve-unknown-fields are not reported; typos elsewhere are, with a suggestion', () => {
    const issues = validateSpecSchema('Gateway', V1, { selector: { any: 'label' }, servers: [{ port: { number: 80, name: 'http', protocl: 'HTTP' }, hosts: ['*'] }] });
    assert.deepEqual(issues?.map((i) => [i.code, i.path.join('.'), i.message]), [
      ['MG_CONFIG_SCHEMA', 'spec.servers.0.port.protocol', 'is required'],
      ['MG_CONFIG_UNKNOWN_FIELD', 'spec.servers.0.port.protocl', 'unknown field "protocl"; did you mean "protocol"?'],
    ]);
  });

  test('suggest proposes only close names', () => {
    assert.equal(suggest('prefx', ['exact', 'prefix', 'regex']), 'prefix');
    assert.equal(suggest('Host', ['host', 'subset']), 'host');
    assert.equal(suggest('zzzzzz', ['exact', 'prefix', 'regex']), null);
  });
});

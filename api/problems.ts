// Every problem meshgate reports about configuration has a code from this registry, so a
// user can search docs/errors.md for the code they were shown. test/errors.test.ts checks
// that the registry and the docs page list the same codes.

export type Severity = 'error' | 'warning';

export const PROBLEM_CODES = {
  MG_CONFIG_YAML: 'the file is not valid YAML',
  MG_CONFIG_NOT_OBJECT: 'a YAML document is not a mapping (object)',
  MG_CONFIG_MISSING_TYPE: 'apiVersion or kind is missing',
  MG_CONFIG_UNKNOWN_KIND: 'the kind is not one meshgate or Kubernetes knows',
  MG_CONFIG_IGNORED_KIND: 'a known Kubernetes/Istio kind that meshgate does not read yet; ignored',
  MG_CONFIG_BAD_API_VERSION: 'the apiVersion is not served for this kind',
  MG_CONFIG_BAD_NAME: 'metadata.name or metadata.namespace is missing or not a valid DNS label',
  MG_CONFIG_DUPLICATE: 'two documents define the same kind/namespace/name',
  MG_CONFIG_SCHEMA: 'a field does not match Istio\'s schema (type, enum, required field)',
  MG_CONFIG_UNKNOWN_FIELD: 'a field that Istio\'s schema does not define',
  MG_CONFIG_UNSUPPORTED_FIELD: 'a valid Istio field that meshgate does not implement yet; ignored',
  MG_CONFIG_DURATION: 'a duration is not valid (use forms like 500ms, 1s, 1m30s)',
  MG_CONFIG_REGEX: 'a regular expression is not valid RE2 or is too long',
  MG_CONFIG_HOST: 'a host name is not valid',
  MG_CONFIG_INVALID: 'a value breaks a rule Istio enforces (ranges, combinations of fields)',
  MG_CONFIG_FILE: 'a file named in the config (certificate, key) cannot be read',
  MG_REF_SUBSET: 'a route names a subset that no DestinationRule defines for that host',
  MG_REF_HOST: 'a route names a host that is not in the service registry',
  MG_REF_PORT: 'a route names no port, or one the service does not have',
  MG_REF_GATEWAY: 'a VirtualService names a Gateway that does not exist',
  MG_REF_SECRET: 'a credentialName names a Secret that does not exist or is not a TLS secret',
  MG_GATEWAY_PORT_CONFLICT: 'two servers on one port disagree on protocol or TLS',
  MG_GATEWAY_DUPLICATE_HOST: 'two servers on one port claim the same host',
} as const;

export type ProblemCode = keyof typeof PROBLEM_CODES;

export interface Problem {
  code: ProblemCode;
  severity: Severity;
  /** File path, when the problem comes from a file. */
  file?: string;
  /** 1-based line and column in that file, when known. */
  line?: number;
  column?: number;
  /** `Kind/namespace/name`, when the problem is about one resource. */
  resource?: string;
  /** Field path in the resource, e.g. `spec.http[0].route[1].destination.host`. */
  field?: string;
  /** One sentence a user can act on. */
  message: string;
}

/**
 * One line per problem, the format `analyze` prints and the log and admin port repeat:
 *   error MG_CONFIG_DURATION examples/vs.yaml:12:7 VirtualService/default/reviews spec.http[0].timeout: "5 seconds" is not a duration (use forms like 500ms, 1s, 1m30s)
 */
export function formatProblem(p: Problem): string {
  const where = p.file ? `${p.file}${p.line ? `:${p.line}${p.column ? `:${p.column}` : ''}` : ''} ` : '';
  const what = p.resource ? `${p.resource} ` : '';
  const field = p.field ? `${p.field}: ` : '';
  return `${p.severity} ${p.code} ${where}${what}${field}${p.message}`;
}

export function resourceKey(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

/** Converts a JSON pointer or path segments to the dotted form used in messages: spec.http[0].route */
export function fieldPath(segments: readonly (string | number)[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number' || /^\d+$/.test(s)) out += `[${s}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(s)) out += out ? `.${s}` : s;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

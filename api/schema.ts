// Structural validation against Istio's own CRD schemas (api/crds/crd-all.gen.yaml) and
// meshgate's (api/crds/meshgate.gen.yaml), so a resource the Kubernetes API server would
// refuse is refused here too, with the same field names. Each kind+version is compiled once, on first use; validating a resource is
// then one call into ajv's generated code plus one walk for fields the schema lacks.
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { parseDuration } from './duration.ts';
import type { ProblemCode, Severity } from './problems.ts';

/** A problem found in one field, before validate.ts adds the file, position and resource. */
export interface FieldIssue {
  code: ProblemCode;
  severity: Severity;
  path: (string | number)[];
  message: string;
}

type Schema = Record<string, unknown> & {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  oneOf?: Schema[];
  anyOf?: Schema[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string }[];
};

interface Compiled {
  spec: Schema;
  validate: ValidateFunction;
}

/** Searched in order; a kind is taken from the first file that defines it. */
const CRD_FILES = [
  new URL('./crds/crd-all.gen.yaml', import.meta.url),
  new URL('./crds/meshgate.gen.yaml', import.meta.url),
];

let crdTexts: string[] | null = null;
let ajv: Ajv | null = null;
/** kind → version → compiled schema (null: the CRD does not serve that version). */
const compiled = new Map<string, Map<string, Compiled | null>>();
/** Versions of one kind usually share one schema; compile identical text once. */
const bySchemaText = new Map<string, Compiled>();

// ---------------------------------------------------------------- CEL rules

/**
 * The CEL rules (`x-kubernetes-validations`) that we evaluate, by their exact text. The
 * API server runs them; we have no CEL engine, so rules not listed here are skipped and
 * the ones that matter are re-implemented in validate.ts's semantic checks instead.
 */
const CEL_RULES: Readonly<Record<string, { code: ProblemCode; test: (v: unknown) => boolean; message: (v: unknown) => string }>> = {
  "duration(self) >= duration('1ms')": {
    code: 'MG_CONFIG_DURATION',
    test: (v) => typeof v === 'string' && (parseDuration(v) ?? -1) >= 1,
    message: (v) => parseDuration(String(v)) === null
      ? `${JSON.stringify(v)} is not a duration (use forms like 500ms, 1s, 1m30s)`
      : `${JSON.stringify(v)} is too short; a duration here must be at least 1ms`,
  },
  '0 < self && self <= 65535': {
    code: 'MG_CONFIG_INVALID',
    test: (v) => typeof v !== 'number' || (v > 0 && v <= 65535),
    message: (v) => `port ${String(v)} is out of range; it must be between 1 and 65535`,
  },
  'self != "*"': {
    code: 'MG_CONFIG_HOST',
    test: (v) => v !== '*',
    message: () => 'a host cannot be "*" alone here; name the hosts',
  },
};

interface CelError { rule: string; code: ProblemCode; text: string }

function celKeyword(rules: unknown): (data: unknown) => boolean {
  const known = (Array.isArray(rules) ? rules : [])
    .map((r: { rule?: string }) => (typeof r?.rule === 'string' ? { rule: r.rule, check: CEL_RULES[r.rule] } : null))
    .filter((x): x is { rule: string; check: (typeof CEL_RULES)[string] } => x !== null && x.check !== undefined);
  if (known.length === 0) return () => true;
  const v = (data: unknown): boolean => {
    for (const k of known) {
      if (!k.check.test(data)) {
        const params: CelError = { rule: k.rule, code: k.check.code, text: k.check.message(data) };
        (v as unknown as { errors: Partial<ErrorObject>[] }).errors = [{ keyword: 'x-kubernetes-validations', message: params.text, params: params as unknown as Record<string, unknown> }];
        return false;
      }
    }
    return true;
  };
  return v;
}

function getAjv(): Ajv {
  if (ajv !== null) return ajv;
  ajv = new Ajv({
    strict: false,
    allErrors: true, // report every problem in one pass, as `analyze` promises
    verbose: true, // errors carry their parent schema (to name the oneOf choices)
    validateFormats: false, // int32/date-time/byte are annotations for the API server
    code: { optimize: 1 },
  });
  ajv.addKeyword({ keyword: 'x-kubernetes-validations', errors: true, compile: celKeyword });
  for (const k of ['x-kubernetes-preserve-unknown-fields', 'x-kubernetes-int-or-string', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys']) {
    ajv.addKeyword({ keyword: k });
  }
  return ajv;
}

// ---------------------------------------------------------------- CRD lookup

/** The raw openAPIV3Schema of `spec` for kind+version from the CRD file, or null. */
function findSpecSchema(kind: string, version: string): Schema | null {
  crdTexts ??= CRD_FILES.map((f) => readFileSync(f, 'utf8'));
  // Parsing only the document for this kind keeps the first validation fast: Istio's file
  // holds every Istio CRD and is ~20k lines.
  const marker = `\n    kind: ${kind}\n`;
  const crdText = crdTexts.find((t) => t.includes(marker));
  if (crdText === undefined) return null;
  const at = crdText.indexOf(marker);
  const start = crdText.lastIndexOf('\n---\n', at);
  const end = crdText.indexOf('\n---\n', at);
  const docText = crdText.slice(start < 0 ? 0 : start + 5, end < 0 ? undefined : end);
  const crd = parseDocument(docText).toJS() as { spec?: { versions?: { name: string; served?: boolean; schema?: { openAPIV3Schema?: Schema } }[] } };
  const v = crd.spec?.versions?.find((x) => x.name === version && x.served !== false);
  const spec = v?.schema?.openAPIV3Schema?.properties?.spec;
  return spec ?? null;
}

/**
 * Prepares a CRD schema for ajv: drops descriptions (they are most of the bytes and slow
 * compilation) and spells out int-or-string as the anyOf it means when the CRD does not.
 */
function prepare(s: Schema): Schema {
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'description') continue;
    if (k === 'properties' && v && typeof v === 'object') {
      const props: Record<string, Schema> = {};
      for (const [pk, pv] of Object.entries(v as Record<string, Schema>)) props[pk] = prepare(pv);
      out.properties = props;
    } else if ((k === 'items' || k === 'additionalProperties' || k === 'not') && v && typeof v === 'object') {
      out[k] = prepare(v as Schema);
    } else if ((k === 'oneOf' || k === 'anyOf' || k === 'allOf') && Array.isArray(v)) {
      out[k] = v.map((x) => prepare(x as Schema));
    } else {
      out[k] = v;
    }
  }
  if (out['x-kubernetes-int-or-string'] === true && out.type === undefined && out.anyOf === undefined) {
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  return out;
}

function compiledFor(kind: string, apiVersion: string): Compiled | null {
  const version = apiVersion.slice(apiVersion.indexOf('/') + 1);
  let versions = compiled.get(kind);
  if (versions === undefined) {
    versions = new Map();
    compiled.set(kind, versions);
  }
  const cached = versions.get(version);
  if (cached !== undefined) return cached;
  const raw = findSpecSchema(kind, version);
  let result: Compiled | null = null;
  if (raw !== null) {
    const spec = prepare(raw);
    const text = JSON.stringify(spec);
    result = bySchemaText.get(text) ?? null;
    if (result === null) {
      result = { spec, validate: getAjv().compile(spec) };
      bySchemaText.set(text, result);
    }
  }
  versions.set(version, result);
  return result;
}

/** True when the CRD file has a schema for this kind and apiVersion. */
export function hasSchema(kind: string, apiVersion: string): boolean {
  return compiledFor(kind, apiVersion) !== null;
}

/** Compiles the schemas of the given kinds now (e.g. at start-up) instead of on first use. */
export function warmSchemas(kinds: readonly { kind: string; apiVersion: string }[]): void {
  for (const k of kinds) compiledFor(k.kind, k.apiVersion);
}

// ---------------------------------------------------------------- errors → issues

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '') return [];
  return pointer.slice(1).split('/').map((s) => {
    const u = s.replace(/~1/g, '/').replace(/~0/g, '~');
    return /^\d+$/.test(u) ? Number(u) : u;
  });
}

const TYPE_WORDS: Readonly<Record<string, string>> = {
  integer: 'an integer', number: 'a number', string: 'a string', boolean: 'true or false',
  array: 'a list', object: 'a mapping',
};

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}…` : JSON.stringify(v);
  return String(v);
}

/** The `required` property names across oneOf branches: the fields of which one may be set. */
function choicesOf(s: Schema | undefined): string[] {
  const names = new Set<string>();
  for (const b of s?.oneOf ?? []) for (const r of b.required ?? []) names.add(r);
  return [...names];
}

function issueFrom(e: ErrorObject): FieldIssue | null {
  // Branch errors inside oneOf/anyOf/not restate the combinator's own error.
  if (/\/(oneOf|anyOf)\/\d+\/|\/not\//.test(e.schemaPath)) return null;
  const path = ['spec', ...pointerToPath(e.instancePath)];
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path: [...path, String(p.missingProperty)], message: 'is required' };
    case 'type': {
      const want = String(p.type).split(',').map((t) => TYPE_WORDS[t] ?? t).join(' or ');
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `must be ${want} (got ${describeValue(e.data)})` };
    }
    case 'enum':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `${describeValue(e.data)} is not allowed; must be one of ${(p.allowedValues as unknown[]).join(', ')}` };
    case 'minimum': case 'exclusiveMinimum':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `${describeValue(e.data)} is too small; must be ${e.keyword === 'minimum' ? 'at least' : 'more than'} ${String(p.limit)}` };
    case 'maximum': case 'exclusiveMaximum':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `${describeValue(e.data)} is too large; must be ${e.keyword === 'maximum' ? 'at most' : 'less than'} ${String(p.limit)}` };
    case 'maxItems':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `has too many entries; at most ${String(p.limit)} allowed` };
    case 'minItems':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `needs at least ${String(p.limit)} entr${p.limit === 1 ? 'y' : 'ies'}` };
    case 'maxLength':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `is too long; at most ${String(p.limit)} characters allowed` };
    case 'minLength':
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `is too short; at least ${String(p.limit)} characters required` };
    case 'oneOf': {
      const choices = choicesOf(e.parentSchema as Schema | undefined);
      const message = choices.length > 0
        ? `set only one of ${choices.join(', ')}`
        : 'matches more than one allowed form; set only one of the alternatives';
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message };
    }
    case 'anyOf': {
      const parent = e.parentSchema as Schema | undefined;
      if (parent?.['x-kubernetes-int-or-string']) {
        return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: `must be an integer or a string (got ${describeValue(e.data)})` };
      }
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: 'does not match any allowed form' };
    }
    case 'x-kubernetes-validations': {
      const c = p as unknown as CelError;
      return { code: c.code, severity: 'error', path, message: c.text };
    }
    default:
      return { code: 'MG_CONFIG_SCHEMA', severity: 'error', path, message: e.message ?? `fails the ${e.keyword} rule` };
  }
}

// ---------------------------------------------------------------- unknown fields

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

/** The known name closest to a misspelt one, when it is close enough to be a likely typo. */
export function suggest(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  const lower = name.toLowerCase();
  for (const k of known) {
    const d = k.toLowerCase() === lower ? 0 : editDistance(lower, k.toLowerCase());
    if (d < bestD) { bestD = d; best = k; }
  }
  return best !== null && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : null;
}

/**
 * Fields the schema does not define. The API server would prune them silently, which turns
 * a typo like `prefx:` into a match-everything rule; we refuse them instead.
 */
function unknownFields(s: Schema, data: unknown, path: (string | number)[], out: FieldIssue[]): void {
  if (data === null || typeof data !== 'object') return;
  if (Array.isArray(data)) {
    if (s.items) for (let i = 0; i < data.length; i++) unknownFields(s.items, data[i], [...path, i], out);
    return;
  }
  if (s['x-kubernetes-preserve-unknown-fields'] === true) return;
  const props = s.properties;
  const extra = s.additionalProperties;
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (v === undefined) continue;
    const child = props?.[k];
    if (child !== undefined) unknownFields(child, v, [...path, k], out);
    else if (extra && typeof extra === 'object') unknownFields(extra, v, [...path, k], out);
    else if (props !== undefined && extra !== true) {
      const known = Object.keys(props);
      const hint = suggest(k, known);
      out.push({
        code: 'MG_CONFIG_UNKNOWN_FIELD', severity: 'error', path: [...path, k],
        message: hint !== null
          ? `unknown field ${JSON.stringify(k)}; did you mean ${JSON.stringify(hint)}?`
          : `unknown field ${JSON.stringify(k)}; the schema allows ${known.join(', ')}`,
      });
    }
  }
}

/**
 * Checks `spec` of a resource against Istio's schema for its kind and apiVersion. Returns
 * null when the CRD file has no schema for them (the caller reports that).
 */
export function validateSpecSchema(kind: string, apiVersion: string, spec: unknown): FieldIssue[] | null {
  const c = compiledFor(kind, apiVersion);
  if (c === null) return null;
  const out: FieldIssue[] = [];
  if (!c.validate(spec)) {
    for (const e of c.validate.errors ?? []) {
      const issue = issueFrom(e);
      if (issue !== null) out.push(issue);
    }
  }
  unknownFields(c.spec, spec, ['spec'], out);
  return out;
}

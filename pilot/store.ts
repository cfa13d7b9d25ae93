// The config store turns what a source read into the snapshot translation works on.
//
// It keeps, per resource (kind/namespace/name), the last version that validated: when an
// edit makes a resource invalid, the edit is rejected with a problem that names the file,
// field and reason, and the previous version keeps serving. Everything else in the
// config is unaffected. A resource that was never valid is simply not there.
//
// The mesh config (`--mesh-config`) travels in the snapshot too, so a change to it reaches
// proxies like any config change. It is kept the same way: a version with an error is
// reported and the last good one keeps applying (before any, the defaults).
import { EventEmitter } from 'node:events';
import type { ConfigSnapshot, Resource } from '../api/istio.ts';
import { resourceKey, type Problem } from '../api/problems.ts';
import { validateResource, toSnapshot } from '../api/validate.ts';
import { defaultMeshConfig, sameMeshConfig } from '../api/meshconfig.ts';
import type { MeshConfig, MeshConfigResult } from '../api/meshconfig.ts';
import { checkReferences } from './translate/references.ts';
import { egressEntries } from './translate/egress.ts';
import type { SourceState } from './source/file.ts';

export interface StoreState {
  /** Increases by one with every snapshot that differs from the previous one. */
  generation: number;
  snapshot: ConfigSnapshot;
  /** Problems of the current state: mesh config, load, validation, rejected edits, references, egress allowlist. */
  problems: Problem[];
}

/** Emits `update` (StoreState) after each source change. */
export class ConfigStore extends EventEmitter {
  private accepted = new Map<string, Resource>();
  // Validation is cached per Resource object: the file source re-creates objects only for
  // files that changed, so an edit re-validates one file, not the whole folder.
  private validated = new WeakMap<Resource, Problem[]>();
  private mesh: MeshConfig = defaultMeshConfig();
  /** Whether a mesh config file was ever accepted (what a rejected one falls back to). */
  private meshAccepted = false;
  private meshProblems: Problem[] = [];
  private configProblems: Problem[] = [];
  /** The egress check of the last ServiceEntry list: an unchanged snapshot is not checked again. */
  private egressChecked: { entries: ConfigSnapshot['serviceEntries']; problems: Problem[] } | null = null;
  private current: StoreState = {
    generation: 0,
    snapshot: {
      gateways: [], virtualServices: [], destinationRules: [], serviceEntries: [], secrets: [], requestAuthentications: [], authorizationPolicies: [], rateLimitPolicies: [],
      mesh: this.mesh,
    },
    problems: [],
  };

  get state(): StoreState {
    return this.current;
  }

  update(source: SourceState): StoreState {
    const problems: Problem[] = [...source.problems];
    const next = new Map<string, Resource>();
    const firstSeen = new Map<string, Resource>();
    for (const r of source.resources) {
      const key = resourceKey(r.kind, r.metadata.namespace, r.metadata.name);
      const dup = firstSeen.get(key);
      if (dup) {
        problems.push({
          code: 'MG_CONFIG_DUPLICATE', severity: 'error', file: r.source.file, line: r.source.line, resource: key,
          message: `${key} is also defined in ${dup.source.file}:${dup.source.line}; this copy is ignored`,
        });
        continue;
      }
      firstSeen.set(key, r);
      let found = this.validated.get(r);
      if (!found) {
        found = validateResource(r);
        this.validated.set(r, found);
      }
      problems.push(...found);
      if (!found.some((p) => p.severity === 'error')) {
        next.set(key, r);
        continue;
      }
      const previous = this.accepted.get(key);
      if (previous) {
        next.set(key, previous);
        problems.push({
          code: 'MG_CONFIG_INVALID', severity: 'error', file: r.source.file, line: r.source.line, resource: key,
          message: `this version of ${key} was rejected; the last valid version (from ${previous.source.file}:${previous.source.line}) keeps serving`,
        });
      }
    }
    let snapshot = toSnapshot([...next.values()]);
    let references = checkReferences(snapshot);
    // An edit that breaks a reference (a subset or gateway that does not exist, a port the
    // service lacks) is rejected like an invalid one when a previous version exists: a typo
    // in a subset name must not turn a serving route into 503s. References that break
    // because *another* resource changed (a subset removed from a DestinationRule) are
    // reported but applied, as Istio does.
    const reverted = this.revertBrokenEdits(next, references, problems);
    if (reverted) {
      snapshot = toSnapshot([...next.values()]);
      references = checkReferences(snapshot);
    }
    const changed = next.size !== this.accepted.size || [...next].some(([k, r]) => this.accepted.get(k) !== r);
    if (changed) snapshot.mesh = this.mesh;
    else snapshot = this.current.snapshot;
    this.accepted = next;
    problems.push(...references);
    // ServiceEntries the egress allowlist cannot use, reported whether or not an egress proxy
    // is connected yet, so `analyze`, the log and every proxy show the same lines.
    let egress = this.egressChecked;
    if (egress === null || egress.entries !== snapshot.serviceEntries) {
      egress = { entries: snapshot.serviceEntries, problems: egressEntries(snapshot).problems };
      this.egressChecked = egress;
    }
    problems.push(...egress.problems);
    this.configProblems = problems;
    this.current = { generation: this.current.generation + (changed ? 1 : 0), snapshot, problems: [...this.meshProblems, ...problems] };
    this.emit('update', this.current);
    return this.current;
  }

  /** The mesh config file was (re)read. */
  updateMesh(result: MeshConfigResult): StoreState {
    const problems = [...result.problems];
    let next = this.mesh;
    if (result.config !== null) {
      next = result.config;
      this.meshAccepted = true;
    } else {
      const keeps = `outboundTrafficPolicy.mode ${this.mesh.outboundTrafficPolicy.mode}, egress audit ${this.mesh.egressAudit ? 'on' : 'off'}`;
      problems.push({
        code: 'MG_CONFIG_INVALID', severity: 'error', file: result.file, resource: 'MeshConfig',
        message: this.meshAccepted
          ? `this version of the mesh config was rejected; the last valid one keeps applying (${keeps})`
          : `the mesh config was rejected; the defaults apply until it is fixed (${keeps})`,
      });
    }
    this.meshProblems = problems;
    const changed = !sameMeshConfig(next, this.mesh);
    this.mesh = next;
    const snapshot = changed ? { ...this.current.snapshot, mesh: next } : this.current.snapshot;
    this.current = { generation: this.current.generation + (changed ? 1 : 0), snapshot, problems: [...problems, ...this.configProblems] };
    this.emit('update', this.current);
    return this.current;
  }

  private revertBrokenEdits(next: Map<string, Resource>, references: Problem[], problems: Problem[]): boolean {
    let reverted = false;
    const broken = new Set(references.filter((p) => p.severity === 'error' && p.resource).map((p) => p.resource!));
    for (const key of broken) {
      const current = next.get(key);
      const previous = this.accepted.get(key);
      if (!current || !previous || current === previous) continue;
      next.set(key, previous);
      reverted = true;
      problems.push({
        code: 'MG_CONFIG_INVALID', severity: 'error', file: current.source.file, line: current.source.line, resource: key,
        message: `this version of ${key} refers to something that does not exist (see the MG_REF_ problem for it); the last valid version (from ${previous.source.file}:${previous.source.line}) keeps serving`,
      });
      // The reference problems of the rejected version stay visible: analyze-style lines
      // tell the user exactly which field to fix.
      problems.push(...references.filter((p) => p.resource === key));
    }
    return reverted;
  }
}

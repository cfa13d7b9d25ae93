// `meshgate pilot`: the control plane alone.
import { stat } from 'node:fs/promises';
import type { Command } from './main.ts';
import { UsageError, parsePort } from './args.ts';
import { makeLogger, untilSignal } from './common.ts';
import { startPilot } from '../pilot/pilot.ts';

/** `--mesh-config FILE`: must name a file at start (a typo must not silently mean the defaults). */
export async function meshConfigFlag(value: string | boolean | undefined): Promise<string | null> {
  if (value === undefined) return null;
  const file = String(value);
  const st = await stat(file).catch(() => null);
  if (!st?.isFile()) throw new UsageError(`--mesh-config: ${file} is not a file`);
  return file;
}

export const pilotCommand: Command = {
  summary: 'Watch a folder of Istio YAML, translate it per proxy and push it to the gateways that connect.',
  options: {
    config: { type: 'string' },
    // Istio's MeshConfig (or the `istio` ConfigMap) for outboundTrafficPolicy; watched.
    'mesh-config': { type: 'string' },
    'discovery-address': { type: 'string', default: '127.0.0.1' },
    'discovery-port': { type: 'string', default: '15010' },
    'debug-port': { type: 'string', default: '15014' },
    'log-level': { type: 'string', default: 'info' },
  },
  async run(v) {
    if (typeof v.config !== 'string') throw new UsageError('--config DIR is required (Kubernetes as a source comes later)');
    const st = await stat(v.config).catch(() => null);
    if (!st?.isDirectory()) throw new UsageError(`--config: ${v.config} is not a directory`);
    const meshConfigFile = await meshConfigFlag(v['mesh-config']);
    const log = makeLogger(String(v['log-level']));
    const pilot = await startPilot({
      configDir: v.config, log, meshConfigFile,
      discoveryHost: String(v['discovery-address']),
      discoveryPort: parsePort('--discovery-port', String(v['discovery-port'])),
      debugPort: parsePort('--debug-port', String(v['debug-port'])),
    });
    return untilSignal(log, () => pilot.close());
  },
};

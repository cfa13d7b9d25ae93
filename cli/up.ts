// `meshgate up`: pilot and one gateway in one process, talking over loopback discovery
// exactly as separate processes do, so what works here works split.
import { stat } from 'node:fs/promises';
import type { Command } from './main.ts';
import { UsageError, parsePort } from './args.ts';
import { gatewayFlags, makeLogger, readGatewayFlags, untilSignal } from './common.ts';
import { startPilot } from '../pilot/pilot.ts';
import { meshConfigFlag } from './pilot.ts';
import { startGateway } from '../gateway/run.ts';

export const upCommand: Command = {
  summary: 'Run pilot and one gateway in one process on a folder of Istio YAML (file config, in-memory limits); --egress makes the gateway the egress forward proxy too.',
  options: {
    config: { type: 'string', default: 'examples' },
    'discovery-port': { type: 'string', default: '15010' },
    'debug-port': { type: 'string', default: '15014' },
    'mesh-config': { type: 'string' },
    ...gatewayFlags,
  },
  async run(v) {
    const dir = String(v.config);
    const st = await stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new UsageError(`--config: ${dir} is not a directory`);
    const log = makeLogger(String(v['log-level']));
    const gw = readGatewayFlags(v);
    const pilot = await startPilot({
      configDir: dir, log, meshConfigFile: await meshConfigFlag(v['mesh-config']),
      discoveryPort: parsePort('--discovery-port', String(v['discovery-port'])),
      debugPort: parsePort('--debug-port', String(v['debug-port'])),
    });
    const gateway = await startGateway({ pilot: `127.0.0.1:${pilot.discoveryPort}`, ...gw, log });
    log.info({ admin: `127.0.0.1:${gw.adminPort}`, health: `:${gw.healthPort}/healthz/ready` }, 'meshgate up');
    return untilSignal(log, async () => {
      await gateway.close();
      await pilot.close();
    });
  },
};

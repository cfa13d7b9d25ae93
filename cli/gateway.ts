// `meshgate gateway`: the data plane alone; it runs only what pilot pushes.
import { availableParallelism } from 'node:os';
import type { Command } from './main.ts';
import { UsageError, parseHostPort } from './args.ts';
import { gatewayFlags, makeLogger, readGatewayFlags, untilSignal } from './common.ts';
import { startGateway } from '../gateway/run.ts';

export const gatewayCommand: Command = {
  summary: 'Run a gateway proxy: connect to pilot, apply the config it pushes for these labels, serve traffic. An egress gateway (--egress, or --labels istio=egressgateway) also runs the forward proxy on --proxy-port.',
  options: {
    pilot: { type: 'string', default: '127.0.0.1:15010' },
    ...gatewayFlags,
  },
  async run(v) {
    const pilot = parseHostPort('--pilot', String(v.pilot));
    if (!pilot) throw new UsageError('--pilot HOST:PORT is required');
    const log = makeLogger(String(v['log-level']));
    const gw = readGatewayFlags(v, availableParallelism());
    const gateway = await startGateway({ pilot, ...gw, log });
    log.info({ pilot, id: gw.node.id, labels: gw.node.labels, concurrency: gw.concurrency, egress: gw.node.egress === true, resolve: Object.fromEntries(gw.resolver.overrides) }, 'gateway started');
    return untilSignal(log, () => gateway.close());
  },
};

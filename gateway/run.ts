// A gateway as a running thing: data plane + discovery client.
import type { Logger } from 'pino';
import type { ProxyIdentity } from '../api/proxyconfig.ts';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { DiscoveryClient } from './discovery-client.ts';

export interface GatewayOptions {
  pilot: string;
  node: ProxyIdentity;
  adminPort?: number;
  healthPort?: number;
  portMap?: Record<number, number>;
  log: Logger;
}

export interface RunningGateway {
  dataplane: DataPlane;
  client: DiscoveryClient;
  close(): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  const dataplane = new DataPlane({
    adminPort: opts.adminPort ?? 15000,
    healthPort: opts.healthPort ?? 15021,
    upstreams: createUpstreams({ log: opts.log }),
    log: opts.log,
    portMap: opts.portMap ?? {},
  });
  await dataplane.start();
  const client = new DiscoveryClient({ pilot: opts.pilot, node: opts.node, dataplane, log: opts.log });
  client.start();
  return {
    dataplane, client,
    async close() {
      client.close();
      await dataplane.close();
    },
  };
}

// A gateway worker process (--concurrency > 1): serves traffic with the config the first
// process hands it, nothing else — no discovery, no admin, health or metrics ports (the
// first process asks it for its metrics on each scrape).
import pino from 'pino';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { DestinationGuard } from './egress/guard.ts';
import { readWorkerEnv } from './workers.ts';
import type { FromWorker, ToWorker } from './workers.ts';

const log = pino({ level: process.env.MESHGATE_LOG_LEVEL ?? 'info', base: { pid: process.pid, worker: Number(process.env.MESHGATE_WORKER ?? 0) } });
const { resolver, forwardProxy } = readWorkerEnv(process.env);
const guard = new DestinationGuard();
const dataplane = new DataPlane({
  guard,
  upstreams: createUpstreams({ log, resolver, guard }), log, reusePort: true, portMap: {}, metricsPort: null,
  redis: process.env.MESHGATE_REDIS || null,
  replicas: Number(process.env.MESHGATE_REPLICAS ?? 1),
  trustedProxies: Number(process.env.MESHGATE_TRUSTED_PROXIES ?? 0),
  // The data plane reads this when an apply opens the forward proxy; each apply sets the
  // port the first process bound (as setPortMap does for the listeners).
  forwardProxy,
  resolver,
});

function reply(m: FromWorker): void {
  process.send?.(m);
}

process.on('message', (m: ToWorker) => {
  if (m.type === 'apply') {
    dataplane.setPortMap(m.ports);
    if (forwardProxy !== null && m.proxyPort !== 0) forwardProxy.port = m.proxyPort;
    // Workers have no admin, health or metrics ports of their own: the first process's are
    // what the egress guard must keep clients away from.
    guard.addOwnPorts(m.ownPorts);
    dataplane.apply(m.config).then(
      () => reply({ type: 'applied', id: m.id }),
      (err: Error) => reply({ type: 'failed', id: m.id, error: err.message }),
    );
  } else if (m.type === 'metrics') {
    reply({ type: 'metrics', id: m.id, metrics: dataplane.metrics.json() });
  } else if (m.type === 'close') {
    void dataplane.close().finally(() => process.exit(0));
  }
});

// The first process went away (crashed or killed): stop serving with it.
process.on('disconnect', () => {
  void dataplane.close(0).finally(() => process.exit(0));
});
// SIGINT from a terminal reaches the whole process group; the first process decides.
process.on('SIGINT', () => {});

reply({ type: 'ready' });

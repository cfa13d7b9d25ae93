// The loadtest upstream as a child process: started, its ports read from its first line
// of output, stopped by closing its stdin. Shared by the harness, the profiler and cost.ts.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './meshgate.ts';
import type { UpstreamPorts } from './scenarios.ts';
import { captureTail } from './util.ts';

export interface Upstream { pid: number; ports: UpstreamPorts; stop(): Promise<void> }

/** The loadtest upstream (upstream.ts) in its own process; HTTPS and h2 listeners only with a certificate. */
export async function startUpstream(certFile?: string, keyFile?: string): Promise<Upstream> {
  const tlsArgs = certFile !== undefined && keyFile !== undefined ? ['--cert', certFile, '--key', keyFile] : [];
  const child = spawn(process.execPath, [join(ROOT, 'loadtest', 'upstream.ts'), '--names', 'v1,v2,v3', ...tlsArgs], { stdio: ['pipe', 'pipe', 'pipe'] });
  const tail = captureTail(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ports = await new Promise<UpstreamPorts>((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`upstream did not start:\n${tail()}`)), 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) { clearTimeout(t); resolve(JSON.parse(buf.slice(0, nl)) as UpstreamPorts); }
    });
    child.once('exit', (c) => { clearTimeout(t); reject(new Error(`upstream exited with ${c}:\n${tail()}`)); });
  });
  return {
    pid: child.pid!,
    ports,
    async stop() {
      if (child.exitCode !== null) return;
      child.stdin!.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}


// The load generators, one command line per run kind and protocol:
//
//   closed loop (throughput): wrk, N connections each sending the next request as soon as
//     the last answer arrives; h2load for HTTP/2 (wrk has no HTTP/2), N/10 connections of
//     10 streams, the same number of requests in flight.
//   fixed rate (latency): wrk with a pacing script — every connection waits a random,
//     exponentially distributed time before each request, so arrivals are Poisson at the
//     asked rate. hey's -q is the obvious tool, but its workers' tickers fire in step: at
//     1,000 req/s over 50 workers it sends bursts of 50 requests every 50 ms, and the
//     queueing inside a burst (p99 ≈ 15 ms against the bare upstream on this machine) hides
//     the proxy's own latency. `--fixed-gen hey` still selects it. For HTTP/2, h2load's
//     --rps per connection.
//
// While a generator runs, the proxy's and the upstream's process trees are sampled from
// /proc, with the generator's own CPU and the whole machine's, so a run disturbed by
// something else on the machine shows it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseWrk, parseHey, parseH2load, type LoadResult } from './parse.ts';
import { RunMeter } from './procstat.ts';
import type { Protocol, RequestSpec } from './scenarios.ts';

export type Kind = 'closed' | 'fixed';

export interface RunSpec {
  kind: Kind;
  protocol: Protocol;
  port: number;
  request: RequestSpec;
  seconds: number;
  connections: number;
  /** Requests per second for fixed-rate runs. */
  rate: number;
  fixedGen: 'wrk' | 'hey';
  tmp: string;
}

export interface Measured extends LoadResult {
  generator: string;
  /** CPU seconds of the proxy's process tree (0 for the direct target: there is no proxy). */
  proxyCpu: number;
  proxyRssKb: number;
  /** Processes in the proxy's tree (master + workers). */
  proxyProcesses: number;
  upstreamCpu: number;
  generatorCpu: number;
  /** CPU seconds of every other process on the machine during the run (disturbance). */
  otherCpu: number;
  wallSeconds: number;
}

const H2_STREAMS = 10;

const running = new Set<ChildProcess>();

/** Stops generators still running (the run was interrupted). */
export function killGenerators(): void {
  for (const c of running) c.kill('SIGKILL');
}

function url(spec: RunSpec): string {
  const scheme = spec.protocol === 'http1' ? 'http' : 'https';
  return `${scheme}://127.0.0.1:${spec.port}${spec.request.path}`;
}

async function paceScript(spec: RunSpec): Promise<string> {
  const meanMs = (spec.connections * 1000) / spec.rate;
  if (meanMs < 2) throw new Error(`--rate ${spec.rate} with ${spec.connections} connections leaves ${meanMs.toFixed(2)} ms between a connection's requests; wrk's pacing works in whole ms: use more connections or a lower rate`);
  const file = join(spec.tmp, `pace-${spec.connections}-${spec.rate}.lua`);
  // delay() runs before each request of a connection; -log(1-u) * mean is an exponential
  // wait, so each connection is a Poisson source and their sum is one at the full rate.
  await writeFile(file, `local mean = ${meanMs}
function delay()
  return math.floor(-math.log(1 - math.random()) * mean + 0.5)
end
`);
  return file;
}

interface Cmd { bin: string; args: string[]; logFile?: string; parse(out: string, log: string): LoadResult }

async function command(spec: RunSpec): Promise<Cmd> {
  const d = `${spec.seconds}s`;
  const hdrs = Object.entries(spec.request.headers);
  if (spec.protocol === 'h2') {
    const logFile = join(spec.tmp, `h2load-${process.pid}-${Date.now()}.log`);
    const h = ['-H', `:authority: ${spec.request.host}`, ...hdrs.flatMap(([k, v]) => ['-H', `${k}: ${v}`])];
    if (spec.kind === 'closed') {
      const clients = Math.max(1, Math.round(spec.connections / H2_STREAMS));
      return { bin: 'h2load', args: ['-t1', `-c${clients}`, `-m${H2_STREAMS}`, '-D', String(spec.seconds), `--log-file=${logFile}`, ...h, url(spec)], logFile, parse: parseH2load };
    }
    const clients = Math.max(1, Math.min(spec.connections, Math.round(spec.rate / 100)));
    return { bin: 'h2load', args: ['-t1', `-c${clients}`, '-m1', `--rps=${spec.rate / clients}`, '-D', String(spec.seconds), `--log-file=${logFile}`, ...h, url(spec)], logFile, parse: parseH2load };
  }
  if (spec.kind === 'fixed' && spec.fixedGen === 'hey') {
    const q = spec.rate / spec.connections;
    return { bin: 'hey', args: ['-c', String(spec.connections), '-q', String(q), '-z', d, '-host', spec.request.host, ...hdrs.flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url(spec)], parse: (o) => parseHey(o) };
  }
  const h = ['-H', `Host: ${spec.request.host}`, ...hdrs.flatMap(([k, v]) => ['-H', `${k}: ${v}`])];
  const pace = spec.kind === 'fixed' ? ['-s', await paceScript(spec)] : [];
  return { bin: 'wrk', args: ['-t1', `-c${spec.connections}`, `-d${d}`, '--timeout', '5s', '--latency', ...pace, ...h, url(spec)], parse: (o) => parseWrk(o) };
}

export async function runLoad(spec: RunSpec, proxyPid: number | null, upstreamPid: number): Promise<Measured> {
  const cmd = await command(spec);
  const meter = new RunMeter({ proxy: proxyPid, upstream: upstreamPid });
  const t0 = performance.now();
  const child = spawn(cmd.bin, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  meter.add('generator', child.pid!);
  running.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const sampler = setInterval(() => meter.sample(), 200);
  // Every run is bounded: the generator's own duration plus a margin, then it is killed.
  const killer = setTimeout(() => child.kill('SIGKILL'), (spec.seconds + 20) * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  running.delete(child);
  clearInterval(sampler);
  clearTimeout(killer);
  meter.sample();
  const wallSeconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`${cmd.bin} ${cmd.args.join(' ')} exited with ${code}:\n${out.slice(-2000)}`);
  const log = cmd.logFile ? await readFile(cmd.logFile, 'utf8').catch(() => '') : '';
  if (cmd.logFile) await rm(cmd.logFile, { force: true });
  const result = cmd.parse(out, log);
  return {
    ...result,
    generator: `${cmd.bin} ${cmd.args.filter((a) => !a.startsWith('--log-file')).join(' ')}`,
    proxyCpu: proxyPid ? meter.usage('proxy').cpuSeconds : 0,
    proxyRssKb: proxyPid ? meter.usage('proxy').peakRssKb : 0,
    proxyProcesses: proxyPid ? meter.usage('proxy').processes : 0,
    upstreamCpu: meter.usage('upstream').cpuSeconds,
    generatorCpu: meter.usage('generator').cpuSeconds,
    otherCpu: meter.otherCpuSeconds(),
    wallSeconds,
  };
}

// Flag values shared by the meshgate commands, parsed strictly: a typo in a flag value is
// an error that names the flag, never a silently different behaviour.

export class UsageError extends Error {}

/** `istio=ingressgateway,app=edge` → { istio: 'ingressgateway', app: 'edge' } */
export function parseLabels(flag: string, value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag}: "${part}" is not key=value`);
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** `80:8080,443:8443` → { 80: 8080, 443: 8443 } (Gateway port → local port to bind). */
export function parsePortMap(flag: string, value: string): Record<number, number> {
  const out: Record<number, number> = {};
  for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d{1,5})[:=](\d{1,5})$/.exec(part);
    if (!m) throw new UsageError(`${flag}: "${part}" is not GATEWAYPORT:LOCALPORT`);
    out[Number(m[1])] = parsePort(flag, m[2]);
  }
  return out;
}

/** A TCP port; 0 means "any free port". */
export function parsePort(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d{1,5}$/.test(value) || n > 65535) throw new UsageError(`${flag}: "${value}" is not a port number (0-65535)`);
  return n;
}

/** `127.0.0.1:15010` or `localhost:15010` or `[::1]:15010`. */
export function parseHostPort(flag: string, value: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  if (!m) throw new UsageError(`${flag}: "${value}" is not HOST:PORT`);
  parsePort(flag, m[2]);
  return value;
}

// Replies the proxy writes itself, shaped as Envoy writes them: operators' alerts and
// clients' retry logic key on these exact bodies (`no healthy upstream`…), so they are
// kept byte for byte. gRPC clients get HTTP 200 with grpc-status instead, as Envoy does.
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { DownstreamRes, HeaderMap } from './upstream/types.ts';

export const BODY_NO_HEALTHY_UPSTREAM = 'no healthy upstream';
export const BODY_UPSTREAM_TIMEOUT = 'upstream request timeout';
export const BODY_FAULT_ABORT = 'fault filter abort';

export const GRPC_STATUS: Record<string, number> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5,
  ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9,
  ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
  DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

/** Envoy's HTTP → gRPC status mapping for local replies (grpc_http1_bridge table). */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}

export interface LocalReplyHooks { onHeaders(status: number, headers: HeaderMap): void }

/**
 * Writes a complete local reply. `grpcStatus` ≥ 0 forces that status for gRPC clients;
 * -1 derives it from the HTTP status.
 */
export function sendLocalReply(res: DownstreamRes, status: number, body: string, grpc: boolean, grpcStatus: number, hooks: LocalReplyHooks | null): void {
  if (res.headersSent || res.writableEnded || res.destroyed) return;
  let headers: HeaderMap;
  let payload: string | Buffer = body;
  if (grpc) {
    // Trailers-only response: status and message travel as headers, no body.
    headers = {
      'content-type': 'application/grpc',
      'grpc-status': String(grpcStatus >= 0 ? grpcStatus : grpcStatusForHttp(status)),
      'grpc-message': encodeURIComponent(body || (STATUS_CODES[status] ?? '')),
    };
    status = 200;
    payload = '';
  } else if (body.length > 0) {
    headers = { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) };
  } else {
    headers = { 'content-length': '0' };
  }
  if (hooks !== null) hooks.onHeaders(status, headers);
  (res as ServerResponse).writeHead(status, headers);
  res.end(payload);
}

/** The same reply for a raw socket (WebSocket upgrades), then the socket is closed. */
export function writeSocketReply(socket: Duplex, status: number, body: string, extra: string): void {
  if (socket.destroyed) return;
  const len = Buffer.byteLength(body);
  const head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`
    + (len > 0 ? 'content-type: text/plain\r\n' : '')
    + `content-length: ${len}\r\n${extra}connection: close\r\n\r\n`;
  socket.end(head + body);
}

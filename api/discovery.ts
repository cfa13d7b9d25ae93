// Messages on the discovery connection (a WebSocket, one JSON message per frame).
//
//   proxy → pilot  hello   {node}                       once, right after connecting
//   pilot → proxy  config  {version, nonce, config}     whenever this proxy's config changes
//   proxy → pilot  ack     {version, nonce}             the version is applied
//   proxy → pilot  nack    {version, nonce, error}      rejected; the proxy keeps its previous config
//
// A reconnecting proxy says which version it runs (`hello.version`); pilot skips the push
// if that is still current.
import type { ProxyConfig, ProxyIdentity } from './proxyconfig.ts';

export interface HelloMessage { type: 'hello'; node: ProxyIdentity; version: string | null }
export interface ConfigMessage {
  type: 'config';
  version: string;
  nonce: string;
  config: ProxyConfig;
  /** Config problems that concern this proxy (formatted lines), for its admin port and log. */
  problems: string[];
}
export interface AckMessage { type: 'ack'; version: string; nonce: string }
export interface NackMessage { type: 'nack'; version: string; nonce: string; error: string }

export type ProxyToPilot = HelloMessage | AckMessage | NackMessage;
export type PilotToProxy = ConfigMessage;

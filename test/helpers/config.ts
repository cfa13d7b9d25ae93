// YAML building blocks the end-to-end tests share: the edge Gateway most of them run, and a
// ServiceEntry pointing a host at an upstream on loopback.

/** Gateway `istio-system/<name>` for istio=ingressgateway: one plain HTTP server on `port`, all hosts. */
export function edgeGateway(port: number, name = 'edge'): string {
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ${name}, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: ${port}, name: http, protocol: HTTP}
    hosts: ["*"]
`;
}

/** ServiceEntry `default/<name>`: `host` on service port 80 (HTTP), one STATIC endpoint at 127.0.0.1:`upstreamPort`. */
export function loopbackService(name: string, host: string, upstreamPort: number): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}}
spec:
  hosts: [${host}]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: ${upstreamPort}}}]
`;
}

// Outlier detection with Envoy's semantics (Istio's DestinationRule outlierDetection):
// - consecutive 5xx: any 5xx response; connect failures, resets and timeouts count too
//   (Envoy maps local-origin failures to 503/504 when they are not split out);
// - consecutive gateway errors: 502, 503, 504 and the same local-origin failures;
// - an ejected endpoint stays out for baseEjection × (times ejected), capped like Envoy's
//   max_ejection_time (300 s, or the base when larger); the multiplier decays by one for
//   each interval the endpoint stays healthy;
// - at most maxEjectionPercent of the endpoints are ejected, but one ejection is always
//   allowed when the percentage is above zero (so a 2-endpoint cluster at 10% still works);
// - when the healthy share falls below minHealthPercent, no more ejections happen and the
//   load balancer uses every endpoint (Envoy's panic threshold).
// Un-ejection happens on the interval timer, which is unref'd so it never keeps a process up.
import type { OutlierDetectionPolicy } from '../../api/proxyconfig.ts';
import type { EndpointState } from './endpoint.ts';
import type { Candidates } from './lb.ts';

const MAX_EJECTION_MS = 300_000;

export class OutlierDetector {
  readonly policy: OutlierDetectionPolicy;
  readonly c: Candidates;
  ejectedCount = 0;
  timer: NodeJS.Timeout | null = null;

  constructor(policy: OutlierDetectionPolicy, c: Candidates) {
    this.policy = policy;
    this.c = c;
    if (policy.intervalMs > 0) {
      this.timer = setInterval(outlierTick, policy.intervalMs, this);
      this.timer.unref();
    }
  }

  /** An upstream response arrived with `status`. */
  recordStatus(ep: EndpointState, status: number): void {
    if (status >= 500) {
      ep.consecutive5xx++;
      if (status === 502 || status === 503 || status === 504) ep.consecutiveGatewayErrors++;
      else ep.consecutiveGatewayErrors = 0;
      this.check(ep);
    } else {
      ep.consecutive5xx = 0;
      ep.consecutiveGatewayErrors = 0;
    }
  }

  /** Connect failure, reset before a response, or timeout. */
  recordLocalFailure(ep: EndpointState): void {
    ep.consecutive5xx++;
    ep.consecutiveGatewayErrors++;
    this.check(ep);
  }

  check(ep: EndpointState): void {
    if (ep.ejected) return;
    const p = this.policy;
    if ((p.consecutive5xx > 0 && ep.consecutive5xx >= p.consecutive5xx)
      || (p.consecutiveGatewayErrors > 0 && ep.consecutiveGatewayErrors >= p.consecutiveGatewayErrors)) {
      this.tryEject(ep, Date.now());
    }
  }

  tryEject(ep: EndpointState, now: number): void {
    const p = this.policy;
    const total = this.c.all.length;
    if (p.maxEjectionPercent <= 0 || total === 0) return;
    const withThis = ((this.ejectedCount + 1) * 100) / total;
    if (withThis > p.maxEjectionPercent && this.ejectedCount > 0) return;
    if (p.minHealthPercent > 0 && (total - this.ejectedCount) * 100 < p.minHealthPercent * total) return;
    ep.ejected = true;
    ep.ejections++;
    ep.consecutive5xx = 0;
    ep.consecutiveGatewayErrors = 0;
    ep.ejectedUntil = now + Math.min(p.baseEjectionMs * ep.ejections, Math.max(MAX_EJECTION_MS, p.baseEjectionMs));
    this.ejectedCount++;
    this.c.refresh(p.minHealthPercent);
  }

  /** Un-ejects endpoints whose time is up; decays the multiplier of healthy ones. */
  tick(now: number): void {
    let changed = false;
    for (const ep of this.c.all) {
      if (ep.ejected) {
        if (now >= ep.ejectedUntil) {
          ep.ejected = false;
          this.ejectedCount--;
          changed = true;
        }
      } else if (ep.ejections > 0 && now - ep.ejectedUntil >= this.policy.intervalMs) {
        ep.ejections--;
        ep.ejectedUntil = now;
      }
    }
    if (changed) this.c.refresh(this.policy.minHealthPercent);
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

function outlierTick(d: OutlierDetector): void {
  d.tick(Date.now());
}

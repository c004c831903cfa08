/**
 * @module gateway/rate-limit/headers
 * A decision as HTTP response headers, in the form of the IETF httpapi draft
 * (draft-ietf-httpapi-ratelimit-headers-10/-11): two Structured Fields,
 *
 *   RateLimit-Policy: "default";q=10;w=2     the policy: q tokens, refilled from empty in w seconds
 *   RateLimit: "default";r=3;t=1             r tokens left; t seconds until the quota resets
 *
 * not the older `RateLimit-Limit`/`-Remaining`/`-Reset` trio of earlier drafts, which the current
 * one replaced. A token bucket has no fixed window: `w` is the time a bucket takes to refill from
 * empty, the window over which `q` is the most that passes on top of the steady rate.
 * A refusal adds `Retry-After` (RFC 9110, delay-seconds); the draft says the reset should then name
 * the same moment, so `t` is the retry delay on a refusal and the time until full otherwise.
 */
import type { RateLimitDecision } from './bucket.ts';

export interface RateLimitPolicyInfo {
  name: string;
  capacity: number;
  refillPerSecond: number;
}

/** The `RateLimit-Policy` value for a policy: constant, so it can be computed once per route. */
export function policyHeader(policy: RateLimitPolicyInfo): string {
  const w = Math.max(1, Math.ceil(policy.capacity / policy.refillPerSecond));
  return `"${policy.name}";q=${policy.capacity};w=${w}`;
}

/** Headers for a response to a request the limiter decided on (lower-case names, as Node sends them). */
export function rateLimitHeaders(
  decision: RateLimitDecision,
  policy: RateLimitPolicyInfo,
): Record<string, string> {
  // A degraded decision (store down, failed open) knows nothing about the bucket: say nothing
  // rather than advertise a full quota that is not being counted.
  if (decision.degraded === true) return {};
  const t = decision.allowed ? decision.resetSeconds : decision.retryAfterSeconds;
  const headers: Record<string, string> = {
    'ratelimit-policy': policyHeader(policy),
    ratelimit: `"${decision.policy}";r=${decision.remaining};t=${t}`,
  };
  if (!decision.allowed) headers['retry-after'] = String(decision.retryAfterSeconds);
  return headers;
}

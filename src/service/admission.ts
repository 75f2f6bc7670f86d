/**
 * What the API lets in: a token bucket per tenant (`admission.tenant_rate` submissions a second,
 * bursts of `admission.tenant_burst`) and a global cap on tasks in flight
 * (`admission.max_concurrent_tasks`: every trace in flight in the process, as the runtime counts them). Over either, a submission is
 * refused with `ROOST_ERR_RATE_LIMITED` (HTTP 429) and how long to wait (`Retry-After`).
 */
import { RoostError } from '../errors.js';
import type { Runtime } from '../runtime/runtime.js';

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets kept at most (tenants seen lately); a full bucket is dropped first, as it holds nothing. */
const MAX_BUCKETS = 10_000;

/** See the module comment. */
export class Admission {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly runtime: Runtime,
    private readonly options: { readonly maxConcurrentTasks: number; readonly tenantRate: number; readonly tenantBurst: number },
  ) {}

  /** Takes a token of `tenant`'s bucket and a slot of the global cap, or throws `ROOST_ERR_RATE_LIMITED`. */
  admit(tenant: string, now: number = Date.now()): void {
    if (this.runtime.inFlightTraces >= this.options.maxConcurrentTasks) {
      throw new RoostError('ROOST_ERR_RATE_LIMITED', `${this.options.maxConcurrentTasks} tasks are in flight already (admission.max_concurrent_tasks)`, {
        details: { limit: 'max_concurrent_tasks', max: this.options.maxConcurrentTasks, retryAfterMs: 1_000 },
      });
    }
    const rate = this.options.tenantRate;
    if (rate === 0) return;
    const burst = this.options.tenantBurst;
    let bucket = this.buckets.get(tenant);
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_BUCKETS) this.evict(now);
      bucket = { tokens: burst, at: now };
      this.buckets.set(tenant, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) * rate) / 1000);
      bucket.at = now;
    }
    if (bucket.tokens < 1) {
      const retryAfterMs = Math.ceil(((1 - bucket.tokens) * 1000) / rate);
      throw new RoostError('ROOST_ERR_RATE_LIMITED', `tenant ${tenant} is over its rate of ${rate} submissions a second (admission.tenant_rate)`, {
        details: { limit: 'tenant_rate', tenant, rate, burst, retryAfterMs },
      });
    }
    bucket.tokens -= 1;
  }

  /** Drops buckets that have filled up again (they would say the same as a new one). */
  private evict(now: number): void {
    const { tenantRate: rate, tenantBurst: burst } = this.options;
    for (const [tenant, b] of this.buckets) {
      if (b.tokens + ((now - b.at) * rate) / 1000 >= burst) this.buckets.delete(tenant);
    }
    // Every tenant is mid-burst: forget the oldest rather than grow without bound.
    while (this.buckets.size >= MAX_BUCKETS) this.buckets.delete(this.buckets.keys().next().value as string);
  }
}

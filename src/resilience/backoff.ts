/** Exponential backoff with a cap and jitter, as PenguiFlow's `NodePolicy` and BZZZ use it. */

/** How long to wait between attempts. */
export interface BackoffOptions {
  /** Delay before the first retry, ms (default 100). */
  readonly baseMs?: number;
  /** Growth per retry (default 2). */
  readonly multiplier?: number;
  /** Largest delay, ms (default 10,000). */
  readonly maxMs?: number;
  /**
   * Share of each delay that is random, 0..1 (default 0.2): the delay is drawn from
   * `[d × (1 − jitter), d]`, so retries of many traces that failed together spread out.
   */
  readonly jitter?: number;
}

/** {@link BackoffOptions} with every default filled in. */
export interface ResolvedBackoffOptions {
  readonly baseMs: number;
  readonly multiplier: number;
  readonly maxMs: number;
  readonly jitter: number;
}

/** Default backoff: 100 ms, doubling, capped at 10 s, 20 % jitter. */
export const DEFAULT_BACKOFF: ResolvedBackoffOptions = Object.freeze({ baseMs: 100, multiplier: 2, maxMs: 10_000, jitter: 0.2 });

/**
 * The delay before retry number `retry` (1 for the first retry): `min(maxMs, baseMs × multiplier^(retry−1))`,
 * less up to `jitter` of it at random.
 */
export function backoffDelay(backoff: ResolvedBackoffOptions, retry: number, random: () => number = Math.random): number {
  const raw = Math.min(backoff.maxMs, backoff.baseMs * Math.pow(backoff.multiplier, Math.max(0, retry - 1)));
  return Math.round(raw * (1 - backoff.jitter * random()));
}

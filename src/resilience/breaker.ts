/**
 * A circuit breaker: after `failures` consecutive failures it opens, and calls are refused at
 * once; after `cooldownMs` it lets one call through (half-open) and closes on its success, or
 * opens again on its failure.
 */

/** Where a breaker is. */
export type BreakerState = 'closed' | 'open' | 'half_open';

/** Settings of a {@link CircuitBreaker}. */
export interface BreakerOptions {
  /** Consecutive failures that open it (default 5). */
  readonly failures?: number;
  /** How long it stays open before letting a probe through, ms (default 5,000). */
  readonly cooldownMs?: number;
}

/** See the module comment. */
export class CircuitBreaker {
  private stateValue: BreakerState = 'closed';
  private consecutive = 0;
  private openedAt = 0;
  private probing = false;
  readonly failures: number;
  readonly cooldownMs: number;

  constructor(
    options: Required<BreakerOptions>,
    /** Told of every change of state, with the consecutive failures and the last error. */
    private readonly onChange: (state: BreakerState, failures: number, error: Error | null) => void = () => {},
  ) {
    this.failures = options.failures;
    this.cooldownMs = options.cooldownMs;
  }

  get state(): BreakerState {
    return this.stateValue;
  }

  /** True when a call may go through now (in half-open: only the one probe). */
  allow(now: number = Date.now()): boolean {
    if (this.stateValue === 'closed') return true;
    if (this.stateValue === 'open') {
      if (now - this.openedAt < this.cooldownMs) return false;
      this.set('half_open', null);
    }
    if (this.probing) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.probing = false;
    if (this.stateValue !== 'closed') this.set('closed', null);
  }

  failure(error: Error, now: number = Date.now()): void {
    this.consecutive++;
    this.probing = false;
    if (this.stateValue === 'half_open' || (this.stateValue === 'closed' && this.consecutive >= this.failures)) {
      this.openedAt = now;
      this.set('open', error);
    }
  }

  private set(state: BreakerState, error: Error | null): void {
    this.stateValue = state;
    this.onChange(state, this.consecutive, error);
  }
}

/**
 * Health of a running service, as probes and operators ask for it:
 *
 * - live: the event loop answers (the probe's own answer shows that) and has not stalled for
 *   long lately; a process that fails it should be restarted;
 * - ready: started, not draining, and the journal is writable: a process that fails it should get
 *   no new work;
 * - startup: initialisation (the application loaded, the runtime started and resumed) is done;
 * - the full report: every component check with its status, message and the time it was last
 *   checked, an overall status, and a score in [0, 1] (pass 1, warn 0.5, fail 0, averaged).
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { ensureError } from '../errors.js';
import type { Runtime } from '../runtime/runtime.js';

/** One check's verdict. */
export type CheckStatus = 'pass' | 'warn' | 'fail';

/** One component check. */
export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  readonly message: string;
  /** When it was last checked (ISO 8601). */
  readonly checkedAt: string;
}

/** The full report of `/health`. */
export interface HealthReport {
  readonly status: CheckStatus;
  /** In [0, 1]: pass counts 1, warn 0.5, fail 0, averaged over the checks. */
  readonly score: number;
  readonly checks: readonly CheckResult[];
}

/** A stall of the event loop this long (ms) or more makes liveness warn, and fail at the second. */
const LOOP_WARN_MS = 1_000;
const LOOP_FAIL_MS = 10_000;
/** The event loop's stalls are kept per window of this long; liveness looks at the last two. */
const LOOP_WINDOW_MS = 10_000;
/** The journal's writability is probed at most this often. */
const STORE_PROBE_MS = 5_000;
/** The key of the key-value area the probe writes. */
const PROBE_KEY = 'roost:health';

/** See the module comment. */
export class Health {
  private startedAt: number | null = null;
  private drainingValue = false;
  private readonly loop: IntervalHistogram = monitorEventLoopDelay({ resolution: 20 });
  private storeResult: CheckResult | null = null;
  private storeProbe: Promise<CheckResult> | null = null;
  /** The longest stall of the window before the current one (ns). */
  private previousWindowMax = 0;
  private readonly window: NodeJS.Timeout;

  constructor(private readonly runtime: Runtime) {
    this.loop.enable();
    this.window = setInterval(() => {
      this.previousWindowMax = this.loop.max;
      this.loop.reset();
    }, LOOP_WINDOW_MS);
    this.window.unref();
  }

  /** Initialisation is done: startup passes from now on. */
  started(): void {
    this.startedAt = Date.now();
  }

  /** Shutdown began: readiness fails from now on. */
  drain(): void {
    this.drainingValue = true;
  }

  get draining(): boolean {
    return this.drainingValue;
  }

  close(): void {
    clearInterval(this.window);
    this.loop.disable();
  }

  /**
   * Liveness: the event loop's longest stall in the last window or two (10 to 20 s). Reading it
   * changes nothing, so `/health` and `/health/live` asked in turn see the same stall.
   */
  live(): CheckResult {
    const stallMs = Math.max(this.previousWindowMax, this.loop.max) / 1e6;
    const status: CheckStatus = stallMs >= LOOP_FAIL_MS ? 'fail' : stallMs >= LOOP_WARN_MS ? 'warn' : 'pass';
    return check('event_loop', status, `longest stall in the last ${LOOP_WINDOW_MS / 1000}-${(2 * LOOP_WINDOW_MS) / 1000} s: ${Math.round(stallMs)} ms`);
  }

  startup(): CheckResult {
    return this.startedAt === null
      ? check('startup', 'fail', 'starting: the application, the runtime or the resume of the journal is not done yet')
      : check('startup', 'pass', `started at ${new Date(this.startedAt).toISOString()}`);
  }

  /** Readiness: started, not draining, the journal writable, the fleet's broker not lost for good. */
  async ready(): Promise<HealthReport> {
    return report([this.startup(), this.drainingCheck(), await this.store(), ...this.fleet()]);
  }

  /** Every check. */
  async full(): Promise<HealthReport> {
    return report([this.live(), this.startup(), this.drainingCheck(), await this.store(), ...this.fleet(), this.agents()]);
  }

  /**
   * The fleet's broker: connected passes; reconnecting warns (accepted work waits: the leases
   * send it again once the broker is back); closed fails. No check without a fleet.
   */
  private fleet(): CheckResult[] {
    const fleet = this.runtime.fleet;
    if (fleet === null) return [];
    const state = fleet.transport.state;
    const what = `the fleet's ${fleet.transport.kind} broker`;
    if (state === 'connected') return [check('fleet', 'pass', `${what} is connected (fleet id ${fleet.id})`)];
    if (state === 'closed') return [check('fleet', 'fail', `${what} connection is closed`)];
    return [check('fleet', 'warn', `${what} is ${state}: remote runs wait for it`)];
  }

  private drainingCheck(): CheckResult {
    if (this.drainingValue || this.runtime.state === 'draining') return check('draining', 'fail', 'shutting down: no new work is taken');
    if (this.runtime.state !== 'running') return check('draining', 'fail', `the runtime is ${this.runtime.state}`);
    return check('draining', 'pass', 'taking work');
  }

  private agents(): CheckResult {
    const quarantined = this.runtime.listAgents().filter((a) => a.state === 'quarantined').map((a) => a.name);
    return quarantined.length === 0
      ? check('agents', 'pass', 'no agent is quarantined')
      : check('agents', 'warn', `quarantined: ${quarantined.join(', ')} (runtime.restore(name) brings one back)`);
  }

  /** The journal is writable: a key of the store's key-value area written at most every 5 s. */
  private store(): Promise<CheckResult> {
    const store = this.runtime.store;
    if (store === null) return Promise.resolve(check('store', 'pass', 'no journal'));
    if (store.breaker.state === 'open') return Promise.resolve(check('store', 'fail', 'the journal is unavailable: its circuit breaker is open'));
    const last = this.storeResult;
    if (last !== null && Date.now() - Date.parse(last.checkedAt) < STORE_PROBE_MS) return Promise.resolve(last);
    this.storeProbe ??= (async () => {
      try {
        // One key for every process of the fleet (not one each, which would pile up). A
        // compare-and-set lost to another process's probe still ran a write: the store answered.
        const current = await store.getValue(PROBE_KEY);
        await store.putValue(PROBE_KEY, Date.now(), current?.version ?? 0);
        return check('store', 'pass', 'the journal is writable');
      } catch (error) {
        return check('store', 'fail', `the journal is not writable: ${ensureError(error).message}`);
      }
    })().then((result) => {
      this.storeResult = result;
      this.storeProbe = null;
      return result;
    });
    return this.storeProbe;
  }
}

function check(name: string, status: CheckStatus, message: string): CheckResult {
  return { name, status, message, checkedAt: new Date().toISOString() };
}

function report(checks: readonly CheckResult[]): HealthReport {
  const points = { pass: 1, warn: 0.5, fail: 0 } as const;
  const score = checks.length === 0 ? 1 : checks.reduce((sum, c) => sum + points[c.status], 0) / checks.length;
  const status: CheckStatus = checks.some((c) => c.status === 'fail') ? 'fail' : checks.some((c) => c.status === 'warn') ? 'warn' : 'pass';
  return { status, score: Math.round(score * 1000) / 1000, checks };
}

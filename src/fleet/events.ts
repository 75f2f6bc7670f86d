/**
 * Events about the leadership of singleton duties (`runtime.singleton`). They are part of the
 * runtime's event stream (`RoostEvent` in flow/events.ts) and listed in
 * `docs/reference/events.md`; the metrics `roost_leader` and `roost_leader_changes_total` derive
 * from them.
 */

/** Types of the events about a singleton's leadership. */
export type LeaderEventType = 'leader_elected' | 'leader_lost';

/**
 * Why this process stopped leading:
 * - `released`: `handle.stop()`; the lease was given up, so another process takes over at its next poll;
 * - `closed`: the runtime closed (the same, from `runtime.close()`);
 * - `lapsed`: its lease ran out before a renewal got through (the clock check: a stalled event
 *   loop, a SIGSTOP, a slow store), or the store said it had lapsed;
 * - `renew_failed`: a renewal failed (the store did not answer, or refused);
 * - `superseded`: a renewal found another process holding the lease.
 */
export type LeaderLostReason = 'released' | 'closed' | 'lapsed' | 'renew_failed' | 'superseded';

/** This process began or stopped leading a singleton duty. */
export interface LeaderEvent {
  readonly type: LeaderEventType;
  /** Epoch ms. */
  readonly ts: number;
  /** The duty's name, as given to `runtime.singleton(name, …)`. */
  readonly name: string;
  /** This process: the runtime's owner id (`runtime.owner`). */
  readonly holder: string;
  /** The fencing token of the term that began or ended. */
  readonly token: number;
  /** Why it ended (`leader_lost`); null for `leader_elected`. */
  readonly reason: LeaderLostReason | null;
}

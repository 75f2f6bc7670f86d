/**
 * Correlation of log lines with the trace being worked on: while a handler runs (and in
 * everything it calls, awaits included), `logContext` holds its trace, tenant, flow and node, and
 * the service's logger adds them to every line (pino's `mixin`). Off unless the runtime's
 * `correlate` option is on: on Node 20, AsyncLocalStorage costs every promise of the process a
 * little (measured: a tenth to a third of a fast flow's throughput), so a library user who does
 * not want it does not pay for it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** What a log line written inside a handler run is tagged with. */
export interface LogContext {
  readonly traceId: string;
  readonly tenant: string;
  readonly flow: string;
  readonly node: string;
}

/** The context of the handler run now (undefined outside one, or with correlation off). */
export const logContext = new AsyncLocalStorage<LogContext>();

/**
 * The logger contract Roost writes to (pino's shape), and the default: pino, JSON lines on
 * stderr, level from `LOG_LEVEL` (default `info`).
 */
import { pino } from 'pino';

/** One log method: `(fields, message)` or `(message)`, as pino has it. */
export interface LogFn {
  (fields: Record<string, unknown>, message?: string): void;
  (message: string): void;
}

/** A structured logger with correlation fields bound by `child`. pino's loggers fit it. */
export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

/** The default logger (see module comment), or a silent one for `false`. */
export function createLogger(option: Logger | false | undefined): Logger {
  if (option === false) return pino({ enabled: false });
  if (option !== undefined) return option;
  return pino({ name: 'roost', level: process.env['LOG_LEVEL'] ?? 'info' }, pino.destination({ fd: 2, sync: false }));
}

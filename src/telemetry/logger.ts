/**
 * The logger contract Roost writes to (pino's shape); the library's default (pino, JSON lines on
 * stderr, `LOG_LEVEL`); and the service's logger: JSON or text for people, secrets and
 * authorization headers redacted, and, with correlation on, every line written while a handler
 * runs tagged with its `traceId`, `tenant`, `flow` and `node` (see context.ts).
 */
import { pino } from 'pino';
import pretty from 'pino-pretty';
import { logContext } from './context.js';

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

/**
 * Paths pino replaces with `[redacted]` wherever they appear in a line's fields: secrets by
 * name, and the headers that carry credentials.
 */
export const REDACTED_PATHS: readonly string[] = [
  'password',
  'secret',
  'token',
  'apiKey',
  'authorization',
  'cookie',
  '*.password',
  '*.secret',
  '*.token',
  '*.apiKey',
  '*.authorization',
  '*.cookie',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
];

/** How the service logs. */
export interface ServiceLoggerOptions {
  readonly level: string;
  readonly format: 'json' | 'text';
  /** Tag lines written inside a handler run with its trace (the runtime's `correlate` option must be on). */
  readonly correlate: boolean;
  /** Where lines go (default: stdout). */
  readonly destination?: NodeJS.WritableStream;
}

/** The logger of `roost serve` (see the module comment). */
export function serviceLogger(options: ServiceLoggerOptions): pino.Logger {
  const config: pino.LoggerOptions = {
    name: 'roost',
    level: options.level,
    redact: { paths: [...REDACTED_PATHS], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (options.correlate) {
    config.mixin = (_fields, _level, logger) => {
      const context = logContext.getStore();
      if (context === undefined) return {};
      // A child logger that bound the trace already (a handler's ctx.logger) needs no second copy.
      if ('traceId' in logger.bindings()) return {};
      return { traceId: context.traceId, tenant: context.tenant, flow: context.flow, node: context.node };
    };
  }
  const out = options.destination ?? process.stdout;
  if (options.format === 'text') {
    return pino(config, pretty({ destination: out, sync: true, colorize: false, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }));
  }
  return pino(config, out);
}

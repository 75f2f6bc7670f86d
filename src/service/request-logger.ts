/**
 * The logger Fastify gives each request (`request.log`): a child of the service's logger bound to
 * the request id, made only when the request writes a line at an enabled level. pino's `child`
 * runs the redaction over the bindings each time, which cost about 2% of the service's CPU per
 * request when most requests write nothing (`npm run bench`, http).
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, LevelWithSilentOrString, LogFn } from 'pino';

type Method = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
const LEVELS: Record<Method, number> = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20, trace: 10 };

// The level methods live on the prototype (below): a request makes one object, not seven closures.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- the methods are added to the prototype below
export interface RequestLogger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
}

/** See the module comment. */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class RequestLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: FastifyBaseLogger & { readonly levelVal?: number },
    private readonly bindingsValue: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  /** @internal */
  real(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindingsValue, this.options);
    return this.made;
  }

  /** @internal */
  enabled(method: Method): boolean {
    if (this.made !== null) return true; // the child decides
    const threshold = this.parent.levelVal;
    return threshold === undefined || LEVELS[method] >= threshold;
  }

  readonly silent: LogFn = () => {};

  get level(): LevelWithSilentOrString {
    return this.made?.level ?? this.parent.level;
  }

  set level(value: LevelWithSilentOrString) {
    this.real().level = value;
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real().child(bindings, options);
  }
}

for (const method of Object.keys(LEVELS) as Method[]) {
  RequestLogger.prototype[method] = function (this: RequestLogger, ...args: unknown[]): void {
    if (!this.enabled(method)) return;
    const real = this.real();
    Reflect.apply(real[method], real, args); // the caller's arguments, as they came
  };
}

/**
 * The dead-letter queue: envelopes that failed for good (retries spent, refused by quarantine,
 * dropped from a full edge), with the error and the number of attempts. In memory with a cap;
 * when full, the oldest letter is evicted with a `dead_letter_evicted` event, never silently.
 */
import { RoostError } from '../errors.js';
import type { Envelope } from '../envelope/envelope.js';
import { uuidv7 } from '../envelope/uuid.js';
import type { DeadLetterEvent, EventError } from '../flow/events.js';

/** One dead letter. */
export interface DeadLetter {
  readonly id: string;
  readonly flow: string;
  readonly node: string;
  readonly envelope: Envelope;
  readonly error: EventError;
  /** Attempts made before it was dead-lettered. */
  readonly attempts: number;
  readonly failedAt: number;
}

/** Filters of {@link DeadLetterQueue.list}. */
export interface DeadLetterQuery {
  readonly flow?: string;
  readonly tenant?: string;
  readonly limit?: number;
}

/** Default cap of the in-memory dead-letter queue. */
export const DEFAULT_DEAD_LETTER_MAX = 10_000;

/** A bounded dead-letter queue; see the module comment. */
export class DeadLetterQueue {
  private readonly letters = new Map<string, DeadLetter>();

  /** @internal made by the runtime. */
  constructor(
    readonly max: number,
    private readonly publish: (event: DeadLetterEvent) => void,
  ) {}

  get size(): number {
    return this.letters.size;
  }

  /** @internal */
  add(flow: string, node: string, envelope: Envelope, error: EventError, attempts: number, now: number): DeadLetter {
    const letter: DeadLetter = { id: uuidv7(now), flow, node, envelope, error, attempts, failedAt: now };
    this.letters.set(letter.id, letter);
    this.publish(this.event('dead_letter_added', letter, null, now));
    while (this.letters.size > this.max) {
      const oldest = this.letters.values().next().value as DeadLetter;
      this.letters.delete(oldest.id);
      this.publish(this.event('dead_letter_evicted', oldest, null, now));
    }
    return letter;
  }

  /** @internal puts back a letter the journal kept (on start): no event, the cap still holds. */
  restore(letter: DeadLetter): void {
    if (this.letters.has(letter.id)) return;
    this.letters.set(letter.id, letter);
    while (this.letters.size > this.max) this.letters.delete(this.letters.keys().next().value as string);
  }

  /** Letters, oldest first, filtered. */
  list(query: DeadLetterQuery = {}): DeadLetter[] {
    const limit = query.limit ?? Infinity;
    const out: DeadLetter[] = [];
    for (const letter of this.letters.values()) {
      if (out.length >= limit) break;
      if (query.flow !== undefined && letter.flow !== query.flow) continue;
      if (query.tenant !== undefined && letter.envelope.tenant !== query.tenant) continue;
      out.push(letter);
    }
    return out;
  }

  /** The letter with `id`, or throws `ROOST_ERR_DEAD_LETTER_NOT_FOUND`. */
  get(id: string): DeadLetter {
    const letter = this.letters.get(id);
    if (letter === undefined) {
      throw new RoostError('ROOST_ERR_DEAD_LETTER_NOT_FOUND', `no dead letter ${id}`, { field: 'id', expected: 'the id of a dead letter', received: id });
    }
    return letter;
  }

  /** True when the queue holds the letter `id`. */
  has(id: string): boolean {
    return this.letters.has(id);
  }

  /** @internal removes a letter without replaying it; false when it was not here. */
  delete(id: string, now: number): boolean {
    const letter = this.letters.get(id);
    if (letter === undefined) return false;
    this.letters.delete(id);
    this.publish(this.event('dead_letter_deleted', letter, null, now));
    return true;
  }

  /** @internal removes a letter after a successful replay. */
  replayed(letter: DeadLetter, traceId: string, now: number): void {
    this.letters.delete(letter.id);
    this.publish(this.event('dead_letter_replayed', letter, traceId, now));
  }

  private event(type: DeadLetterEvent['type'], letter: DeadLetter, replayTraceId: string | null, now: number): DeadLetterEvent {
    return {
      type,
      ts: now,
      deadLetterId: letter.id,
      flow: letter.flow,
      node: letter.node,
      traceId: letter.envelope.traceId,
      tenant: letter.envelope.tenant,
      error: letter.error,
      replayTraceId,
    };
  }
}

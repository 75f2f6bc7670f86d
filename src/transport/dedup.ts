/**
 * Dedup on receive, by envelope id: an envelope delivered again (a QoS 1 redelivery, a publisher
 * that retried after a lost acknowledgement) is handled once. The ids handled lately are kept in
 * memory (the last `max`, 10,000 by default); with a durable journal they are also marked there
 * (a recorded step keyed `roost:seen:<id>`, written after the handler succeeded), so a
 * redelivery after a restart is caught too. Marks are pruned by age with the journal's
 * retention. A handler that fails leaves no mark: the next delivery runs it again.
 *
 *   const dedup = new Dedup({ store });
 *   await transport.subscribe('orders/+', handler, { dedup });
 */
import type { Envelope } from '../envelope/envelope.js';
import { checkObject, optInt } from '../validate-options.js';
import { RECEIVE_MARK_PREFIX, type Store } from '../store/store.js';
import type { Delivery, EnvelopeHandler } from './transport.js';

/** Options of a {@link Dedup}. */
export interface DedupOptions {
  /** The journal to mark handled envelopes in (used only when it is durable). */
  readonly store?: Store | null;
  /** Envelope ids remembered in memory (default 10,000). */
  readonly max?: number;
}

/** See the module comment. */
export class Dedup {
  private readonly seen = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly store: Store | null;
  private readonly max: number;
  private duplicateCount = 0;

  constructor(options: DedupOptions = {}) {
    const o = checkObject('dedup', options, ['store', 'max']);
    const max = optInt('dedup', o, 'max', 1, Number.MAX_SAFE_INTEGER, 10_000);
    this.max = max;
    this.store = options.store?.durable === true ? options.store : null;
  }

  /** Deliveries that were not handled because their envelope had been. */
  get duplicates(): number {
    return this.duplicateCount;
  }

  /** `handler`, run at most once per envelope id. */
  wrap(handler: EnvelopeHandler): EnvelopeHandler {
    return (envelope, delivery) => this.once(handler, envelope, delivery);
  }

  private async once(handler: EnvelopeHandler, envelope: Envelope, delivery: Delivery): Promise<void> {
    const id = envelope.id;
    if (this.seen.has(id)) {
      this.duplicateCount++;
      return;
    }
    const inProgress = this.running.get(id);
    if (inProgress !== undefined) {
      // The same envelope again while its first delivery is being handled: wait for that one;
      // if it failed (no mark), this delivery gets its own try.
      return inProgress.then(
        () => {
          this.duplicateCount++;
        },
        () => this.once(handler, envelope, delivery),
      );
    }
    const run = (async () => {
      if (this.store !== null && (await this.store.getStep(RECEIVE_MARK_PREFIX + id)) !== undefined) {
        this.duplicateCount++;
        this.remember(id);
        return;
      }
      await handler(envelope, delivery);
      if (this.store !== null) await this.store.commit({ steps: [{ stepKey: RECEIVE_MARK_PREFIX + id, traceId: envelope.traceId, value: true, ts: Date.now() }] });
      this.remember(id);
    })();
    this.running.set(id, run);
    try {
      await run;
    } finally {
      this.running.delete(id);
    }
  }

  private remember(id: string): void {
    this.seen.add(id);
    if (this.seen.size > this.max) this.seen.delete(this.seen.values().next().value!);
  }
}

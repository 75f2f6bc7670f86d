/**
 * The outbox's own logic, on a transport whose sends and connection the test controls: a kept
 * envelope is never stranded by a drain that read too early, a drain stops when the connection
 * goes or the transport closes, a refusal for good is dropped and counted while anything else
 * waits, a journal that failed once is read again, and publishes leave nothing registered.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStore, RoostError, type Envelope, type OutboxEntry } from '../../src/index.js';
import { TransportBase } from '../../src/transport/base.js';
import type { TransportState } from '../../src/transport/transport.js';
import { until } from '../helpers/runtime.js';
import { envelope } from '../transport/contract.js';

type Send = (topic: string, envelope: Envelope) => Promise<void>;

/** A transport with no wire: `sendWith` decides what a send does; `go(state)` moves its connection. */
class FakeTransport extends TransportBase {
  readonly kind = 'fake';
  sent: unknown[] = [];
  sendWith: Send = (_topic, env) => {
    this.sent.push(env.payload);
    return Promise.resolve();
  };

  constructor(store: MemoryStore) {
    super({ outbox: { store, source: 'fake', batch: 4 } });
    this.stateValue = 'connected';
  }

  go(state: TransportState): void {
    this.setState(state);
  }

  get racing(): number {
    return this.awayWaiters;
  }

  protected send(topic: string, _bytes: Buffer, env: Envelope): Promise<void> {
    return this.sendWith(topic, env);
  }

  protected ensureOpen(): void {}

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stopOutbox();
      this.closed();
    })();
    return this.closing;
  }
}

/** A memory store whose outbox reads take `delayMs` (a remote database), and can fail. */
class SlowStore extends MemoryStore {
  delayMs = 0;
  failSize = 0;
  override async outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]> {
    const entries = await super.outboxEntries(source, afterSeq, limit);
    await new Promise((r) => setTimeout(r, this.delayMs));
    return entries;
  }
  override outboxSize(source: string): Promise<number> {
    if (this.failSize > 0) {
      this.failSize--;
      return Promise.reject(new Error('the database is down'));
    }
    return super.outboxSize(source);
  }
}

describe('outbox', () => {
  it('an envelope kept while the drain reads its last, empty page is sent, before anything published later', async () => {
    const store = new SlowStore();
    const t = new FakeTransport(store);
    t.go('reconnecting');
    await t.publish('a', envelope('first'));
    store.delayMs = 30;
    t.go('connected'); // the drain sends "first", then reads again (30 ms)
    await until(() => t.sent.length === 1, 2_000, 'the first to be sent');
    await new Promise((r) => setTimeout(r, 10)); // inside that read now
    await t.publish('a', envelope('second')); // kept: the backlog is not cleared yet
    await until(() => t.stats().outbox === 0, 2_000, 'the outbox to empty');
    await t.publish('a', envelope('third'));
    await until(() => t.sent.length === 3, 2_000, 'the third to be sent');
    expect(t.sent).toEqual(['first', 'second', 'third']);
    expect(await store.outboxSize('fake')).toBe(0);
    await t.close();
  });

  it('a drain whose sends never settle stops when the connection goes, and close() returns', async () => {
    const store = new MemoryStore();
    const t = new FakeTransport(store);
    t.go('reconnecting');
    await t.publish('a', envelope(1));
    t.sendWith = () => new Promise(() => {}); // a client that holds its publishes while away
    t.go('connected');
    await new Promise((r) => setTimeout(r, 20));
    t.go('reconnecting');
    const closed = await Promise.race([t.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('hung'), 1_000))]);
    expect(closed).toBe('closed');
    expect(await store.outboxSize('fake')).toBe(1); // still kept, for the next start
  });

  it('close() during a drain whose sends never settle returns too', async () => {
    const store = new MemoryStore();
    const t = new FakeTransport(store);
    t.go('reconnecting');
    await t.publish('a', envelope(1));
    t.sendWith = () => new Promise(() => {});
    t.go('connected');
    await new Promise((r) => setTimeout(r, 20));
    const closed = await Promise.race([t.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('hung'), 1_000))]);
    expect(closed).toBe('closed');
  });

  it('drops and counts an envelope the broker refuses for good; one that failed otherwise waits', async () => {
    const store = new MemoryStore();
    const t = new FakeTransport(store);
    t.go('reconnecting');
    for (const p of ['refused', 'ok', 'flaky', 'after']) await t.publish('a', envelope(p));
    let flakyFails = 1;
    t.sendWith = (_topic, env) => {
      if (env.payload === 'refused') return Promise.reject(new RoostError('ROOST_ERR_PUBLISH_REFUSED', 'not authorized'));
      if (env.payload === 'flaky' && flakyFails-- > 0) return Promise.reject(new Error('Connection closed')); // uncoded: not known to be for good
      t.sent.push(env.payload);
      return Promise.resolve();
    };
    t.go('connected');
    await until(() => t.stats().outbox === 0, 5_000, 'the outbox to empty (the flaky one after a retry)');
    expect(t.sent).toEqual(['ok', 'flaky', 'after']);
    expect(t.stats()).toMatchObject({ outboxFailed: 1, kept: 4 });
    await t.close();
  });

  it('a journal that could not be read at the first publish is read again at the next', async () => {
    const store = new SlowStore();
    store.failSize = 1;
    const t = new FakeTransport(store);
    await expect(t.publish('a', envelope(1))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE' });
    await t.publish('a', envelope(2));
    expect(t.sent).toEqual([2]);
    await t.close();
  });

  it('publishes leave nothing registered on the connection', async () => {
    const t = new FakeTransport(new MemoryStore());
    for (let i = 0; i < 1_000; i++) await t.publish('a', envelope(i));
    expect(t.sent).toHaveLength(1_000);
    expect(t.racing).toBe(0);
    await t.close();
  });
});

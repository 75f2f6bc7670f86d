/**
 * JetStream: the shared contract on the machine's nats-server (each test its own stream and
 * subject prefix, deleted after), then what only JetStream promises — durable groups that resume
 * across a subscriber restart, the max_ack_pending bound, bad messages terminated (not delivered
 * again), failed handlers retried up to maxDeliver, and a private nats-server killed and started
 * during a stream of envelopes with nothing lost and nothing handled twice.
 */
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { JetStreamApiError, jetstreamManager } from '@nats-io/jetstream';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, SqliteStore, type Envelope } from '../../src/index.js';
import type { Logger } from '../../src/telemetry/logger.js';
import { Dedup } from '../../src/transport/dedup.js';
import { JetStreamTransport, type JetStreamTransportOptions } from '../../src/transport/jetstream.js';
import { natsSubject } from '../../src/transport/nats.js';
import type { Transport } from '../../src/transport/transport.js';
import { NATS_URL, requireBroker } from '../helpers/brokers.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { deferred, eventually, until } from '../helpers/runtime.js';
import { envelope, transportContract } from './contract.js';

beforeAll(() => requireBroker('nats', NATS_URL));

/** A fresh stream name and subject prefix. */
function names(): { stream: string; subjectPrefix: string } {
  const id = randomUUID().slice(0, 8);
  return { stream: `roost-test-${id}`, subjectPrefix: `roost-test-js.${id}` };
}

async function rawConnect(url = NATS_URL): Promise<NatsConnection> {
  return connect({ servers: url.replace('nats://', '') });
}

async function deleteStream(stream: string, url = NATS_URL): Promise<void> {
  const nc = await rawConnect(url);
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => false); // never made (a test that failed early)
  } finally {
    await nc.close();
  }
}

/** Publishes bytes into the stream with the raw client (a JetStream publish without a message id), past the codec. */
async function rawPublish(subjectPrefix: string, topic: string, bytes: Buffer, url = NATS_URL): Promise<void> {
  const nc = await rawConnect(url);
  try {
    const js = (await jetstreamManager(nc)).jetstream();
    await js.publish(`${subjectPrefix}.${natsSubject(topic.split('/'))}`, bytes);
  } finally {
    await nc.close();
  }
}

transportContract('JetStream', () => {
  const n = names();
  return {
    knowsNoResponders: true,
    dedupsPublishes: true,
    async make() {
      const t = new JetStreamTransport({ url: NATS_URL, ...n });
      await t.connect();
      return t;
    },
    raw: (topic, bytes) => rawPublish(n.subjectPrefix, topic, bytes),
    dispose: () => deleteStream(n.stream),
  };
});

describe('JetStream', () => {
  let open: Transport[] = [];
  let streams: string[] = [];
  let broker: PrivateBroker | null = null;
  const make = async (options: Partial<JetStreamTransportOptions> & { stream: string; subjectPrefix: string }, url = NATS_URL): Promise<JetStreamTransport> => {
    const t = new JetStreamTransport({ url, ...options });
    open.push(t);
    if (!streams.includes(options.stream)) streams.push(options.stream);
    await t.connect();
    return t;
  };
  afterEach(async () => {
    await Promise.allSettled(open.map((t) => t.close()));
    open = [];
    if (broker === null) await Promise.allSettled(streams.map((s) => deleteStream(s)));
    streams = [];
    await broker?.dispose();
    broker = null;
  });

  it('makes its stream on connect with the limits asked for, and updates them on the next connect', async () => {
    const n = names();
    const t = await make({ ...n, maxAgeMs: 3_600_000, maxBytes: 1_000_000, duplicateWindowMs: 30_000 });
    const nc = await rawConnect();
    try {
      const jsm = await jetstreamManager(nc);
      let info = await jsm.streams.info(n.stream);
      expect(info.config.subjects).toEqual([`${n.subjectPrefix}.>`]);
      expect(info.config.storage).toBe('file');
      expect(info.config.max_age).toBe(3_600_000 * 1e6);
      expect(info.config.max_bytes).toBe(1_000_000);
      expect(info.config.duplicate_window).toBe(30_000 * 1e6);
      await t.close();
      await make({ ...n, maxAgeMs: 7_200_000, maxBytes: 2_000_000, duplicateWindowMs: 30_000 });
      info = await jsm.streams.info(n.stream);
      expect(info.config.max_age).toBe(7_200_000 * 1e6);
      expect(info.config.max_bytes).toBe(2_000_000);
    } finally {
      await nc.close();
    }
  });

  it('stores an envelope published twice once (its id is the message id), and keeps what was published before anyone subscribed', async () => {
    const n = names();
    const [pub, sub] = [await make(n), await make(n)];
    const env = envelope('once');
    await pub.publish('x/once', env);
    await pub.publish('x/once', env); // a retry after a lost PubAck
    const got: Envelope[] = [];
    await sub.subscribe('x/+', (e) => void got.push(e), { group: 'late' }); // a new group starts at the stream's first envelope
    await until(() => got.length === 1, 5_000, 'the kept envelope');
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([env]);
    const nc = await rawConnect();
    try {
      expect((await (await jetstreamManager(nc)).streams.info(n.stream)).state.messages).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it('makes its stream again when it was deleted under it: the publish fails, coded, and a retry succeeds', async () => {
    const n = names();
    const t = await make(n);
    await t.publish('s/1', envelope(1));
    await deleteStream(n.stream);
    await expect(t.publish('s/1', envelope(2))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE', details: { transport: 'jetstream' } });
    const end = Date.now() + 5_000;
    while (!(await t.publish('s/1', envelope(3)).then(() => true, () => false))) {
      if (Date.now() > end) throw new Error('the stream was not made again within 5 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('a durable group resumes where it left after its subscriber restarts: nothing lost, nothing again', { timeout: 30_000 }, async () => {
    const n = names();
    const pub = await make(n);
    const handled: number[] = [];
    let sub = await make(n);
    await sub.subscribe('jobs/#', (e) => void handled.push(e.payload as number), { group: 'workers' });
    for (let i = 0; i < 20; i++) await pub.publish('jobs/a', envelope(i));
    await until(() => handled.length === 20, 5_000, 'the first twenty');
    await sub.close(); // the consumer stays on the server
    for (let i = 20; i < 40; i++) await pub.publish('jobs/a', envelope(i)); // nobody subscribed
    sub = await make(n);
    await sub.subscribe('jobs/#', (e) => void handled.push(e.payload as number), { group: 'workers' });
    await until(() => handled.length >= 40, 5_000, 'the next twenty');
    await new Promise((r) => setTimeout(r, 300));
    expect(handled).toEqual(Array.from({ length: 40 }, (_, i) => i));
    // The same group on another pattern would be a second consumer under one name: refused.
    await expect(sub.subscribe('other/#', () => {}, { group: 'workers' })).rejects.toMatchObject({ code: 'ROOST_ERR_ALREADY_EXISTS' });
  });

  it('removes a subscriber\'s own consumer on unsubscribe; a group\'s stays unless deleteGroupConsumers', async () => {
    const n = names();
    const nc = await rawConnect();
    try {
      const jsm = await jetstreamManager(nc);
      const consumers = async (): Promise<string[]> => (await jsm.consumers.list(n.stream).next()).map((c) => c.name).sort();
      const t = await make(n);
      const own = await t.subscribe('c', () => {});
      const group = await t.subscribe('c', () => {}, { group: 'keep' });
      expect(await consumers()).toHaveLength(2);
      await own.unsubscribe();
      await group.unsubscribe();
      expect(await consumers()).toEqual(['keep']);
      const d = await make({ ...n, deleteGroupConsumers: true });
      await d.subscribe('d', () => {}, { group: 'gone' });
      expect(await consumers()).toEqual(['gone', 'keep']);
      await d.close();
      expect(await consumers()).toEqual(['keep']);
    } finally {
      await nc.close();
    }
  });

  it('runs at most maxAckPending handlers at once across a group; the rest wait on the server; none is lost', { timeout: 30_000 }, async () => {
    const n = names();
    const members = [await make({ ...n, maxAckPending: 4 }), await make({ ...n, maxAckPending: 4 })];
    const pub = await make(n);
    let running = 0;
    let most = 0;
    const seen: number[] = [];
    let gate = deferred();
    for (const m of members) {
      await m.subscribe(
        'slow',
        async (env) => {
          running++;
          most = Math.max(most, running);
          seen.push(env.payload as number);
          await gate.promise;
          running--;
        },
        { group: 'slow' },
      );
    }
    await Promise.all(Array.from({ length: 30 }, (_, i) => pub.publish('slow', envelope(i))));
    await until(() => running === 4, 5_000, 'four handlers running');
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toHaveLength(4);
    const release = gate;
    gate = deferred();
    gate.resolve();
    release.resolve();
    await until(() => seen.length === 30 && running === 0, 10_000, 'all thirty handled');
    expect(most).toBeLessThanOrEqual(4);
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  it('terminates malformed and oversize messages in the stream: counted once, never delivered again, and the consumer keeps working', { timeout: 30_000 }, async () => {
    const n = names();
    const sub = await make({ ...n, ackWaitMs: 300 });
    const got: Envelope[] = [];
    await sub.subscribe('in', (e) => void got.push(e), { group: 'g' });
    await rawPublish(n.subjectPrefix, 'in', Buffer.from('{"not": json'));
    await rawPublish(n.subjectPrefix, 'in', Buffer.from(JSON.stringify({ v: 1, id: 'nope' })));
    await rawPublish(n.subjectPrefix, 'in', Buffer.alloc(300 * 1024, 0x61));
    await rawPublish(n.subjectPrefix, 'in', Buffer.from(JSON.stringify({ ...envelope(1), v: 99 })));
    const good = envelope('ok');
    await (await make(n)).publish('in', good);
    await until(() => got.length === 1 && sub.stats().dropped === 4, 5_000, 'four drops and the good one');
    await new Promise((r) => setTimeout(r, 1_000)); // three ack waits: a message left unacknowledged would be back
    expect(sub.stats().dropped).toBe(4);
    expect(got).toEqual([good]);
    const nc = await rawConnect();
    try {
      const info = await (await jetstreamManager(nc)).consumers.info(n.stream, 'g');
      expect(info.num_ack_pending).toBe(0);
      expect(info.num_redelivered).toBe(0);
      expect(info.num_pending).toBe(0);
    } finally {
      await nc.close();
    }
    const later = envelope('later');
    await (await make(n)).publish('in', later);
    await until(() => got.length === 2, 5_000, 'a later envelope');
    expect(got[1]).toEqual(later);
  });

  it('delivers an envelope whose handler failed again after retryDelayMs, up to maxDeliver, then drops it', { timeout: 30_000 }, async () => {
    const n = names();
    const errors: string[] = [];
    const logger: Logger = {
      debug: () => {},
      info: () => {},
      warn: () => {},
      error: (fields: Record<string, unknown> | string, message?: string) => void errors.push(typeof fields === 'string' ? fields : (message ?? '')),
      child: () => logger,
    };
    const sub = await make({ ...n, maxDeliver: 3, retryDelayMs: 50, logger });
    const calls = new Map<string, number>();
    let failures = 2;
    await sub.subscribe('r', (e) => {
      calls.set(e.payload as string, (calls.get(e.payload as string) ?? 0) + 1);
      if (e.payload === 'always') throw new Error('always fails');
      if (e.payload === 'twice' && failures-- > 0) throw new Error('fails twice');
    });
    const pub = await make(n);
    await pub.publish('r', envelope('always'));
    await pub.publish('r', envelope('twice'));
    await until(() => calls.get('always') === 3 && calls.get('twice') === 3, 5_000, 'three deliveries of each');
    await new Promise((r) => setTimeout(r, 500));
    expect(calls.get('always')).toBe(3); // dropped after the third
    expect(calls.get('twice')).toBe(3); // the third succeeded: acknowledged, not again
    // Each failure was logged; the last delivery of 'always' was terminated and said so.
    expect(errors.filter((e) => e === 'a transport handler failed')).toHaveLength(5);
    expect(errors.filter((e) => e.includes('dropped an envelope whose handler failed on each of its 3 deliveries'))).toHaveLength(1);
  });

  it('refuses bad options, naming them', () => {
    for (const [option, value] of [
      ['stream', 'a.b'],
      ['stream', ''],
      ['subjectPrefix', 'a.*'],
      ['subjectPrefix', 'a..b'],
      ['maxAckPending', 0],
      ['maxDeliver', 0],
      ['ackWaitMs', 1],
      ['discard', 'oldest'],
    ] as const) {
      expect(() => new JetStreamTransport({ url: NATS_URL, [option]: value })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: option }));
    }
    const unknown = { url: NATS_URL, maxAckPendng: 4 } as unknown as JetStreamTransportOptions; // a typo
    expect(() => new JetStreamTransport(unknown)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.maxAckPendng' }));
  });

  it('fails connect with a coded error when the server has no JetStream', async () => {
    broker = await privateBroker('nats', undefined, { jetstream: false });
    const t = new JetStreamTransport({ url: broker.url, ...names(), publishTimeoutMs: 1_000 });
    await expect(t.connect()).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE', details: { transport: 'jetstream' } });
  });

  it('a subscriber without a group receives again after a restart of a private nats-server, without subscribing again', { timeout: 60_000 }, async () => {
    broker = await privateBroker('nats');
    const n = names();
    const [pub, sub] = [await make(n, broker.url), await make(n, broker.url)];
    const got: unknown[] = [];
    await sub.subscribe('e/#', (e) => void got.push(e.payload));
    await pub.publish('e/1', envelope('before'));
    await until(() => got.length === 1, 5_000, 'the first delivery');
    // The ack is sent after the handler returns: until the server has it (and has saved it), a
    // restart rightly delivers 'before' again (at least once). What this test checks is that the
    // consumer goes on from where it was, so it waits for that, then stops the server gracefully.
    const nc = await rawConnect(broker.url);
    try {
      const jsm = await jetstreamManager(nc);
      await eventually(
        async () => (await jsm.consumers.list(n.stream).next())[0],
        (c) => c !== undefined && c.ack_floor.stream_seq === 1 && c.num_ack_pending === 0,
        5_000,
        'the ack of the first delivery at the server',
      );
    } finally {
      await nc.close();
    }
    await broker.stop({ graceful: true });
    await broker.start();
    await until(() => pub.state === 'connected' && sub.state === 'connected', 10_000, 'both connected again');
    const end = Date.now() + 20_000;
    for (;;) {
      const ok = await pub.publish('e/2', envelope('after')).then(() => true, () => false);
      if (ok) break;
      if (Date.now() > end) throw new Error('no publish after the restart');
      await new Promise((r) => setTimeout(r, 100));
    }
    await until(() => got.includes('after'), 20_000, 'a delivery after the restart');
    expect(got.filter((g) => g === 'before')).toHaveLength(1);
  });

  it('makes a consumer the server lost again, from the next envelope the subscriber had not seen', { timeout: 30_000 }, async () => {
    const n = names();
    const [pub, sub] = [await make(n), await make(n)];
    const got: unknown[] = [];
    await sub.subscribe('lost', (e) => void got.push(e.payload));
    await pub.publish('lost', envelope(1));
    await until(() => got.length === 1, 5_000, 'the first delivery');
    const nc = await rawConnect();
    try {
      const jsm = await jetstreamManager(nc);
      const [consumer] = await jsm.consumers.list(n.stream).next();
      expect(consumer).toBeDefined();
      // An operator, or the server, removes it (2.9 can fail a delete that races an ack's write: again).
      await eventually(
        () => jsm.consumers.delete(n.stream, consumer!.name).then(() => true, (error: unknown) => error instanceof JetStreamApiError && error.code === 10014),
        (deleted) => deleted,
        5_000,
        'the consumer deleted',
      );
      await pub.publish('lost', envelope(2)); // stored while the consumer is gone
      await until(() => got.length === 2, 15_000, 'the envelope published while it was gone');
      await pub.publish('lost', envelope(3));
      await until(() => got.length === 3, 5_000, 'a later one');
      expect(got).toEqual([1, 2, 3]);
      // The whole stream deleted and made again (its sequences start over): nothing is skipped.
      await jsm.streams.delete(n.stream);
      const end = Date.now() + 10_000;
      while (!(await pub.publish('lost', envelope(4)).then(() => true, () => false))) {
        if (Date.now() > end) throw new Error('the stream was not made again');
        await new Promise((r) => setTimeout(r, 50));
      }
      await until(() => got.length === 4, 15_000, 'the first envelope of the new stream');
      expect(got).toEqual([1, 2, 3, 4]);
    } finally {
      await nc.close();
    }
  });

  it('a full stream that takes nothing new refuses a publish for good (ROOST_ERR_PUBLISH_REFUSED): not kept in the outbox', async () => {
    const n = names();
    const store = new MemoryStore();
    const t = await make({ ...n, maxBytes: 1_024, discard: 'new', outbox: { store, source: 'full' } });
    let refused: unknown = null;
    for (let i = 0; i < 20 && refused === null; i++) {
      await t.publish('full', envelope('x'.repeat(200))).catch((error: unknown) => {
        refused = error;
      });
    }
    expect(refused).toMatchObject({ code: 'ROOST_ERR_PUBLISH_REFUSED', details: { transport: 'jetstream', topic: 'full' } });
    expect(t.stats()).toMatchObject({ kept: 0, outbox: 0 });
    expect(await store.outboxSize('full')).toBe(0);
  });

  it('across a restart of a private nats-server during a stream: every envelope handled once by a durable dedup group, none lost, the outbox drained', { timeout: 60_000 }, async () => {
    broker = await privateBroker('nats');
    const dir = mkdtempSync(join(tmpdir(), 'roost-js-restart-'));
    const [pubStore, subStore] = [new SqliteStore(join(dir, 'pub.db')), new SqliteStore(join(dir, 'sub.db'))];
    try {
      const n = names();
      const options = { ...n, ackWaitMs: 1_000, publishTimeoutMs: 1_000 };
      const pub = await make({ ...options, outbox: { store: pubStore, source: 'pub' } }, broker.url);
      const subs = [await make(options, broker.url), await make(options, broker.url)];
      const dedup = new Dedup({ store: subStore });
      const handled = new Map<string, number>();
      for (const s of subs) await s.subscribe('stream/+', (e) => void handled.set(e.id, (handled.get(e.id) ?? 0) + 1), { group: 'g', dedup });
      const total = 300;
      const sent: string[] = [];
      const publishing = (async () => {
        for (let i = 0; i < total; i++) {
          const env = envelope(i);
          await pub.publish(`stream/${i % 3}`, env); // never rejects: sent, or kept in the outbox
          sent.push(env.id);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await until(() => sent.length >= 100, 20_000, 'a hundred published');
      await broker.stop();
      await new Promise((r) => setTimeout(r, 500));
      await broker.start();
      await publishing;
      await until(() => handled.size === total, 30_000, `all ${total} handled (have ${handled.size})`);
      await until(() => pub.stats().outbox === 0, 10_000, 'the outbox to be empty');
      await new Promise((r) => setTimeout(r, 2_500)); // past two ack waits: a redelivery would show now
      expect(handled.size).toBe(total);
      expect([...handled.values()].every((c) => c === 1)).toBe(true);
      expect(new Set(sent).size).toBe(total);
      expect(pub.stats().kept).toBeGreaterThan(0); // the outage was real: publishes were kept and sent later
      expect(await pubStore.outboxSize('pub')).toBe(0);
    } finally {
      await Promise.allSettled(open.splice(0).map((t) => t.close()));
      await Promise.allSettled([pubStore.close(), subStore.close()]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

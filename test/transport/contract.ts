/**
 * The transport contract, written once: every transport runs it (in-process, MQTT on the
 * machine's Mosquitto, NATS and JetStream on its nats-server), each test under a topic prefix of
 * its own (JetStream: a stream of its own too).
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ENVELOPE_VERSION, isRoostError, uuidv7, type Envelope } from '../../src/index.js';
import { Dedup } from '../../src/transport/dedup.js';
import type { EnvelopeHandler, Transport, TransportStateEvent } from '../../src/transport/transport.js';
import { until } from '../helpers/runtime.js';

export function envelope(payload: unknown, extra: Partial<Envelope> = {}): Envelope {
  const id = uuidv7();
  return {
    v: ENVELOPE_VERSION,
    id,
    traceId: id,
    parentId: null,
    tenant: 'default',
    from: 'test',
    to: 'peer',
    kind: 'task',
    payload: payload,
    headers: {},
    deadline: null,
    createdAt: Date.now(),
    attempt: 1,
    idempotencyKey: null,
    ...extra,
  };
}

export interface TransportFixture {
  /** A new, connected transport (the suite closes it). */
  make(): Promise<Transport>;
  /** Publishes raw bytes to a topic with the client library itself, bypassing the codec. */
  raw(topic: string, bytes: Buffer): Promise<void>;
  /** Whether a request with no responder fails at once (NATS, in-process) or times out (MQTT). */
  readonly knowsNoResponders: boolean;
  /**
   * Whether the broker itself drops a second publish of an envelope (JetStream: the envelope id
   * is the message id). The dedup test then sends its repeats with `raw`, past the broker's check.
   */
  readonly dedupsPublishes?: boolean;
  /** Removes what the fixture made on the broker (a stream), after the test's transports closed. */
  dispose?(): Promise<void>;
}

export function transportContract(name: string, fixture: () => TransportFixture): void {
  describe(`transport contract: ${name}`, () => {
    let f: TransportFixture;
    let open: Transport[] = [];
    let prefix: string;
    const make = async (): Promise<Transport> => {
      const t = await f.make();
      open.push(t);
      return t;
    };
    beforeEach(() => {
      f = fixture();
      prefix = `roost-test-${randomUUID().slice(0, 8)}`;
    });
    afterEach(async () => {
      await Promise.allSettled(open.map((t) => t.close()));
      open = [];
      await f.dispose?.();
    });

    it('delivers a published envelope to every subscriber whose pattern matches, intact', async () => {
      const [a, b] = [await make(), await make()];
      const got: { who: string; topic: string; env: Envelope }[] = [];
      await b.subscribe(`${prefix}/orders/+`, (env, d) => void got.push({ who: 'plus', topic: d.topic, env }));
      await b.subscribe(`${prefix}/#`, (env, d) => void got.push({ who: 'hash', topic: d.topic, env }));
      await b.subscribe(`${prefix}/other`, (env) => void got.push({ who: 'other', topic: '', env }));
      const sent = envelope({ n: 1, text: 'héllo' }, { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }, deadline: Date.now() + 60_000 });
      await a.publish(`${prefix}/orders/eu`, sent);
      await until(() => got.length >= 2, 5_000, 'two deliveries');
      await new Promise((r) => setTimeout(r, 100));
      expect(got.map((g) => g.who).sort()).toEqual(['hash', 'plus']);
      for (const g of got) {
        expect(g.topic).toBe(`${prefix}/orders/eu`);
        expect(g.env).toEqual(sent);
      }
      expect(a.stats().published).toBe(1);
      expect(b.stats().received).toBeGreaterThanOrEqual(2);
    });

    it('gives each envelope to one member of a worker group, and spreads them', async () => {
      const members = [await make(), await make()];
      const got = [0, 0];
      for (const [i, m] of members.entries()) await m.subscribe(`${prefix}/work`, () => void got[i]!++, { group: 'workers' });
      const pub = await make();
      for (let i = 0; i < 40; i++) await pub.publish(`${prefix}/work`, envelope(i));
      await until(() => got[0]! + got[1]! >= 40, 5_000, 'forty deliveries');
      await new Promise((r) => setTimeout(r, 100));
      expect(got[0]! + got[1]!).toBe(40);
      expect(got[0]).toBeGreaterThan(0);
      expect(got[1]).toBeGreaterThan(0);
    });

    it('two subscriptions of one transport to one pattern each get every envelope, and one unsubscribing leaves the other', async () => {
      const [pub, sub] = [await make(), await make()];
      const got = { first: 0, second: 0 };
      const first = await sub.subscribe(`${prefix}/twice`, () => void got.first++);
      await sub.subscribe(`${prefix}/twice`, () => void got.second++);
      await pub.publish(`${prefix}/twice`, envelope(1));
      await until(() => got.first === 1 && got.second === 1, 5_000, 'a delivery to each');
      await first.unsubscribe();
      await pub.publish(`${prefix}/twice`, envelope(2));
      await until(() => got.second === 2, 5_000, 'the second delivery to the one left');
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toEqual({ first: 1, second: 2 });
    });

    it('two members of one group in one transport share its envelopes: each goes to one of them', async () => {
      const [pub, sub] = [await make(), await make()];
      const got = [0, 0];
      for (const i of [0, 1]) await sub.subscribe(`${prefix}/shared`, () => void got[i]!++, { group: 'local' });
      for (let i = 0; i < 20; i++) await pub.publish(`${prefix}/shared`, envelope(i));
      await until(() => got[0]! + got[1]! >= 20, 5_000, 'twenty deliveries');
      await new Promise((r) => setTimeout(r, 100));
      expect(got[0]! + got[1]!).toBe(20);
      expect(got[0]).toBeGreaterThan(0);
      expect(got[1]).toBeGreaterThan(0);
    });

    it('answers a request through one responder; a responder that fails sends nothing', async () => {
      const [client, server] = [await make(), await make()];
      await server.respond(`${prefix}/double`, (env) => {
        const n = env.payload as number;
        if (n < 0) throw new Error('negative');
        return envelope(n * 2, { parentId: env.id, traceId: env.traceId });
      });
      const req = envelope(21);
      const answer = await client.request(`${prefix}/double`, req, { timeoutMs: 5_000 });
      expect(answer.payload).toBe(42);
      expect(answer.parentId).toBe(req.id);
      const many = await Promise.all(Array.from({ length: 20 }, (_, i) => client.request(`${prefix}/double`, envelope(i), { timeoutMs: 5_000 })));
      expect(many.map((m) => m.payload)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
      await expect(client.request(`${prefix}/double`, envelope(-1), { timeoutMs: 300 })).rejects.toMatchObject({ code: 'ROOST_ERR_REQUEST_TIMEOUT' });
    });

    it('says when nobody answers', async () => {
      const client = await make();
      const t0 = Date.now();
      const error = await client.request(`${prefix}/nobody`, envelope(1), { timeoutMs: 1_000 }).catch((e: unknown) => e);
      expect(isRoostError(error)).toBe(true);
      if (f.knowsNoResponders) {
        expect((error as { code: string }).code).toBe('ROOST_ERR_NO_RESPONDERS');
        expect(Date.now() - t0).toBeLessThan(900);
      } else {
        expect((error as { code: string }).code).toBe('ROOST_ERR_REQUEST_TIMEOUT');
      }
    });

    it('counts and drops what is not an envelope, and keeps delivering', async () => {
      const sub = await make();
      const got: Envelope[] = [];
      await sub.subscribe(`${prefix}/in`, (env) => void got.push(env));
      await f.raw(`${prefix}/in`, Buffer.from('not json'));
      await f.raw(`${prefix}/in`, Buffer.from(JSON.stringify({ v: 1, id: 'nope' })));
      await f.raw(`${prefix}/in`, Buffer.alloc(300 * 1024, 0x61)); // over the 256 KiB cap
      const good = envelope('ok');
      const pub = await make();
      await pub.publish(`${prefix}/in`, good);
      await until(() => got.length === 1 && sub.stats().dropped === 3, 5_000, 'three drops and the good one');
      expect(got[0]).toEqual(good);
    });

    it('with dedup, an envelope delivered again is handled once', async () => {
      const [pub, sub] = [await make(), await make()];
      const dedup = new Dedup();
      const got: string[] = [];
      await sub.subscribe(`${prefix}/d`, (env) => void got.push(env.id), { dedup });
      const [a, b] = [envelope('a'), envelope('b')];
      for (const env of [a, a, b, a, b]) await pub.publish(`${prefix}/d`, env);
      if (f.dedupsPublishes === true) {
        // The broker kept one of each: its repeats come in past its check, as a redelivery would.
        await until(() => got.length === 2, 5_000, 'both envelopes');
        for (const env of [a, b, a]) await f.raw(`${prefix}/d`, Buffer.from(JSON.stringify(env)));
      }
      await until(() => dedup.duplicates === 3, 5_000, 'three duplicates seen');
      expect(got).toEqual([a.id, b.id]);
    });

    it('refuses bad topics, groups and envelopes with coded errors naming the field', async () => {
      const t = await make();
      await expect(t.publish('a.b/c', envelope(1))).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'topic' });
      await expect(t.publish(`${prefix}/+`, envelope(1))).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'topic' });
      await expect(t.subscribe(`${prefix}/#/x`, () => {})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'pattern' });
      await expect(t.subscribe(`${prefix}/x`, () => {}, { group: 'a/b' })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.group' });
      await expect(t.publish(`${prefix}/x`, envelope('x'.repeat(300 * 1024)))).rejects.toMatchObject({ code: 'ROOST_ERR_PAYLOAD_TOO_LARGE' });
      // A responder answers every request, repeats too: dedup there is refused, not ignored.
      const dedup = { wrap: (h: EnvelopeHandler) => h };
      await expect(t.respond(`${prefix}/x`, (env) => env, { dedup } as never)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.dedup' });
      await expect(t.respond(`${prefix}/x`, (env) => env, { group: 'a/b' })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.group' });
    });

    it('stops delivering after unsubscribe; close waits for handlers and refuses later calls', async () => {
      const [pub, sub] = [await make(), await make()];
      const states: TransportStateEvent[] = [];
      sub.onState((e) => states.push(e));
      const got: number[] = [];
      let finished = 0;
      const s = await sub.subscribe(`${prefix}/u`, async (env) => {
        got.push(env.payload as number);
        await new Promise((r) => setTimeout(r, 200));
        finished++;
      });
      await pub.publish(`${prefix}/u`, envelope(1));
      await until(() => got.length === 1, 5_000, 'the first delivery');
      await s.unsubscribe();
      await pub.publish(`${prefix}/u`, envelope(2));
      await new Promise((r) => setTimeout(r, 150));
      expect(got).toEqual([1]);
      await sub.close();
      expect(finished).toBe(1); // close waited for the handler in progress
      expect(sub.state).toBe('closed');
      expect(states.map((e) => e.state)).toEqual(['closed']);
      await expect(sub.publish(`${prefix}/u`, envelope(3))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_CLOSED' });
    });
  });
}

/**
 * The store contract suite: written once, run against every implementation (each `*.test.ts`
 * beside this file calls {@link storeContract} with a factory that makes a fresh, empty store).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uuidv7, type Envelope } from '../../src/index.js';
import { traceHistory } from '../../src/store/history.js';
import { RECEIVE_MARK_PREFIX, type Store, type TraceWrite } from '../../src/store/store.js';

function envelope(traceId: string, to: string, payload: unknown, attempt = 1): Envelope {
  return {
    v: 1,
    id: uuidv7(),
    traceId,
    parentId: null,
    tenant: 'acme',
    from: 'ingress',
    to,
    kind: 'task',
    payload,
    headers: { 'x-request-id': 'r1' },
    deadline: null,
    createdAt: 1_700_000_000_000,
    attempt,
    idempotencyKey: null,
  };
}

function trace(flow: string, traceId: string, createdAt: number, extra: Partial<TraceWrite> = {}): TraceWrite {
  return { flow, traceId, tenant: 'acme', status: 'running', createdAt, updatedAt: createdAt, deadline: null, idempotencyKey: null, ...extra };
}

export function storeContract(name: string, open: () => Promise<Store> | Store, reopen?: (store: Store) => Promise<Store>): void {
  describe(`store contract: ${name}`, () => {
    let store: Store;
    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.close();
    });

    it('a finished trace stays finished, whatever order writes land in', async () => {
      const id = uuidv7();
      await store.commit({ traces: [trace('f', id, 1000, { status: 'succeeded', updatedAt: 1200, result: 7, owner: 'p1' })] });
      // A late write from before the trace ended (a commit that landed out of order).
      await store.commit({ traces: [trace('f', id, 1000, { owner: 'p1' })] });
      expect(await store.getTrace('f', id)).toMatchObject({ status: 'succeeded', updatedAt: 1200, result: 7 });
    });

    it('creates a trace, then records its outcome; unknown traces are null', async () => {
      const id = uuidv7();
      await store.commit({ traces: [trace('f', id, 1000, { idempotencyKey: 'k-1', deadline: 5000, owner: 'p1' })] });
      expect(await store.getTrace('f', id)).toEqual({
        flow: 'f',
        traceId: id,
        tenant: 'acme',
        status: 'running',
        createdAt: 1000,
        updatedAt: 1000,
        deadline: 5000,
        idempotencyKey: 'k-1',
        idempotencyFingerprint: null,
        result: null,
        error: null,
        owner: 'p1',
      });
      await store.commit({ traces: [trace('f', id, 1000, { status: 'succeeded', updatedAt: 1200, result: { n: 3, s: 'é' } })] });
      expect(await store.getTrace('f', id)).toMatchObject({ status: 'succeeded', updatedAt: 1200, result: { n: 3, s: 'é' }, owner: 'p1', error: null });
      expect(await store.getTrace('f', uuidv7())).toBeNull();
      expect(await store.getTrace('other-flow', id)).toBeNull();
    });

    it('keeps a string result a string, and a failed trace its error', async () => {
      const a = uuidv7();
      const b = uuidv7();
      await store.commit({
        traces: [
          trace('f', a, 1, { status: 'succeeded', result: 'plain text' }),
          trace('f', b, 1, { status: 'failed', error: { code: 'ROOST_ERR_NODE_FAILED', message: 'boom' } }),
        ],
      });
      expect((await store.getTrace('f', a))!.result).toBe('plain text');
      expect((await store.getTrace('f', b))!.error).toEqual({ code: 'ROOST_ERR_NODE_FAILED', message: 'boom' });
    });

    it('journals pending envelopes in acceptance order and forgets consumed ones', async () => {
      const t = uuidv7();
      const envs = [envelope(t, 'a', 1), envelope(t, 'b', 2), envelope(t, 'a', 3)];
      await store.commit({ traces: [trace('f', t, 1)], accepted: envs.map((e, i) => ({ flow: 'f', node: e.to, envelope: e, hops: i })) });
      await store.commit({ accepted: [{ flow: 'g', node: 'x', envelope: envelope(uuidv7(), 'x', 9), hops: 0 }] });
      let pending = await store.pendingEnvelopes('f');
      expect(pending.map((p) => [p.node, p.envelope.payload, p.hops])).toEqual([
        ['a', 1, 0],
        ['b', 2, 1],
        ['a', 3, 2],
      ]);
      expect(pending[0]!.envelope).toEqual(envs[0]);
      expect(pending[0]!.seq).toBeLessThan(pending[1]!.seq);
      await store.commit({ consumed: [envs[1]!.id] });
      pending = await store.pendingEnvelopes('f');
      expect(pending.map((p) => p.envelope.payload)).toEqual([1, 3]);
      // Accepting an envelope again (a resume) keeps its first place.
      await store.commit({ accepted: [{ flow: 'f', node: 'a', envelope: envs[0]!, hops: 0 }] });
      expect((await store.pendingEnvelopes('f')).map((p) => p.envelope.payload)).toEqual([1, 3]);
    });

    it('keeps a retry\'s attempt, outputs of running traces, and drops both when the trace ends', async () => {
      const t = uuidv7();
      const e = envelope(t, 'a', 1);
      await store.commit({ traces: [trace('f', t, 1)], accepted: [{ flow: 'f', node: 'a', envelope: e, hops: 0 }] });
      await store.commit({ attempts: [{ envelopeId: e.id, attempt: 3 }], outputs: [{ flow: 'f', traceId: t, value: 'first' }] });
      await store.commit({ outputs: [{ flow: 'f', traceId: t, value: { second: true } }] });
      expect((await store.pendingEnvelopes('f'))[0]!.envelope).toEqual({ ...e, attempt: 3 });
      expect(await store.pendingOutputs('f')).toEqual([
        { traceId: t, value: 'first' },
        { traceId: t, value: { second: true } },
      ]);
      await store.commit({ traces: [trace('f', t, 1, { status: 'succeeded', result: ['first', { second: true }] })], ended: [{ flow: 'f', traceId: t }] });
      expect(await store.pendingEnvelopes('f')).toEqual([]);
      expect(await store.pendingOutputs('f')).toEqual([]);
    });

    it('keeps the lease of a pending envelope handed to a fleet worker, in the same batch as its acceptance or later', async () => {
      const t = uuidv7();
      const [e1, e2] = [envelope(t, 'a', 1), envelope(t, 'b', 2)];
      const until = Date.now() + 10_000;
      await store.commit({
        traces: [trace('f', t, 1)],
        accepted: [{ flow: 'f', node: 'a', envelope: e1, hops: 0 }, { flow: 'f', node: 'b', envelope: e2, hops: 0 }],
        leases: [{ envelopeId: e1.id, worker: null, delivery: 1, until }],
      });
      let pending = await store.pendingEnvelopes('f');
      expect(pending.map((p) => p.lease)).toEqual([{ worker: null, delivery: 1, until }, null]);
      await store.commit({ leases: [{ envelopeId: e1.id, worker: 'w-1', delivery: 2, until: until + 1 }, { envelopeId: 'no-such-envelope', worker: 'w', delivery: 1, until }] });
      pending = await store.pendingEnvelopes('f');
      expect(pending[0]!.lease).toEqual({ worker: 'w-1', delivery: 2, until: until + 1 });
      await store.commit({ consumed: [e1.id] });
      expect((await store.pendingEnvelopes('f')).map((p) => p.envelope.id)).toEqual([e2.id]);
    });

    it('a batch lands whole: the trace, its accepted envelope, its event', async () => {
      const t = uuidv7();
      const e = envelope(t, 'a', { x: 1 });
      await store.commit({
        traces: [trace('f', t, 10)],
        accepted: [{ flow: 'f', node: 'a', envelope: e, hops: 0 }],
        events: [{ traceId: t, type: 'trace_start', ts: 10, event: { type: 'trace_start', traceId: t } }],
      });
      expect(await store.getTrace('f', t)).not.toBeNull();
      expect(await store.pendingEnvelopes('f')).toHaveLength(1);
      expect((await store.history(t)).map((h) => h.type)).toEqual(['trace_start']);
    });

    it('finds the newest trace with a caller\'s idempotency key, within the window', async () => {
      const [a, b, c] = [uuidv7(), uuidv7(), uuidv7()];
      await store.commit({
        traces: [
          trace('f', a, 100, { idempotencyKey: 'k', status: 'succeeded' }),
          trace('f', b, 200, { idempotencyKey: 'k', idempotencyFingerprint: 'fp-b' }),
          trace('f', c, 300, { idempotencyKey: 'k', tenant: 'other' }),
        ],
      });
      expect(await store.findIdempotent('f', 'acme', 'k', 0)).toEqual({ traceId: b, fingerprint: 'fp-b' });
      expect(await store.findIdempotent('f', 'acme', 'k', 250)).toBeNull(); // outside the window
      expect(await store.findIdempotent('f', 'other', 'k', 0)).toEqual({ traceId: c, fingerprint: null });
      expect(await store.findIdempotent('g', 'acme', 'k', 0)).toBeNull();
      expect(await store.findIdempotent('f', 'acme', 'nope', 0)).toBeNull();
    });

    it('lists running traces oldest first, by owner (or unowned)', async () => {
      const [a, b, c, d] = [uuidv7(), uuidv7(), uuidv7(), uuidv7()];
      await store.commit({
        traces: [
          trace('f', b, 20, { owner: 'p1' }),
          trace('f', a, 10, { owner: 'p2' }),
          trace('f', c, 30, { owner: null }),
          trace('f', d, 5, { status: 'succeeded' }),
        ],
      });
      expect((await store.runningTraces('f')).map((t) => t.traceId)).toEqual([a, b, c]);
      expect((await store.runningTraces('f', 'p1')).map((t) => t.traceId)).toEqual([b, c]);
      expect(await store.runningTraces('nope')).toEqual([]);
    });

    it('pages traces newest first with filters and a cursor', async () => {
      const ids: string[] = [];
      const writes: TraceWrite[] = [];
      for (let i = 0; i < 7; i++) {
        const id = uuidv7();
        ids.push(id);
        writes.push(trace('f', id, 1000 + i, { tenant: i % 2 === 0 ? 'even' : 'odd', status: i === 3 ? 'failed' : 'succeeded' }));
      }
      await store.commit({ traces: writes });
      const first = await store.listTraces({ flow: 'f', limit: 3 });
      expect(first.traces.map((t) => t.createdAt)).toEqual([1006, 1005, 1004]);
      const second = await store.listTraces({ flow: 'f', limit: 3, cursor: first.next! });
      expect(second.traces.map((t) => t.createdAt)).toEqual([1003, 1002, 1001]);
      const third = await store.listTraces({ flow: 'f', limit: 3, cursor: second.next! });
      expect(third.traces.map((t) => t.createdAt)).toEqual([1000]);
      expect(third.next).toBeNull();
      expect((await store.listTraces({ tenant: 'even' })).traces).toHaveLength(4);
      expect((await store.listTraces({ status: 'failed' })).traces.map((t) => t.traceId)).toEqual([ids[3]]);
      expect((await store.listTraces({ since: 1002, until: 1004 })).traces.map((t) => t.createdAt)).toEqual([1003, 1002]);
      await expect(store.listTraces({ cursor: 'not-a-cursor' })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'query.cursor' });
      await expect(store.listTraces({ limit: 0 })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'query.limit' });
    });

    it('records a step once: the first result stands', async () => {
      const t = uuidv7();
      expect(await store.getStep('s-1')).toBeUndefined();
      await store.commit({ steps: [{ stepKey: 's-1', traceId: t, value: { charged: 42 }, ts: 1 }] });
      await store.commit({ steps: [{ stepKey: 's-1', traceId: t, value: { charged: 99 }, ts: 2 }] });
      expect(await store.getStep('s-1')).toEqual({ value: { charged: 42 } });
      await store.commit({ steps: [{ stepKey: 's-null', traceId: t, value: null, ts: 1 }] });
      expect(await store.getStep('s-null')).toEqual({ value: null }); // recorded, even if null
    });

    it('keeps the latest checkpoint per key, and prunes it with its trace', async () => {
      const t = uuidv7();
      expect(await store.getCheckpoint('c-1')).toBeUndefined();
      await store.commit({
        traces: [trace('f', t, 1, { status: 'succeeded', updatedAt: 1 })],
        checkpoints: [
          { key: 'c-1', traceId: t, value: { done: 1 }, ts: 1 },
          { key: 'c-1', traceId: t, value: { done: 2 }, ts: 2 },
        ],
      });
      await store.commit({ checkpoints: [{ key: 'c-1', traceId: t, value: { done: 3 }, ts: 3 }] });
      expect(await store.getCheckpoint('c-1')).toEqual({ value: { done: 3 } });
      await store.prune(10);
      expect(await store.getCheckpoint('c-1')).toBeUndefined();
    });

    it('lists checkpoints by key prefix in byte order, in pages, and deletes them by key', async () => {
      const t = uuidv7();
      const keys = ['p:b', 'p:a', 'p', 'p:c', 'p;', 'p:A', 'o:z', 'p:b:1'];
      await store.commit({ checkpoints: keys.map((key, i) => ({ key, traceId: t, value: { i }, ts: i })) });
      const all = await store.listCheckpoints('p:', null, 100);
      // Byte order (upper case first), whatever the database's locale; not 'p', 'p;' nor 'o:z'.
      expect(all.map((c) => c.key)).toEqual(['p:A', 'p:a', 'p:b', 'p:b:1', 'p:c']);
      expect(all[0]).toEqual({ key: 'p:A', traceId: t, value: { i: 5 } });
      expect((await store.listCheckpoints('p:', null, 2)).map((c) => c.key)).toEqual(['p:A', 'p:a']);
      expect((await store.listCheckpoints('p:', 'p:a', 2)).map((c) => c.key)).toEqual(['p:b', 'p:b:1']);
      expect(await store.listCheckpoints('p:', 'p:c', 2)).toEqual([]);
      expect(await store.listCheckpoints('q:', null, 10)).toEqual([]);
      // Deleted after the writes of the same batch; a key that is not there is no error.
      await store.commit({ checkpoints: [{ key: 'p:c', traceId: t, value: 9, ts: 9 }], checkpointsRemoved: ['p:a', 'p:c', 'p:none'] });
      expect(await store.getCheckpoint('p:a')).toBeUndefined();
      expect(await store.getCheckpoint('p:c')).toBeUndefined();
      expect((await store.listCheckpoints('p:', null, 100)).map((c) => c.key)).toEqual(['p:A', 'p:b', 'p:b:1']);
      expect(await store.getCheckpoint('p')).toEqual({ value: { i: 2 } });
    });

    it('finds a trace by its id alone, and derives its lifecycle events from it', async () => {
      const [a, b] = [uuidv7(), uuidv7()];
      await store.commit({
        traces: [
          trace('f', a, 1000, { status: 'failed', updatedAt: 1250, error: { code: 'ROOST_ERR_NODE_FAILED', message: 'no' } }),
          trace('g', b, 2000, { owner: 'p1' }),
        ],
        events: [{ traceId: a, type: 'node_failed', ts: 1240, event: { type: 'node_failed', node: 'x' } }],
      });
      expect(await store.findTrace(a)).toMatchObject({ flow: 'f', status: 'failed' });
      expect(await store.findTrace(uuidv7())).toBeNull();
      const history = await traceHistory(store, a);
      expect(history.map((h) => [h.type, h.ts])).toEqual([
        ['trace_start', 1000],
        ['node_failed', 1240],
        ['trace_failed', 1250],
      ]);
      expect(history[2]!.event).toMatchObject({ flow: 'f', traceId: a, tenant: 'acme', elapsedMs: 250, error: { code: 'ROOST_ERR_NODE_FAILED' } });
      expect(history.map((h) => h.seq)).toEqual([...history.map((h) => h.seq)].sort((x, y) => x - y));
      // A running trace has begun and not ended.
      expect((await traceHistory(store, b)).map((h) => h.type)).toEqual(['trace_start']);
      expect(await traceHistory(store, uuidv7())).toEqual([]);
    });

    it('keeps events per trace in commit order', async () => {
      const [a, b] = [uuidv7(), uuidv7()];
      await store.commit({ events: [{ traceId: a, type: 'node_start', ts: 1, event: { type: 'node_start', node: 'x' } }] });
      await store.commit({
        events: [
          { traceId: b, type: 'trace_start', ts: 2, event: { type: 'trace_start' } },
          { traceId: a, type: 'node_success', ts: 3, event: { type: 'node_success', node: 'x' } },
        ],
      });
      const history = await store.history(a);
      expect(history.map((h) => [h.type, h.ts, h.event['node']])).toEqual([
        ['node_start', 1, 'x'],
        ['node_success', 3, 'x'],
      ]);
      expect(history[0]!.seq).toBeLessThan(history[1]!.seq);
      expect(await store.history(uuidv7())).toEqual([]);
    });

    it('keeps dead letters until removed, newest first, filtered by flow and tenant', async () => {
      const t = uuidv7();
      const letter = (id: string, flow: string, createdAt: number) => ({
        id,
        flow,
        node: 'n',
        traceId: t,
        tenant: 'acme',
        envelope: envelope(t, 'n', { id }),
        error: { code: 'ROOST_ERR_NODE_FAILED', message: 'x' },
        attempts: 3,
        createdAt,
      });
      const d1 = letter('d1', 'f', 1);
      await store.commit({ deadLetters: [d1, letter('d2', 'f', 2), letter('d3', 'g', 3)] });
      expect((await store.listDeadLetters()).map((d) => d.id)).toEqual(['d3', 'd2', 'd1']);
      expect((await store.listDeadLetters({ flow: 'f', limit: 1 })).map((d) => d.id)).toEqual(['d2']);
      expect(await store.getDeadLetter('d1')).toEqual(d1);
      await store.commit({ deadLettersRemoved: ['d1'] });
      expect(await store.getDeadLetter('d1')).toBeNull();
      expect((await store.listDeadLetters({ tenant: 'other' }))).toEqual([]);
    });

    it('leases: one holder at a time, renewal keeps the token, a new holder gets a higher one', async () => {
      const first = await store.acquireLease('singleton', 'p1', 1000, 10_000);
      expect(first).toEqual({ name: 'singleton', holder: 'p1', token: 1, until: 11_000 });
      expect(await store.acquireLease('singleton', 'p2', 1000, 10_500)).toBeNull();
      expect(await store.acquireLease('singleton', 'p1', 1000, 10_900)).toMatchObject({ token: 1, until: 11_900 });
      const taken = await store.acquireLease('singleton', 'p2', 1000, 12_000); // p1 missed its renewal
      expect(taken).toMatchObject({ holder: 'p2', token: 2 });
      await store.releaseLease('singleton', 'p1', 1); // a deposed holder cannot release it
      expect(await store.acquireLease('singleton', 'p3', 1000, 12_100)).toBeNull();
      await store.releaseLease('singleton', 'p2', 2);
      expect(await store.acquireLease('singleton', 'p3', 1000, 12_200)).toMatchObject({ holder: 'p3', token: 3 });
    });

    it('owners of running traces, and claiming them from an owner (or from none)', async () => {
      const [a, b, c, d] = [uuidv7(), uuidv7(), uuidv7(), uuidv7()];
      await store.commit({
        traces: [
          trace('f', a, 1, { owner: 'dead' }),
          trace('f', b, 2, { owner: 'dead' }),
          trace('f', c, 3, { owner: null }),
          trace('f', d, 4, { owner: 'dead', status: 'succeeded' }),
        ],
      });
      expect([...(await store.runningOwners('f'))].sort()).toEqual(['dead', null].sort());
      expect([...(await store.claimTraces('f', 'dead', 'me'))].sort()).toEqual([a, b].sort());
      expect(await store.claimTraces('f', 'dead', 'other')).toEqual([]); // already claimed
      expect(await store.claimTraces('f', null, 'me')).toEqual([c]);
      expect((await store.runningTraces('f')).map((t) => t.owner)).toEqual(['me', 'me', 'me']);
      expect((await store.getTrace('f', d))!.owner).toBe('dead'); // finished traces are not claimed
      expect(await store.getLease('nobody')).toBeNull();
      await store.acquireLease('owner:me', 'me', 1000, 5000);
      expect(await store.getLease('owner:me')).toEqual({ name: 'owner:me', holder: 'me', token: 1, until: 6000 });
    });

    it('versioned values: compare-and-set by version', async () => {
      expect(await store.getValue('cfg')).toBeUndefined();
      expect(await store.putValue('cfg', { a: 1 }, 1)).toBeNull(); // not there yet
      expect(await store.putValue('cfg', { a: 1 }, 0)).toBe(1);
      expect(await store.putValue('cfg', { a: 2 }, 0)).toBeNull(); // exists already
      expect(await store.putValue('cfg', { a: 2 }, 1)).toBe(2);
      expect(await store.putValue('cfg', { a: 3 }, 1)).toBeNull(); // stale version
      expect(await store.getValue('cfg')).toEqual({ value: { a: 2 }, version: 2 });
    });

    it('fenced putValue: lands while the lease is held with the token; refused with ROOST_ERR_FENCED once a newer term holds it', async () => {
      const now = Date.now();
      const old = (await store.acquireLease('duty', 'p1', 60_000, now))!;
      expect(await store.putValue('state', { by: 'p1' }, 0, { name: 'duty', token: old.token })).toBe(1);
      // p2 takes over (p1 "missed its renewals": p2's clock says the lease has lapsed).
      const next = (await store.acquireLease('duty', 'p2', 60_000, old.until + 1))!;
      expect(next).toMatchObject({ holder: 'p2', token: old.token + 1 });
      const late = store.putValue('state', { by: 'p1', late: true }, 1, { name: 'duty', token: old.token });
      await expect(late).rejects.toMatchObject({
        name: 'RoostError',
        code: 'ROOST_ERR_FENCED',
        retryable: false,
        details: { lease: 'duty', token: old.token, currentToken: next.token, currentHolder: 'p2', failure: 'superseded' },
      });
      expect(await store.getValue('state')).toEqual({ value: { by: 'p1' }, version: 1 }); // nothing landed
      // The current term writes; compare-and-set still applies under the fence.
      expect(await store.putValue('state', { by: 'p2' }, 1, { name: 'duty', token: next.token })).toBe(2);
      expect(await store.putValue('state', { by: 'p2' }, 1, { name: 'duty', token: next.token })).toBeNull();
      expect(await store.getValue('state')).toEqual({ value: { by: 'p2' }, version: 2 });
    });

    it('fenced writes are refused once the lease is released, once it lapsed, and when there is no such lease', async () => {
      const now = Date.now();
      const lease = (await store.acquireLease('duty', 'p1', 60_000, now))!;
      await store.releaseLease('duty', 'p1', lease.token);
      await expect(store.putValue('k', 1, 0, { name: 'duty', token: lease.token })).rejects.toMatchObject({
        code: 'ROOST_ERR_FENCED',
        details: { failure: 'released', currentToken: lease.token },
      });
      // The same holder taking it again starts a new term: the old token stays refused.
      const again = (await store.acquireLease('duty', 'p1', 60_000, now))!;
      expect(again.token).toBeGreaterThan(lease.token);
      await expect(store.putValue('k', 1, 0, { name: 'duty', token: lease.token })).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED', details: { failure: 'superseded' } });
      expect(await store.putValue('k', 1, 0, { name: 'duty', token: again.token })).toBe(1);
      // Lapsed by the writer's clock, though nobody took it yet.
      const lapsed = (await store.acquireLease('brief', 'p1', 1_000, now - 10_000))!;
      await expect(store.commit({ fence: { name: 'brief', token: lapsed.token }, steps: [{ stepKey: 's', traceId: 't', value: 1, ts: 1 }] })).rejects.toMatchObject({
        code: 'ROOST_ERR_FENCED',
        details: { failure: 'lapsed', until: lapsed.until },
      });
      expect(await store.getStep('s')).toBeUndefined();
      await expect(store.putValue('k', 2, 1, { name: 'never-taken', token: 1 })).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED', details: { failure: 'no_lease', currentToken: null } });
      expect(await store.getValue('k')).toEqual({ value: 1, version: 1 });
    });

    it('a fenced batch lands whole while the fence holds, and not at all once it does not', async () => {
      const lease = (await store.acquireLease('duty', 'p1', 60_000, Date.now()))!;
      const fence = { name: 'duty', token: lease.token };
      const [a, b] = [uuidv7(), uuidv7()];
      await store.commit({ fence, traces: [trace('f', a, 1)], events: [{ traceId: a, type: 'node_start', ts: 1, event: { n: 1 } }] });
      expect(await store.getTrace('f', a)).toMatchObject({ status: 'running' });
      await store.acquireLease('duty', 'p2', 60_000, lease.until + 1);
      await expect(
        store.commit({
          fence,
          traces: [trace('f', b, 2)],
          events: [{ traceId: a, type: 'node_success', ts: 2, event: { n: 2 } }],
          checkpoints: [{ key: 'c', traceId: a, value: 1, ts: 2 }],
          deadLetters: [],
        }),
      ).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED' });
      expect(await store.getTrace('f', b)).toBeNull();
      expect((await store.history(a)).map((e) => e.type)).toEqual(['node_start']);
      expect(await store.getCheckpoint('c')).toBeUndefined();
      await store.commit({ traces: [trace('f', b, 2)] }); // an unfenced batch is not checked
      expect(await store.getTrace('f', b)).not.toBeNull();
    });

    it('a takeover racing fenced writes: no write of the old term lands after the new term began', async () => {
      for (let round = 0; round < 10; round++) {
        const name = `race-${round}`;
        const traceId = `race-trace-${round}`;
        const old = (await store.acquireLease(name, 'p1', 60_000, Date.now()))!;
        const fence = { name, token: old.token };
        const writes = Array.from({ length: 40 }, (_, i) =>
          store.commit({ fence, events: [{ traceId, type: 'old', ts: i, event: { i } }] }).then(
            () => 'landed',
            (error: unknown) => (error as { code?: string }).code,
          ),
        );
        // p2's clock runs ahead: to it the lease has lapsed, to p1 it has not. It takes over
        // while p1's writes are in flight, and its first write marks the start of its term.
        const next = (await store.acquireLease(name, 'p2', 60_000, old.until + 1))!;
        await store.commit({ fence: { name, token: next.token }, events: [{ traceId, type: 'new', ts: 0, event: {} }] });
        const outcomes = await Promise.all(writes);
        expect(outcomes.every((o) => o === 'landed' || o === 'ROOST_ERR_FENCED'), JSON.stringify(outcomes)).toBe(true);
        const events = await store.history(traceId);
        const marker = events.find((e) => e.type === 'new')!;
        const oldEvents = events.filter((e) => e.type === 'old');
        expect(oldEvents.length).toBe(outcomes.filter((o) => o === 'landed').length);
        expect(oldEvents.filter((e) => e.seq > marker.seq)).toEqual([]);
      }
    });

    it('refuses a malformed fence with ROOST_ERR_INVALID_OPTION', async () => {
      for (const fence of [{ name: '', token: 1 }, { name: 'duty', token: 0 }, { name: 'duty', token: 1.5 }, { name: 'duty' }]) {
        await expect(store.putValue('k', 1, 0, fence as never)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION' });
        await expect(store.commit({ fence: fence as never })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION' });
      }
    });

    it('prunes finished traces older than a time, with their events and steps; running ones stay', async () => {
      const [old, recent, running] = [uuidv7(), uuidv7(), uuidv7()];
      await store.commit({
        traces: [
          trace('f', old, 1, { status: 'succeeded', updatedAt: 100 }),
          trace('f', recent, 1, { status: 'failed', updatedAt: 900 }),
          trace('f', running, 1, { updatedAt: 50 }),
        ],
        events: [{ traceId: old, type: 'trace_success', ts: 100, event: {} }],
        steps: [{ stepKey: 'old-step', traceId: old, value: 1, ts: 100 }],
      });
      expect(await store.prune(500)).toBe(1);
      expect(await store.getTrace('f', old)).toBeNull();
      expect(await store.history(old)).toEqual([]);
      expect(await store.getStep('old-step')).toBeUndefined();
      expect(await store.getTrace('f', recent)).not.toBeNull();
      expect(await store.getTrace('f', running)).not.toBeNull();
    });

    it('prunes receive marks older than the time, by their own time, whatever their trace', async () => {
      const [t1, t2] = [uuidv7(), uuidv7()];
      await store.commit({
        steps: [
          { stepKey: `${RECEIVE_MARK_PREFIX}old`, traceId: t1, value: true, ts: 100 },
          { stepKey: `${RECEIVE_MARK_PREFIX}new`, traceId: t2, value: true, ts: 900 },
          { stepKey: 'a-step', traceId: t1, value: 1, ts: 100 },
        ],
      });
      await store.prune(500);
      expect(await store.getStep(`${RECEIVE_MARK_PREFIX}old`)).toBeUndefined();
      expect(await store.getStep(`${RECEIVE_MARK_PREFIX}new`)).toEqual({ value: true });
      expect(await store.getStep('a-step')).toEqual({ value: 1 }); // a step goes with its trace only
    });

    it('finds by id and by idempotency key across flows, and not once pruned', async () => {
      const t = uuidv7();
      await store.commit({
        traces: [
          trace('f', t, 100, { status: 'succeeded', updatedAt: 150, idempotencyKey: 'k' }),
          trace('g', t, 200, { status: 'failed', updatedAt: 250, idempotencyKey: 'k', error: { code: 'ROOST_ERR_NODE_FAILED', message: 'no' } }),
        ],
      });
      expect(await store.findTrace(t)).toMatchObject({ flow: 'g' }); // the newest of the two
      expect(await store.findIdempotent('f', 'acme', 'k', 0)).toMatchObject({ traceId: t });
      expect(await store.findIdempotent('g', 'acme', 'k', 0)).toMatchObject({ traceId: t });
      expect(await store.prune(200)).toBe(1); // f's, finished at 150
      expect(await store.findTrace(t)).toMatchObject({ flow: 'g' });
      expect(await store.findIdempotent('f', 'acme', 'k', 0)).toBeNull();
      expect(await store.prune(300)).toBe(1);
      expect(await store.findTrace(t)).toBeNull();
      expect(await store.findIdempotent('g', 'acme', 'k', 0)).toBeNull();
    });

    it('keeps outbox entries per source in acceptance order, pages them, forgets sent ones, and prune leaves them', async () => {
      const t = uuidv7();
      const envs = [0, 1, 2, 3, 4].map((n) => envelope(t, 'a', { n }));
      await store.commit({ outbox: envs.slice(0, 3).map((e, i) => ({ source: 'p1', topic: `orders/${i}`, envelope: e, createdAt: 10 + i })) });
      await store.commit({ outbox: [{ source: 'p2', topic: 'other', envelope: envs[3]!, createdAt: 20 }] });
      await store.commit({ outbox: [{ source: 'p1', topic: 'orders/0', envelope: envs[4]!, createdAt: 30 }] });
      const all = await store.outboxEntries('p1', 0, 100);
      expect(all.map((o) => o.envelope)).toEqual([envs[0], envs[1], envs[2], envs[4]]);
      expect(all.map((o) => o.topic)).toEqual(['orders/0', 'orders/1', 'orders/2', 'orders/0']);
      expect(all[0]).toMatchObject({ source: 'p1', createdAt: 10 });
      expect(new Set(all.map((o) => o.seq)).size).toBe(4);
      expect([...all.map((o) => o.seq)].sort((a, b) => a - b)).toEqual(all.map((o) => o.seq));
      expect(await store.outboxSize('p1')).toBe(4);
      expect(await store.outboxSize('p2')).toBe(1);
      expect(await store.outboxSize('nobody')).toBe(0);
      const page = await store.outboxEntries('p1', all[0]!.seq, 2);
      expect(page.map((o) => o.envelope)).toEqual([envs[1], envs[2]]);
      await store.prune(Number.MAX_SAFE_INTEGER);
      await store.commit({ outboxSent: [all[0]!.seq, all[1]!.seq] });
      expect((await store.outboxEntries('p1', 0, 100)).map((o) => o.envelope)).toEqual([envs[2], envs[4]]);
      expect(await store.outboxSize('p1')).toBe(2);
      expect((await store.outboxEntries('p2', 0, 100)).map((o) => o.envelope)).toEqual([envs[3]]);
    });

    it('what it stores is a copy: changing the caller\'s objects later changes nothing', async () => {
      const t = uuidv7();
      const result = { list: [1, 2] };
      await store.commit({ traces: [trace('f', t, 1, { status: 'succeeded', result })] });
      result.list.push(3);
      expect((await store.getTrace('f', t))!.result).toEqual({ list: [1, 2] });
    });

    it('refuses work once closed, with a coded error', async () => {
      await store.close();
      await expect(store.getTrace('f', uuidv7())).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
      await expect(store.commit({})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    });

    if (reopen !== undefined) {
      it('everything committed is there after reopening', async () => {
        const t = uuidv7();
        const e = envelope(t, 'a', { keep: true });
        await store.commit({
          traces: [trace('f', t, 1)],
          accepted: [{ flow: 'f', node: 'a', envelope: e, hops: 0 }],
          steps: [{ stepKey: 'st', traceId: t, value: 'once', ts: 1 }],
          outbox: [{ source: 'p1', topic: 'orders', envelope: e, createdAt: 1 }],
        });
        store = await reopen(store);
        expect((await store.outboxEntries('p1', 0, 10)).map((o) => o.envelope)).toEqual([e]);
        expect((await store.getTrace('f', t))!.status).toBe('running');
        expect((await store.pendingEnvelopes('f')).map((p) => p.envelope)).toEqual([e]);
        expect(await store.getStep('st')).toEqual({ value: 'once' });
      });
    }
  });
}

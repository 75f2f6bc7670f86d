/**
 * The answers owed at start-up: a journal that holds finished traces of 2389 tasks whose notes
 * were never deleted (their answers did not go out before a crash) is answered from, by the
 * process that owns them, and their notes go. The journals are made here by writing to the store
 * directly, as a crashed process would have left them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, node, uuidv7, type RoostEvent, type Runtime } from '../../src/index.js';
import { noteKey, type TaskNote } from '../../src/protocol2389/agent.js';
import { nextTaskId } from '../../src/protocol2389/wire.js';
import { PostgresStore } from '../../src/store/postgres.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { CheckpointWrite, Store, StoredTraceStatus, TraceWrite } from '../../src/store/store.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { assertPgReachable, dropSchemas, freshSchema, schemaUrl } from '../helpers/postgres.js';
import { ForeignClient, agentId, clearRetained, taskV1 } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'answer-owed-2389-'));
const used: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await requireBroker('mqtt', MQTT_URL);
  await assertPgReachable();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  await clearRetained(used.splice(0));
});
afterAll(async () => {
  await dropSchemas();
  rmSync(dir, { recursive: true, force: true });
});

interface Seeded {
  readonly traceId: string;
  readonly task: Record<string, unknown>;
  readonly conversation: string;
}

/** The rows a crashed process left. */
interface Left {
  readonly traces: TraceWrite[];
  readonly checkpoints: CheckpointWrite[];
}

/** What a crashed process leaves for one task of agent `id`: its trace and its note. */
function seed(batch: Left, id: string, status: StoredTraceStatus, end: { result?: unknown; error?: { code: string; message: string }; owner?: string; next?: unknown } = {}): Seeded {
  const traceId = uuidv7();
  const { input: _input, ...task } = taskV1(id, { n: 1 }, end.next === undefined ? {} : { next: end.next });
  const now = Date.now();
  batch.traces.push({
      flow: 'work',
      traceId,
      tenant: 'default',
      status,
      createdAt: now - 1_000,
      updatedAt: now,
      deadline: null,
      idempotencyKey: task['task_id'] as string,
      owner: end.owner ?? 'crashed',
      ...(end.result === undefined ? {} : { result: end.result }),
      ...(end.error === undefined ? {} : { error: end.error }),
  });
  const note = { agent: id, task, acceptedAt: now - 1_000 } as unknown as TaskNote;
  batch.checkpoints.push({ key: noteKey(traceId), traceId, value: note, ts: now - 1_000 });
  return { traceId, task: { ...task, input: { n: 1 } }, conversation: `/conversations/${task['conversation_id'] as string}/${id}` };
}

async function leave(store: Store, batch: Left): Promise<void> {
  await store.commit(batch);
  await store.close();
}

async function foreign(...topics: string[]): Promise<ForeignClient> {
  const f = await ForeignClient.connect();
  cleanups.push(() => f.close());
  for (const t of topics) await f.subscribe(t);
  return f;
}

function runtime(store: string, id: string, owner: string, ownerLeaseMs?: number): { rt: Runtime; events: RoostEvent[]; runs: string[] } {
  const runs: string[] = [];
  const rt = createRuntime({ logger: false, owner, store, ...(ownerLeaseMs === undefined ? {} : { ownerLeaseMs }), protocol2389: { broker: MQTT_URL, agents: [{ id, flow: 'work' }] } });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  rt.flow({ name: 'work', edges: [node('run', (env) => (runs.push(env.traceId), { ran: true }), { retries: 0 }).to()] });
  cleanups.push(() => rt.close());
  return { rt, events, runs };
}

/** An agent id and a fresh PostgreSQL schema to leave rows in, as the processes of a fleet share it. */
function sharedJournal(name: string, schema: string): { id: string; url: string; seeding: PostgresStore; batch: Left } {
  const id = agentId(name);
  used.push(id);
  const url = schemaUrl(freshSchema(schema));
  return { id, url, seeding: new PostgresStore(url), batch: { traces: [], checkpoints: [] } };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('answers owed at start-up', () => {
  it('a finished trace whose answer never went out is answered from the journal (a result with its next task, or an error); its note goes; others are left', async () => {
    const id = agentId('owed');
    const nextAgent = agentId('owed-next');
    used.push(id, nextAgent);
    const path = join(dir, `${id}.db`);
    const seeding = new SqliteStore(path);
    const batch: Left = { traces: [], checkpoints: [] };
    const next = { topic: `/control/agents/${nextAgent}/input`, instruction: 'then', input: null, next: null };
    const done = seed(batch, id, 'succeeded', { result: { done: 1 }, next });
    const failed = seed(batch, id, 'failed', { error: { code: 'ROOST_ERR_NODE_FAILED', message: 'run: boom' } });
    const invalid = seed(batch, id, 'failed', { error: { code: 'ROOST_ERR_VALIDATION', message: 'bad input' } });
    const foreignAgent = seed(batch, agentId('not-here'), 'succeeded', { result: 1 });
    await leave(seeding, batch);

    const f = await foreign('/conversations/#', `/control/agents/${nextAgent}/input`);
    const { rt, events, runs } = runtime(`sqlite:${path}`, id, 'me');
    await rt.start();
    await f.until(() => [done, failed, invalid].every((s) => f.on(s.conversation).length > 0), 10_000, 'the answers owed');
    await f.until(() => f.on(`/control/agents/${nextAgent}/input`).length > 0, 10_000, 'the next task');
    expect(f.on(done.conversation).map((h) => h.json)).toEqual([{ response: { done: 1 }, task_id: done.task['task_id'] }]);
    expect(f.on(failed.conversation).map((h) => h.json)).toEqual([{ error: { code: 'internal_error', message: 'run: boom' }, task_id: failed.task['task_id'] }]);
    expect(f.on(invalid.conversation).map((h) => h.json)).toEqual([{ error: { code: 'invalid_input', message: 'bad input' }, task_id: invalid.task['task_id'] }]);
    // The next task's id is the trace's own: sent again, it is the same task.
    expect(f.on(`/control/agents/${nextAgent}/input`).map((h) => h.json)).toMatchObject([{ task_id: nextTaskId(done.traceId), input: { done: 1 }, instruction: 'then' }]);
    expect(runs).toEqual([]); // answered, not run again
    expect(f.on(foreignAgent.conversation)).toEqual([]);
    await f.until(() => events.filter((e) => e.type === 'agent2389_task' && e.outcome !== 'accepted').length === 3, 5_000, 'the task events');
    expect(events.filter((e) => e.type === 'agent2389_task').map((e) => [(e as { traceId: string }).traceId, (e as { outcome: string }).outcome]).sort()).toEqual(
      [[done.traceId, 'completed'], [failed.traceId, 'failed'], [invalid.traceId, 'failed']].sort(),
    );
    expect(rt.protocol2389!.snapshot().tasks).toMatchObject({ completed: 1, failed: 2, processing: 0 });
    await rt.close();

    const after = new SqliteStore(path);
    cleanups.push(() => after.close());
    for (const s of [done, failed, invalid]) expect(await after.getCheckpoint(noteKey(s.traceId))).toBeUndefined();
    expect(await after.getCheckpoint(noteKey(foreignAgent.traceId))).toBeDefined();
  });

  it('with a shared store: the finished traces of a live owner are left to it; those of a lapsed owner are answered here', async () => {
    const { id, url, seeding, batch } = sharedJournal('owed-pg', 'owed');
    const alive = seed(batch, id, 'succeeded', { result: 'alive', owner: 'alive-owner' });
    const gone = seed(batch, id, 'succeeded', { result: 'gone', owner: 'gone-owner' });
    const mine = seed(batch, id, 'succeeded', { result: 'mine', owner: 'me' });
    expect(await seeding.acquireLease('owner:alive-owner', 'alive-owner', 60_000, Date.now())).not.toBeNull();
    await leave(seeding, batch);

    const f = await foreign('/conversations/#');
    const { rt } = runtime(url, id, 'me');
    await rt.start();
    await f.until(() => f.on(gone.conversation).length > 0 && f.on(mine.conversation).length > 0, 10_000, 'the answers owed here');
    await sleep(300);
    expect(f.on(gone.conversation).map((h) => h.json)).toEqual([{ response: 'gone', task_id: gone.task['task_id'] }]);
    expect(f.on(mine.conversation).map((h) => h.json)).toEqual([{ response: 'mine', task_id: mine.task['task_id'] }]);
    expect(f.on(alive.conversation)).toEqual([]);
    await rt.close();
  });

  it('with a shared store: two processes starting together answer a lapsed owner\'s trace once between them', async () => {
    const { id, url, seeding, batch } = sharedJournal('owed-two', 'owed2');
    const gone = Array.from({ length: 8 }, (_, i) => seed(batch, id, 'succeeded', { result: i, owner: 'gone-owner' }));
    await leave(seeding, batch);

    const f = await foreign('/conversations/#');
    const b = runtime(url, id, 'b');
    const c = runtime(url, id, 'c');
    await Promise.all([b.rt.start(), c.rt.start()]);
    await f.until(() => gone.every((g) => f.on(g.conversation).length > 0), 10_000, 'the answers owed');
    await sleep(500);
    for (const [i, g] of gone.entries()) expect(f.on(g.conversation).map((h) => h.json)).toEqual([{ response: i, task_id: g.task['task_id'] }]);
  });

  it('with a shared store: an owner whose lease lapses after this process started has its owed answers sent by the periodic look', async () => {
    const { id, url, seeding, batch } = sharedJournal('owed-later', 'owedl');
    const later = seed(batch, id, 'succeeded', { result: 'later', owner: 'fading-owner' });
    // Alive for 1.5 s more, then lapsed (never renewed: its process died after this write).
    expect(await seeding.acquireLease('owner:fading-owner', 'fading-owner', 1_500, Date.now())).not.toBeNull();
    await leave(seeding, batch);

    const f = await foreign('/conversations/#');
    const { rt } = runtime(url, id, 'me', 500); // looks again every second
    await rt.start();
    await sleep(500);
    expect(f.on(later.conversation)).toEqual([]); // its owner is alive still: left to it
    // Lapsed at 1.5 s, looked at within a second after: bound 8 s (over 2× the 2.5 s it needs).
    await f.until(() => f.on(later.conversation).length > 0, 8_000, 'the answer of the lapsed owner');
    await sleep(1_500); // another look or two: not sent again
    expect(f.on(later.conversation).map((h) => h.json)).toEqual([{ response: 'later', task_id: later.task['task_id'] }]);
  });
});

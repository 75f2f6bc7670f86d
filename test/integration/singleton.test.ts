/**
 * Leader election on PostgreSQL with three real processes (test/fixtures/singleton-worker.ts),
 * each on a fresh schema per test, with a 500 ms heartbeat and a 1,500 ms lease:
 *
 * - exactly one leads at a time; SIGKILL the leader and another leads within the bound
 *   (lease + heartbeat = 2 s; asserted with a 2× margin);
 * - SIGSTOP the leader past its lease, wait until another leads, SIGCONT it: it reports
 *   `leader_lost` (lapsed), and its writes with the old fencing token are refused by the store
 *   with ROOST_ERR_FENCED, so the new leader's state stands.
 *
 * Every successful write of the duty is a compare-and-set of one versioned value under the
 * writer's fence: in version order, their tokens never go down, which is what "one leader at a
 * time" means for the store.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/index.js';
import { assertPgReachable, dropSchemas, freshPgUrl } from '../helpers/postgres.js';

const worker = fileURLToPath(new URL('../fixtures/singleton-worker.ts', import.meta.url));
const HEARTBEAT_MS = 500;
const LEASE_MS = 1_500;
/** The failover bound: the lease lapses leaseMs after the last renewal, a candidate polls every heartbeat. */
const BOUND_MS = LEASE_MS + HEARTBEAT_MS;

interface Line {
  readonly ev: string;
  readonly ts: number;
  readonly token?: number;
  readonly reason?: string | null;
  readonly ok?: boolean;
  readonly version?: number | null;
  readonly code?: string | null;
  readonly failure?: string | null;
  readonly currentToken?: number | null;
}

interface Worker {
  readonly name: string;
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: Line[];
  readonly exited: Promise<number | null>;
  stderr(): string;
}

const workers: Worker[] = [];

function start(url: string, name: string): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', worker, url, name, String(HEARTBEAT_MS), String(LEASE_MS)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Line[] = [];
  let buffer = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (text.trim() !== '') lines.push(JSON.parse(text) as Line);
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const w = { name, child, lines, exited, stderr: () => err };
  workers.push(w);
  return w;
}

/** Waits (real time) until `check` returns a value other than undefined; fails after `timeoutMs`. */
async function waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() - started > timeoutMs) {
      const state = workers.map((w) => `${w.name}: ${JSON.stringify(w.lines.filter((l) => l.ev !== 'write').slice(-6))} ${w.stderr().slice(-500)}`).join('\n');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${state}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Leader events of `w`. */
const leaderEvents = (w: Worker): Line[] => w.lines.filter((l) => l.ev === 'leader_elected' || l.ev === 'leader_lost');
/** True when `w`'s latest leader event says it leads. */
const leads = (w: Worker): boolean => leaderEvents(w).at(-1)?.ev === 'leader_elected';

/** Every successful write, of every process, in version order: their tokens never go down. */
function assertWritesSerialised(): void {
  const ok = workers.flatMap((w) => w.lines.filter((l) => (l.ev === 'write' || l.ev === 'late_write') && l.ok === true));
  expect(ok.length).toBeGreaterThan(0);
  const byVersion = [...ok].sort((a, b) => a.version! - b.version!);
  expect(new Set(byVersion.map((l) => l.version)).size, 'a version written twice').toBe(byVersion.length);
  for (let i = 1; i < byVersion.length; i++) expect(byVersion[i]!.token!).toBeGreaterThanOrEqual(byVersion[i - 1]!.token!);
}

beforeAll(assertPgReachable);
afterEach(async () => {
  for (const w of workers.splice(0)) {
    if (w.child.exitCode === null && w.child.signalCode === null) {
      w.child.kill('SIGKILL'); // works on a stopped process too
      await w.exited;
    }
  }
});
afterAll(dropSchemas);

describe('leader election with 3 processes on PostgreSQL', () => {
  it('exactly one leads; SIGKILL the leader and another leads within the bound', async () => {
    const url = freshPgUrl('leader');
    const all = ['a', 'b', 'c'].map((name) => start(url, name));
    await waitFor(() => (all.every((w) => w.lines.some((l) => l.ev === 'ready')) ? true : undefined), 30_000, 'all three to start');
    const first = await waitFor(() => all.find(leads), 2 * BOUND_MS, 'a leader');
    // Several leases later, still exactly that one, in its first term: no churn.
    await sleep(2 * LEASE_MS);
    expect(all.filter(leads).map((w) => w.name)).toEqual([first.name]);
    expect(all.flatMap(leaderEvents).map((l) => l.ev)).toEqual(['leader_elected']);
    const firstToken = leaderEvents(first)[0]!.token!;
    await waitFor(() => (first.lines.some((l) => l.ev === 'write' && l.ok === true) ? true : undefined), 5_000, 'the leader to write');

    const observer = openStore(url);
    const held = (await observer.getLease('singleton:duty').finally(() => observer.close()))!;
    expect(held).toMatchObject({ holder: first.name, token: firstToken });
    const killedAt = Date.now();
    first.child.kill('SIGKILL');
    expect(await first.exited).toBeNull();
    const rest = all.filter((w) => w !== first);
    const next = await waitFor(() => rest.find(leads), 4 * BOUND_MS, 'a new leader');
    const elected = leaderEvents(next).at(-1)!;
    const failoverMs = elected.ts - killedAt;
    if (process.env['ROOST_TEST_VERBOSE']) console.log(`failover after SIGKILL: ${failoverMs} ms (bound ${BOUND_MS} ms)`);
    expect(failoverMs).toBeLessThanOrEqual(2 * BOUND_MS);
    // Nobody took the dead leader's lease while it held (its lease as read just before the kill,
    // on this host's clock, which every process here shares).
    expect(elected.ts).toBeGreaterThanOrEqual(held.until);
    expect(elected.token!).toBeGreaterThan(firstToken);

    await sleep(2 * LEASE_MS);
    expect(rest.filter(leads).map((w) => w.name)).toEqual([next.name]);
    expect(rest.flatMap(leaderEvents).map((l) => l.ev)).toEqual(['leader_elected']); // one election, no loss
    await waitFor(() => (next.lines.some((l) => l.ev === 'write' && l.ok === true) ? true : undefined), 5_000, 'the new leader to write');
    assertWritesSerialised();
    const store = openStore(url);
    try {
      expect(await store.getValue('duty:state')).toMatchObject({ value: { owner: next.name, token: elected.token } });
    } finally {
      await store.close();
    }
  }, 90_000);

  it('SIGSTOP the leader past its lease, SIGCONT it once another leads: its old-token writes are refused with ROOST_ERR_FENCED', async () => {
    const url = freshPgUrl('fence');
    const all = ['a', 'b', 'c'].map((name) => start(url, name));
    await waitFor(() => (all.every((w) => w.lines.some((l) => l.ev === 'ready')) ? true : undefined), 30_000, 'all three to start');
    const old = await waitFor(() => all.find(leads), 2 * BOUND_MS, 'a leader');
    const oldToken = leaderEvents(old)[0]!.token!;
    await waitFor(() => (old.lines.some((l) => l.ev === 'write' && l.ok === true) ? true : undefined), 5_000, 'the leader to write');

    const stoppedAt = Date.now();
    old.child.kill('SIGSTOP');
    const rest = all.filter((w) => w !== old);
    const next = await waitFor(() => rest.find(leads), 4 * BOUND_MS, 'another leader while the first is stopped');
    const newToken = leaderEvents(next).at(-1)!.token!;
    expect(newToken).toBeGreaterThan(oldToken);
    await waitFor(() => (next.lines.some((l) => l.ev === 'write' && l.ok === true) ? true : undefined), 5_000, 'the new leader to write');
    // Another leads, so the lease lapsed in the store; stay stopped until it lapsed by the old
    // leader's own clock as well (its last renewal was sent before the stop).
    await sleep(Math.max(0, stoppedAt + LEASE_MS + HEARTBEAT_MS - Date.now()));
    const linesBeforeWake = old.lines.length;
    expect(leads(old)).toBe(true); // frozen: it has not noticed anything yet

    const resumedAt = Date.now();
    old.child.kill('SIGCONT');
    const lost = await waitFor(() => old.lines.slice(linesBeforeWake).find((l) => l.ev === 'leader_lost'), 2 * BOUND_MS, 'the old leader to report leader_lost');
    expect(lost).toMatchObject({ token: oldToken, reason: 'lapsed' });
    // It noticed on its own clock, at once on waking: before its next renewal could even be answered.
    expect(lost.ts - resumedAt).toBeLessThan(HEARTBEAT_MS + 500);
    const late = await waitFor(() => old.lines.slice(linesBeforeWake).find((l) => l.ev === 'late_write'), 5_000, 'the late write');
    // The store refused the old term's write: the lease is held by the new term.
    expect(late).toMatchObject({ token: oldToken, ok: false, code: 'ROOST_ERR_FENCED', failure: 'superseded', currentToken: newToken });
    // Whatever the duty itself wrote after waking was refused too (by the store, or by its own context once it knew).
    await sleep(HEARTBEAT_MS);
    const awake = old.lines.slice(linesBeforeWake).filter((l) => l.ev === 'write');
    expect(awake.length).toBeGreaterThan(0);
    for (const w of awake) expect(w).toMatchObject({ token: oldToken, ok: false, code: 'ROOST_ERR_FENCED' });

    // The new leader never lost its term, and its state stands.
    expect(leaderEvents(next).map((l) => l.ev)).toEqual(['leader_elected']);
    assertWritesSerialised();
    const store = openStore(url);
    try {
      const state = await store.getValue('duty:state');
      expect(state).toMatchObject({ value: { owner: next.name, token: newToken } });
      expect((await store.getLease('singleton:duty'))!.token).toBe(newToken);
    } finally {
      await store.close();
    }
    // The woken process is a candidate again, not a second leader.
    await sleep(2 * HEARTBEAT_MS);
    expect(all.filter(leads).map((w) => w.name)).toEqual([next.name]);
  }, 90_000);
});

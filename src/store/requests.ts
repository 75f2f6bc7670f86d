/**
 * Requests to a runtime through its journal: the CLI marks a dead letter for replay or deletion,
 * and the runtime that hosts the letter's flow carries it out (within a second while it runs,
 * or at its next start). The requests are one list in the store's versioned key-value area,
 * changed by compare-and-set, so a CLI and several runtimes can add and take at once.
 */
import type { Store } from './store.js';

const KEY = 'roost:replay-requests';

/** What the CLI asks of the runtime that hosts a dead letter's flow. */
export interface JournalRequest {
  readonly op: 'replay' | 'delete';
  /** The dead letter's id. */
  readonly id: string;
  /** When it was asked (epoch ms). */
  readonly at: number;
}

/** The list as stored; entries of the first format were bare ids, meaning replay. */
function readList(value: unknown): JournalRequest[] {
  if (!Array.isArray(value)) return [];
  const list: JournalRequest[] = [];
  for (const entry of value as unknown[]) {
    if (typeof entry === 'string') list.push({ op: 'replay', id: entry, at: 0 });
    else if (typeof entry === 'object' && entry !== null) {
      const { op, id, at } = entry as Record<string, unknown>;
      if ((op === 'replay' || op === 'delete') && typeof id === 'string') list.push({ op, id, at: typeof at === 'number' ? at : 0 });
    }
  }
  return list;
}

/** Adds a request (once per operation and letter). */
export async function addRequest(store: Store, op: JournalRequest['op'], id: string, now: number = Date.now()): Promise<void> {
  for (;;) {
    const current = await store.getValue(KEY);
    const list = readList(current?.value);
    if (list.some((r) => r.op === op && r.id === id)) return;
    if ((await store.putValue(KEY, [...list, { op, id, at: now }], current?.version ?? 0)) !== null) return;
  }
}

/** Takes the requests `mine` accepts out of the list and returns them; the rest stay. */
export async function takeRequests(store: Store, mine: (request: JournalRequest) => Promise<boolean>): Promise<JournalRequest[]> {
  for (;;) {
    const current = await store.getValue(KEY);
    const list = readList(current?.value);
    if (list.length === 0) return [];
    const taken: JournalRequest[] = [];
    const left: JournalRequest[] = [];
    for (const request of list) ((await mine(request)) ? taken : left).push(request);
    if (taken.length === 0) return [];
    if ((await store.putValue(KEY, left, current!.version)) !== null) return taken;
  }
}

/** The requests waiting now (for `roost dlq list` and tests). */
export async function pendingRequests(store: Store): Promise<JournalRequest[]> {
  return readList((await store.getValue(KEY))?.value);
}

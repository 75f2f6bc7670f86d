/**
 * Requests to a runtime through its journal: the CLI marks a dead letter for replay, and the
 * runtime that hosts the letter's flow replays it (within a second while it runs, or at its
 * next start). The requests are one list in the store's versioned key-value area, changed by
 * compare-and-set, so a CLI and several runtimes can add and take at once.
 */
import type { Store } from './store.js';

const KEY = 'roost:replay-requests';

/** Adds a replay request for dead letter `id` (once). */
export async function requestReplay(store: Store, id: string): Promise<void> {
  for (;;) {
    const current = await store.getValue(KEY);
    const ids = Array.isArray(current?.value) ? (current.value as string[]) : [];
    if (ids.includes(id)) return;
    if ((await store.putValue(KEY, [...ids, id], current?.version ?? 0)) !== null) return;
  }
}

/** Takes the requests `mine` accepts out of the list and returns them; the rest stay. */
export async function takeReplays(store: Store, mine: (id: string) => Promise<boolean>): Promise<string[]> {
  for (;;) {
    const current = await store.getValue(KEY);
    const ids = Array.isArray(current?.value) ? (current.value as string[]) : [];
    if (ids.length === 0) return [];
    const taken: string[] = [];
    const left: string[] = [];
    for (const id of ids) ((await mine(id)) ? taken : left).push(id);
    if (taken.length === 0) return [];
    if ((await store.putValue(KEY, left, current!.version)) !== null) return taken;
  }
}

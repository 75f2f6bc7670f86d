import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lastIdBits, lastUuidv7Time, uuidv7 } from '../../src/envelope/uuid.js';
import { IdempotencyWindow } from '../../src/runtime/idempotency-window.js';

interface ModelEntry {
  traceId: string;
  fingerprint: string | undefined;
  expiresAt: number;
}

/** The reference: a Map in insertion order, swept from the front as the window does. */
class Model {
  readonly entries = new Map<string, ModelEntry>();
  constructor(
    readonly max: number,
    readonly ttlMs: number,
  ) {}
  find(k: string, now: number): ModelEntry | undefined {
    const e = this.entries.get(k);
    if (e === undefined) return undefined;
    if (e.expiresAt <= now) {
      this.sweep(now);
      return undefined;
    }
    return e;
  }
  set(k: string, traceId: string, fingerprint: string | undefined, now: number): void {
    this.entries.delete(k);
    this.entries.set(k, { traceId, fingerprint, expiresAt: now + this.ttlMs });
    this.sweep(now);
  }
  sweep(now: number): void {
    for (const [k, e] of this.entries) {
      if (e.expiresAt > now && this.entries.size <= this.max) break;
      this.entries.delete(k);
    }
  }
}

const FLOWS = ['f', 'g'];
const TENANTS = ['default', 'acme', 'a'];

describe('IdempotencyWindow', () => {
  it('behaves as an insertion-ordered map bounded by count and age under random sets, deletes and finds', () => {
    const part = fc.record({ flow: fc.constantFrom(...FLOWS), tenant: fc.constantFrom(...TENANTS), key: fc.oneof(fc.string({ maxLength: 6, unit: 'binary' }), fc.constantFrom('', 'k1', 'k2', 'k3')) });
    // (The few fixed keys come back often: a find of one, other changes, then a set of it.)
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), part, fp: fc.option(fc.string({ minLength: 1, maxLength: 3 }), { nil: undefined }) }),
      fc.record({ kind: fc.constant('delete' as const), part }),
      fc.record({ kind: fc.constant('find' as const), part }),
      fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 40 }) }),
      // What a keyed emit does: a find, then (on a miss) a set of the same key, which reuses the miss.
      fc.record({ kind: fc.constant('emit' as const), part, fp: fc.option(fc.string({ minLength: 1, maxLength: 3 }), { nil: undefined }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 100 }), fc.array(op, { maxLength: 3000 }), (max, ttlMs, ops) => {
        const w = new IdempotencyWindow(max, ttlMs); // small generations (max / 8, at least 4): recycling and compaction happen often
        const m = new Model(max, ttlMs);
        let now = 1_000;
        let n = 0;
        for (const o of ops) {
          if (o.kind === 'tick') {
            now += o.ms;
            continue;
          }
          const { flow, tenant, key } = o.part;
          const mk = JSON.stringify([flow, tenant, key]);
          if (o.kind === 'emit') {
            const r = w.find(flow, tenant, key, now);
            const e = m.find(mk, now);
            expect(r >= 0).toBe(e !== undefined);
            if (e === undefined) {
              const traceId = uuidv7();
              w.set(flow, tenant, key, traceId, o.fp, now, lastUuidv7Time(), lastIdBits.a, lastIdBits.b, lastIdBits.c);
              m.set(mk, traceId, o.fp, now);
            } else {
              expect(w.traceIdAt(r)).toBe(e.traceId);
            }
          } else if (o.kind === 'set') {
            // Ids just made are kept as their time and bits, any other as characters.
            const made = n++ % 2 === 0;
            const traceId = made ? uuidv7() : `t${n}`;
            if (made) w.set(flow, tenant, key, traceId, o.fp, now, lastUuidv7Time(), lastIdBits.a, lastIdBits.b, lastIdBits.c);
            else w.set(flow, tenant, key, traceId, o.fp, now);
            m.set(mk, traceId, o.fp, now);
          } else if (o.kind === 'delete') {
            expect(w.delete(flow, tenant, key)).toBe(m.entries.delete(mk));
          } else {
            const r = w.find(flow, tenant, key, now);
            const e = m.find(mk, now);
            expect(r >= 0).toBe(e !== undefined);
            if (e !== undefined) {
              expect(w.traceIdAt(r)).toBe(e.traceId);
              expect(w.fingerprintAt(r)).toBe(e.fingerprint);
            }
          }
          expect(w.size).toBe(m.entries.size);
        }
        // Every unexpired entry of the model is found.
        for (const [mk, e] of m.entries) {
          if (e.expiresAt <= now) continue;
          const [flow, tenant, key] = JSON.parse(mk) as [string, string, string];
          const r = w.find(flow, tenant, key, now);
          expect(r).toBeGreaterThanOrEqual(0);
          expect(w.traceIdAt(r)).toBe(e.traceId);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('keeps a key set again when that set also reshapes the rings (the scope had only that key)', () => {
    // The old entry of ("f", "a", "") was its scope's only record: the reshape that the set
    // runs drops it, which freed the scope the new record was going into, so it was lost.
    const w = new IdempotencyWindow(4, 1_000);
    w.set('f', 'default', 'x', 't0', undefined, 1);
    w.set('f', 'default', 'y', 't1', undefined, 1);
    w.set('f', 'a', '', 't2', undefined, 1);
    w.set('f', 'default', 'z', 't3', undefined, 1); // the rings (4 records) are full now
    w.set('f', 'a', '', 't4', undefined, 1);
    const r = w.find('f', 'a', '', 1);
    expect(r).toBeGreaterThanOrEqual(0);
    expect(w.traceIdAt(r)).toBe('t4');
    expect(w.size).toBe(4);
  });

  it('finds a key set after a miss of it even when the table changed in between', () => {
    // A set after a find reuses the slot that find's miss ended on, only while nothing moved.
    const w = new IdempotencyWindow(10_000, 1_000_000);
    for (let i = 0; i < 4_000; i++) w.set('f', 't', `k${i}`, `t${i}`, undefined, 1);
    for (let i = 0; i < 2_000; i++) {
      expect(w.find('f', 't', `x${i}`, 1)).toBe(-1);
      expect(w.delete('f', 't', `k${2 * i}`)).toBe(true); // backward shifts move entries round
      w.set('f', 't', `x${i}`, `y${i}`, undefined, 1);
      const r = w.find('f', 't', `x${i}`, 1);
      expect(r).toBeGreaterThanOrEqual(0);
      expect(w.traceIdAt(r)).toBe(`y${i}`);
    }
    for (let i = 1; i < 4_000; i += 2) expect(w.find('f', 't', `k${i}`, 1)).toBeGreaterThanOrEqual(0);
  });

  it('keeps exactly the newest `max` keys across many generations, each found through its generation', () => {
    const max = 5_000; // generations of 1,024: the keys span six of them, most behind a filter
    const w = new IdempotencyWindow(max, 1_000_000);
    for (let i = 0; i < 23_456; i++) {
      expect(w.find('f', 't', `k${i}`, 1)).toBe(-1);
      w.set('f', 't', `k${i}`, `t${i}`, i % 2 === 0 ? undefined : `fp${i}`, 1);
    }
    expect(w.size).toBe(max);
    for (let i = 23_456 - max; i < 23_456; i++) {
      const r = w.find('f', 't', `k${i}`, 1);
      expect(r).toBeGreaterThanOrEqual(0);
      expect(w.traceIdAt(r)).toBe(`t${i}`);
      expect(w.fingerprintAt(r)).toBe(i % 2 === 0 ? undefined : `fp${i}`);
    }
    for (let i = 0; i < 23_456 - max; i++) expect(w.find('f', 't', `k${i}`, 1)).toBe(-1);
    // Another tenant's same keys are other entries.
    expect(w.find('f', 'u', 'k23455', 1)).toBe(-1);
  });

  it('keeps its arrays bounded under a long run of inserts and deletes', () => {
    const w = new IdempotencyWindow(100, 1_000_000);
    for (let i = 0; i < 200_000; i++) {
      w.set('f', 't', `k${i}`, `t${i}`, undefined, 1);
      if (i % 3 !== 0) expect(w.delete('f', 't', `k${i}`)).toBe(true);
    }
    expect(w.size).toBe(99); // the cap's 100, less the last key, deleted
    // Generations of 16 records, at most ceil(100 / 16) + 2 of them and a spare: some 160 elements each.
    expect(w.footprint).toBeLessThanOrEqual(10 * 16 * 60);
    expect(w.find('f', 't', 'k199998', 2)).toBeGreaterThanOrEqual(0);
    expect(w.find('f', 't', 'k199999', 2)).toBe(-1); // deleted
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lastUuidv7Low32, uuidv7 } from '../../src/envelope/uuid.js';
import { TraceIndex, traceIdHash, type Indexed } from '../../src/flow/trace-index.js';

class Entry implements Indexed<Entry> {
  indexHash = -1;
  indexNext: Entry | null = null;
  constructor(readonly id: string) {}
}

describe('TraceIndex', () => {
  it('behaves as a Map keyed by id under random adds, deletes and lookups (and shrinks back)', () => {
    const ids = fc.oneof(fc.constant(null).map(() => uuidv7()), fc.stringMatching(/^[0-9a-f]{0,10}$/), fc.string({ maxLength: 12 }));
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), id: ids }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('get' as const), at: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const index = new TraceIndex<Entry>();
        const model = new Map<string, Entry>();
        const seen: string[] = [];
        for (const o of ops) {
          if (o.kind === 'add') {
            const e = new Entry(o.id);
            index.add(e);
            model.set(o.id, e);
            seen.push(o.id);
          } else if (seen.length > 0) {
            const id = seen[o.at % seen.length]!;
            if (o.kind === 'delete') {
              const e = model.get(id);
              if (e !== undefined) {
                expect(index.delete(e)).toBe(true);
                expect(index.delete(e)).toBe(false); // gone: a second delete finds nothing
                model.delete(id);
              }
            }
            expect(index.get(id)).toBe(model.get(id));
          }
          expect(index.size).toBe(model.size);
        }
        expect(new Set(index.values())).toEqual(new Set(model.values()));
      }),
    );
  });

  it('replacing an id keeps one entry, and deleting the replaced one leaves the new one', () => {
    const index = new TraceIndex<Entry>();
    const a = new Entry('x');
    const b = new Entry('x');
    index.add(a);
    index.add(b);
    expect(index.size).toBe(1);
    expect(index.delete(a)).toBe(false);
    expect(index.get('x')).toBe(b);
  });

  it('grows and shrinks with its entries', () => {
    const index = new TraceIndex<Entry>();
    const entries = Array.from({ length: 10_000 }, () => new Entry(uuidv7()));
    for (const e of entries) index.add(e);
    for (const e of entries) expect(index.get(e.id)).toBe(e);
    for (const e of entries) index.delete(e);
    expect(index.size).toBe(0);
    expect(index.values()).toEqual([]);
  });

  it('the generator hands out the hash of the id it just made', () => {
    for (let i = 0; i < 10_000; i++) {
      const id = uuidv7();
      expect(lastUuidv7Low32()).toBe(traceIdHash(id));
    }
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fitsJson } from '../../src/envelope/json-size.js';

function exactFits(value: unknown, max: number): boolean {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    return false;
  }
  return text !== undefined && Buffer.byteLength(text, 'utf8') <= max;
}

describe('fitsJson', () => {
  it('never says "fits" for a value JSON.stringify refuses or that is over the cap', () => {
    fc.assert(
      fc.property(fc.anything({ withBigInt: true, withDate: true, withMap: true, withNullPrototype: true, withTypedArray: true }), fc.integer({ min: 1, max: 4096 }), (value, max) => {
        if (fitsJson(value, max)) expect(exactFits(value, max)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('says "fits" for small plain records, the common case it exists for', () => {
    const small = fc.dictionary(
      fc.string({ maxLength: 8 }),
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.string({ maxLength: 16 }), fc.array(fc.integer(), { maxLength: 4 })),
      { maxKeys: 6 },
    );
    fc.assert(
      fc.property(small, (value) => {
        expect(fitsJson(value, 256 * 1024)).toBe(true);
        expect(exactFits(value, 256 * 1024)).toBe(true);
      }),
    );
    expect(fitsJson({ n: 0 }, 1024)).toBe(true);
    expect(fitsJson({ user: 'ada', tags: ['a', 'b'], nested: { ok: true, v: null } }, 1024)).toBe(true);
  });

  it('says "cannot tell" for BigInt, cycles, deep or large values, and non-plain objects', () => {
    const cycle: Record<string, unknown> = {};
    cycle['self'] = cycle;
    expect(fitsJson({ n: 1n }, 1024)).toBe(false);
    expect(fitsJson(cycle, 1024)).toBe(false);
    expect(fitsJson(new Date(), 1024)).toBe(false);
    expect(fitsJson({ s: 'x'.repeat(200) }, 1024)).toBe(false); // 200 × 6 is over 1024: measure it
    expect(fitsJson(Array.from({ length: 100 }, (_, i) => i), 1 << 20)).toBe(false);
    expect(fitsJson(undefined, 1024)).toBe(false);
  });
});

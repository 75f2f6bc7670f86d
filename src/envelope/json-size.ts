/**
 * A quick check that a small payload is plain JSON and under the size cap, without serialising
 * it. `emit` must refuse a payload that is not JSON or is too large, but serialising every
 * payload only to measure it cost 5 % of the flow benchmark, and most payloads are small plain
 * objects. This walk answers "certainly fits" for those and "cannot tell" for anything else
 * (large, deep, not plain, BigInt, functions …); then the caller serialises it for the exact answer.
 */

const MAX_NODES = 64;
const MAX_DEPTH = 8;

/**
 * True when `value` is certainly accepted by `JSON.stringify` and its UTF-8 text is certainly at
 * most `maxBytes`; false when that cannot be told cheaply (not a "no").
 */
export function fitsJson(value: unknown, maxBytes: number): boolean {
  const budget = { nodes: 0, bytes: 0, max: maxBytes };
  return walk(value, 0, budget) && budget.bytes <= maxBytes;
}

interface Budget {
  nodes: number;
  bytes: number;
  readonly max: number;
}

function walk(value: unknown, depth: number, b: Budget): boolean {
  if (++b.nodes > MAX_NODES || depth > MAX_DEPTH) return false;
  switch (typeof value) {
    case 'string':
      b.bytes += value.length * 6 + 2; // a UTF-16 unit is at most 6 bytes (\uXXXX), plus quotes
      return b.bytes <= b.max;
    case 'number':
      b.bytes += 24;
      return true;
    case 'boolean':
      b.bytes += 5;
      return true;
    case 'object': {
      if (value === null) {
        b.bytes += 4;
        return true;
      }
      if (Array.isArray(value)) {
        b.bytes += 2;
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined || typeof item === 'function' || typeof item === 'symbol') return false;
          b.bytes += 1;
          if (!walk(item, depth + 1, b)) return false;
        }
        return b.bytes <= b.max;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return false; // Date, Map, classes, toJSON …
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return false;
      b.bytes += 2;
      for (const key in value) {
        const item: unknown = (value as Record<string, unknown>)[key];
        if (item === undefined || typeof item === 'function' || typeof item === 'symbol') return false;
        b.bytes += key.length * 6 + 4; // quotes, colon, comma
        if (!walk(item, depth + 1, b)) return false;
      }
      return b.bytes <= b.max;
    }
    default:
      return false; // undefined, bigint, function, symbol: let JSON.stringify decide
  }
}

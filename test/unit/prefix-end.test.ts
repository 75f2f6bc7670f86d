// The key range of a prefix listing (SQLite and PostgreSQL list checkpoints by it).
import { describe, expect, it } from 'vitest';
import { prefixEnd } from '../../src/store/store.js';

describe('prefixEnd', () => {
  it('is the prefix with its last character + 1: every key with the prefix sorts before it', () => {
    expect(prefixEnd('agent2389:')).toBe('agent2389;');
    for (const key of ['agent2389:', 'agent2389:\uffff', 'agent2389:zzz']) expect(key < prefixEnd('agent2389:')).toBe(true);
  });

  it('refuses a prefix without a successor for its last character (empty, a surrogate half, U+FFFF), naming the field', () => {
    for (const bad of ['', 'a\ud83d', 'a\uffff']) {
      expect(() => prefixEnd(bad)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'listCheckpoints.prefix' }) as unknown);
    }
  });
});

/**
 * The wire-format reference stays true: its JSON Schema is exactly `ENVELOPE_SCHEMA`, its example
 * envelopes decode, and its field table lists exactly the schema's properties.
 */
import { describe, expect, it } from 'vitest';
import { ENVELOPE_SCHEMA, decodeEnvelope, encodeEnvelope, isUuidV7 } from '../../src/index.js';
import { codeBlocks, headings, missing, readReference, section, tableNames } from '../helpers/markdown.js';

const doc = readReference('wire-formats.md');

/** The first ```json block after the first heading for which `match` is true. */
function firstJsonAfter(match: (text: string) => boolean): string {
  const heading = headings(doc).find((h) => match(h.text));
  if (heading === undefined) throw new Error('heading not found');
  const rest = doc.split('\n').slice(heading.line + 1).join('\n');
  const block = codeBlocks(rest, 'json')[0];
  if (block === undefined) throw new Error(`no json block after "${heading.text}"`);
  return block;
}

describe('docs/reference/wire-formats.md', () => {
  it('prints ENVELOPE_SCHEMA exactly under "JSON Schema"', () => {
    const printed: unknown = JSON.parse(firstJsonAfter((t) => t.includes('JSON Schema')));
    expect(printed).toEqual(ENVELOPE_SCHEMA);
  });

  it('has an example envelope that decodes, unchanged, and survives a re-encode', () => {
    const text = firstJsonAfter((t) => /^Example envelope/i.test(t));
    const decoded = decodeEnvelope(text);
    expect(decoded).toEqual(JSON.parse(text));
    expect(isUuidV7(decoded.id) && isUuidV7(decoded.traceId) && isUuidV7(decoded.parentId)).toBe(true);
    expect(decodeEnvelope(encodeEnvelope(decoded))).toEqual(decoded);
  });

  it('has a minimal example whose absent optional fields decode to null and {}', () => {
    const blocks = codeBlocks(section(doc, (h) => /^Example envelope/i.test(h.text)), 'json');
    expect(blocks.length).toBe(2);
    const minimal = JSON.parse(blocks[1]!) as Record<string, unknown>;
    for (const key of ['parentId', 'headers', 'deadline', 'idempotencyKey']) expect(minimal).not.toHaveProperty(key);
    expect(decodeEnvelope(blocks[1]!)).toEqual({ ...minimal, parentId: null, headers: {}, deadline: null, idempotencyKey: null });
  });

  it('documents exactly the schema’s fields in the envelope table', () => {
    const table = tableNames(section(doc, (h) => h.level === 2 && h.text === 'The envelope'));
    const fields = Object.keys(ENVELOPE_SCHEMA.properties);
    expect(missing(fields, table), 'schema fields missing from the table').toEqual([]);
    expect(missing(table, fields), 'table rows that are not schema fields').toEqual([]);
  });

  it('states the default size cap that the codec enforces', () => {
    expect(section(doc, (h) => h.text === 'The JSON codec')).toMatch(/262,144/);
    const big = JSON.stringify({ pad: 'x'.repeat(262_144) });
    expect(() => decodeEnvelope(big)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_PAYLOAD_TOO_LARGE', details: { size: big.length, max: 262_144 } }));
  });
});

/**
 * The event reference stays true: `docs/reference/events.md` heads exactly the types of
 * `EVENT_TYPES`, each under the section of its interface, and its field tables list exactly the
 * fields of the event and trace-stream interfaces (read from the source, since types do not
 * exist at run time).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../../src/index.js';
import { duplicates, headings, missing, readReference, section, tableNames } from '../helpers/markdown.js';

const doc = readReference('events.md');
const eventsSource = readFileSync(new URL('../../src/flow/events.ts', import.meta.url), 'utf8');
const streamSource = readFileSync(new URL('../../src/flow/trace-stream.ts', import.meta.url), 'utf8');
const leaderSource = readFileSync(new URL('../../src/fleet/events.ts', import.meta.url), 'utf8');
const protocol2389Source = readFileSync(new URL('../../src/protocol2389/events.ts', import.meta.url), 'utf8');

/** A heading that is exactly a snake_case identifier (optionally in backticks) names an event type. */
const TYPE_HEADING = /^`?([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`?$/;

function documentedTypes(): { type: string; line: number }[] {
  return headings(doc).flatMap((h) => {
    const m = TYPE_HEADING.exec(h.text);
    return m ? [{ type: m[1]!, line: h.line }] : [];
  });
}

/** The fields (`readonly name:`) of `export interface <name>` in `source`. */
function interfaceFields(source: string, name: string): string[] {
  const m = new RegExp(`export interface ${name}(?:\\s+extends[^{]+)?\\s*\\{([\\s\\S]*?)\\n\\}`).exec(source);
  if (!m) throw new Error(`interface ${name} not found`);
  return [...m[1]!.matchAll(/^\s*readonly (\w+)\??:/gm)].map((f) => f[1]!);
}

/** The string members of `export type <name> = 'a' | 'b' …;` in `source`. */
function unionMembers(source: string, name: string): string[] {
  const m = new RegExp(`export type ${name}\\s*=([^;]*);`).exec(source);
  if (!m) throw new Error(`type ${name} not found`);
  return [...m[1]!.matchAll(/'([a-z0-9_]+)'/g)].map((t) => t[1]!);
}

/** Event interfaces and the union of their `type`s. */
const FAMILIES = ['NodeEvent', 'TraceEvent', 'AgentEvent', 'DeadLetterEvent', 'StoreEvent', 'DispatchEvent', 'LeaderEvent', 'Agent2389TaskEvent', 'Agent2389CallEvent'] as const;

/** The file each family is declared in: the leader events live with the fleet code, the 2389 ones with the protocol. */
function sourceOf(family: string): string {
  if (family === 'LeaderEvent') return leaderSource;
  if (family.startsWith('Agent2389')) return protocol2389Source;
  return eventsSource;
}

describe('docs/reference/events.md', () => {
  it('heads every type of EVENT_TYPES, and nothing else', () => {
    const documented = documentedTypes().map((d) => d.type);
    expect(EVENT_TYPES.length).toBeGreaterThan(0);
    expect(missing(EVENT_TYPES, documented), 'event types without a heading in events.md').toEqual([]);
    expect(missing(documented, EVENT_TYPES), 'headings in events.md that are not event types').toEqual([]);
    expect(duplicates(documented), 'event types headed twice').toEqual([]);
  });

  it('EVENT_TYPES lists every member of the event type unions (the array is not checked by the compiler)', () => {
    const members = FAMILIES.flatMap((f) => unionMembers(sourceOf(f), `${f}Type`));
    expect(members.length).toBeGreaterThanOrEqual(FAMILIES.length);
    expect(missing(members, EVENT_TYPES), 'union members missing from EVENT_TYPES').toEqual([]);
    expect(missing(EVENT_TYPES, members), 'EVENT_TYPES entries in no union').toEqual([]);
  });

  it('heads each type inside the section of its interface', () => {
    const all = headings(doc);
    const familyOf = new Map<string, string>();
    for (const f of FAMILIES) for (const t of unionMembers(sourceOf(f), `${f}Type`)) familyOf.set(t, f);
    for (const { type, line } of documentedTypes()) {
      const parent = all.filter((h) => h.level === 2 && h.line < line).at(-1);
      expect({ type, section: parent?.text }).toEqual({ type, section: expect.stringContaining(`\`${familyOf.get(type)}\``) });
    }
  });

  it('lists exactly the fields of each event interface in its section’s table', () => {
    for (const name of [...FAMILIES, 'EventError']) {
      const fields = interfaceFields(sourceOf(name), name);
      expect(fields.length, name).toBeGreaterThan(1);
      const body = section(doc, (h) => h.level === 2 && h.text.includes(`\`${name}\``));
      // Only the table before the first sub-heading: the per-type sections hold no field tables.
      const table = tableNames(body.split(/\n#{3,} /)[0]!);
      expect({ name, missing: missing(fields, table) }).toEqual({ name, missing: [] });
      expect({ name, extra: missing(table, fields) }).toEqual({ name, extra: [] });
    }
  });

  it('lists exactly the fields of each trace-stream item', () => {
    const body = section(doc, (h) => h.level === 2 && h.text === 'Trace streams');
    const documented = new Map<string, string[]>();
    let current: string | null = null;
    for (const line of body.split('\n')) {
      const m = /^\|\s*(`(\w+)`)?\s*\|\s*`(\w+)`\s*\|/.exec(line);
      if (!m) continue;
      if (m[2] !== undefined) current = m[2];
      if (current === null) continue;
      documented.set(current, [...(documented.get(current) ?? []), m[3]!]);
    }
    for (const name of ['ChunkItem', 'StreamGapItem', 'TraceEndItem']) {
      const fields = interfaceFields(streamSource, name);
      expect({ name, fields: [...(documented.get(name) ?? [])].sort() }).toEqual({ name, fields: [...fields].sort() });
    }
    for (const item of ['chunk', 'stream_gap', 'trace_end']) expect(body).toContain(`\`'${item}'\``);
  });

  it('explains subscribing and the cost model', () => {
    const body = section(doc, (h) => h.text === 'Subscribing');
    expect(body).toContain('runtime.on(listener)');
    expect(body).toMatch(/unsubscribe/);
    expect(body).toMatch(/only built while at least one listener is\s+subscribed/);
  });
});

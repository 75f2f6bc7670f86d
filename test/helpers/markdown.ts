/** Just enough Markdown reading for the tests that keep `docs/reference/*.md` honest. */
import { readFileSync } from 'node:fs';

/** The text of `docs/reference/<name>`. */
export function readReference(name: string): string {
  return readFileSync(new URL(`../../docs/reference/${name}`, import.meta.url), 'utf8');
}

/** A line of a document, with whether it sits inside a fenced code block. */
interface Line {
  readonly text: string;
  readonly index: number;
  readonly inFence: boolean;
}

function lines(md: string): Line[] {
  let inFence = false;
  return md.split('\n').map((text, index) => {
    const fence = /^\s*(```|~~~)/.test(text);
    const line = { text, index, inFence: inFence || fence };
    if (fence) inFence = !inFence;
    return line;
  });
}

/** A heading outside code blocks. */
export interface Heading {
  readonly level: number;
  readonly text: string;
  /** Line number (0-based). */
  readonly line: number;
}

/** Every ATX heading (`## Title`) outside fenced code blocks, in order. */
export function headings(md: string): Heading[] {
  const out: Heading[] = [];
  for (const l of lines(md)) {
    if (l.inFence) continue;
    const m = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(l.text);
    if (m) out.push({ level: m[1]!.length, text: m[2]!, line: l.index });
  }
  return out;
}

/**
 * The text under the first heading for which `match` is true, up to the next heading of the
 * same or a higher level (sub-headings included). Throws when there is no such heading.
 */
export function section(md: string, match: (heading: Heading) => boolean): string {
  const all = headings(md);
  const i = all.findIndex(match);
  if (i < 0) throw new Error('no heading matches');
  const start = all[i]!;
  const end = all.slice(i + 1).find((h) => h.level <= start.level);
  return md
    .split('\n')
    .slice(start.line + 1, end?.line)
    .join('\n');
}

/** The bodies of the fenced code blocks of `md` with info string `lang`, in order. */
export function codeBlocks(md: string, lang: string): string[] {
  const out: string[] = [];
  const re = new RegExp('^```' + lang + '[ \\t]*\\n([\\s\\S]*?)^```[ \\t]*$', 'gm');
  for (const m of md.matchAll(re)) out.push(m[1]!);
  return out;
}

/**
 * The first cell of each row of the Markdown tables in `md` whose first cell is an inline-code
 * span (`| \`name\` | … |`): the names the tables document.
 */
export function tableNames(md: string): string[] {
  const out: string[] = [];
  for (const l of lines(md)) {
    if (l.inFence) continue;
    const m = /^\|\s*`([^`]+)`\s*\|/.exec(l.text);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Items of `a` not in `b`, sorted (for readable failures). */
export function missing(a: Iterable<string>, b: Iterable<string>): string[] {
  const set = new Set(b);
  return [...new Set(a)].filter((x) => !set.has(x)).sort();
}

/** Items that occur more than once, sorted. */
export function duplicates(items: readonly string[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const x of items) (seen.has(x) ? dup : seen).add(x);
  return [...dup].sort();
}

/**
 * The error catalogue stays true: every code of `ERROR_CODES` has a section in
 * `docs/reference/errors.md` and every section is a real code, each section states the code's
 * default retryability as the table has it, and no `ROOST_ERR_…` code used anywhere in `src/`
 * escapes `ERROR_CODES`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, RoostError, type ErrorCode } from '../../src/index.js';
import { duplicates, headings, missing, readReference, section } from '../helpers/markdown.js';

const doc = readReference('errors.md');
const CODE_HEADING = /^`?(ROOST_ERR_[A-Z0-9_]+)`?$/;
const catalogue = Object.keys(ERROR_CODES) as ErrorCode[];

/** Codes headed (level 2 or 3) in the page. */
function documentedCodes(): string[] {
  return headings(doc)
    .filter((h) => h.level === 2 || h.level === 3)
    .map((h) => CODE_HEADING.exec(h.text)?.[1])
    .filter((c): c is string => c !== undefined);
}

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** Every `.ts` file under `src/`. */
function sourceFiles(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(SRC, f));
}

/** Every `ROOST_ERR_…` token in a text: in string literals, template literals and comments alike. */
function codesIn(text: string): string[] {
  return [...text.matchAll(/\bROOST_ERR_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0]);
}

describe('docs/reference/errors.md', () => {
  it('heads every code of ERROR_CODES, and nothing else', () => {
    const documented = documentedCodes();
    expect(catalogue.length).toBeGreaterThan(0);
    expect(missing(catalogue, documented), 'codes in ERROR_CODES without a heading in errors.md').toEqual([]);
    expect(missing(documented, catalogue), 'headings in errors.md that are not in ERROR_CODES').toEqual([]);
    expect(duplicates(documented), 'codes headed twice').toEqual([]);
  });

  it('states each code’s default retryability as ERROR_CODES has it', () => {
    for (const code of catalogue) {
      const body = section(doc, (h) => CODE_HEADING.exec(h.text)?.[1] === code);
      const m = /\*\*Retryable by default:\*\*\s*(yes|no)\b/i.exec(body);
      expect(m, `${code}: no "**Retryable by default:** yes|no" line`).not.toBeNull();
      expect({ code, retryable: m![1]!.toLowerCase() === 'yes' }).toEqual({ code, retryable: ERROR_CODES[code].retryable });
    }
  });

  it('describes the RoostError shape and the helpers before the codes', () => {
    const firstCode = headings(doc).find((h) => CODE_HEADING.test(h.text))!;
    const intro = doc.split('\n').slice(0, firstCode.line).join('\n');
    for (const name of ['code', 'message', 'field', 'expected', 'received', 'retryable', 'details', 'cause', 'isRoostError', 'ensureError']) {
      expect(intro, `the introduction does not mention \`${name}\``).toContain(`\`${name}`);
    }
  });
});

describe('codes used in src/', () => {
  it('finds the codes the source uses (the scan itself works)', () => {
    const files = sourceFiles();
    expect(files.some((f) => f.endsWith(join('flow', 'flow.ts')))).toBe(true);
    const found = new Set(files.flatMap((f) => codesIn(readFileSync(f, 'utf8'))));
    expect(found.has('ROOST_ERR_QUEUE_FULL')).toBe(true);
    expect(found.has('ROOST_ERR_PAYLOAD_TOO_LARGE')).toBe(true);
    expect(codesIn("throw new RoostError('ROOST_ERR_SOMETHING_NEW', `see ROOST_ERR_OTHER`) // ROOST_ERR_…")).toEqual([
      'ROOST_ERR_SOMETHING_NEW',
      'ROOST_ERR_OTHER',
    ]);
  });

  it('uses no ROOST_ERR_ code that is missing from ERROR_CODES', () => {
    const unknown: string[] = [];
    for (const file of sourceFiles()) {
      for (const code of codesIn(readFileSync(file, 'utf8'))) {
        if (!Object.prototype.hasOwnProperty.call(ERROR_CODES, code)) unknown.push(`${code} in ${file.slice(SRC.length)}`);
      }
    }
    expect(unknown, 'codes used in src/ but not listed in ERROR_CODES (src/errors.ts)').toEqual([]);
  });
});

describe('RoostError defaults the page relies on', () => {
  it('takes `retryable` from ERROR_CODES unless overridden', () => {
    for (const code of catalogue) {
      expect(new RoostError(code, 'x').retryable).toBe(ERROR_CODES[code].retryable);
      expect(new RoostError(code, 'x', { retryable: !ERROR_CODES[code].retryable }).retryable).toBe(!ERROR_CODES[code].retryable);
    }
  });
});

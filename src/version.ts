/**
 * The version of this package, read once from its package.json (one level above both `src/` and
 * `dist/`, so the sources under tsx and the build read the same file).
 */
import { readFileSync } from 'node:fs';

let cached: string | null = null;

/** Roost's package version (`0.1.0`). */
export function roostVersion(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cached;
}

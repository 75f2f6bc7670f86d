/**
 * The application `roost serve` runs: the module the configuration's `app` names (JavaScript,
 * or TypeScript loaded through tsx), whose default export (or `setup` export) is a function that
 * receives the runtime and adds its agents and flows. It may be async.
 *
 *   // fleet.ts
 *   import { node, type Runtime } from 'roost';
 *   export default function setup(runtime: Runtime) { runtime.flow({ name: 'echo', edges: [...] }); }
 */
import { existsSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { Runtime } from '../runtime/runtime.js';

const TYPESCRIPT = new Set(['.ts', '.mts', '.cts', '.tsx']);
const LOADABLE = new Set(['.js', '.mjs', '.cjs', ...TYPESCRIPT]);

/** Whether this code runs as TypeScript already (under tsx): then TypeScript modules load as they are. */
const RUNNING_TS = import.meta.url.endsWith('.ts');
let tsxRegistered = false;

function appError(file: string, message: string, cause?: unknown): RoostError {
  return new RoostError('ROOST_ERR_APP_INVALID', `app ${file}: ${message}`, {
    field: 'app',
    expected: 'a module (.js, .mjs or .ts) whose default export or `setup` export is a function of the runtime',
    received: file,
    ...(cause === undefined ? {} : { cause: ensureError(cause) }),
  });
}

/** The absolute path of the app `app` names, relative to `dir` (the config file's directory). */
export function appPath(app: string, dir: string): string {
  return resolve(dir, app);
}

/**
 * Imports the app at `file` and runs its setup function on `runtime`. Every failure (no file, a
 * syntax error, no function exported, the function throwing) is `ROOST_ERR_APP_INVALID`.
 */
export async function loadApp(file: string, runtime: Runtime): Promise<void> {
  const ext = extname(file);
  if (!LOADABLE.has(ext)) throw appError(file, `expected a .js, .mjs, .cjs or .ts file, got "${ext || 'no extension'}"`);
  if (!existsSync(file)) throw appError(file, 'no such file');
  if (TYPESCRIPT.has(ext) && !RUNNING_TS && !tsxRegistered) {
    const { register } = await import('tsx/esm/api');
    register();
    tsxRegistered = true;
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (error) {
    throw appError(file, `cannot be loaded: ${ensureError(error).message}`, error);
  }
  const setup = typeof mod['default'] === 'function' ? mod['default'] : mod['setup'];
  if (typeof setup !== 'function') {
    throw appError(file, `exports no function: expected \`export default function (runtime) { … }\` or \`export function setup(runtime)\` (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  }
  try {
    await (setup as (runtime: Runtime) => unknown)(runtime);
  } catch (error) {
    if (isRoostError(error, 'ROOST_ERR_APP_INVALID')) throw error;
    const e = ensureError(error);
    throw appError(file, `its setup failed: ${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`, e);
  }
  if (runtime.flowNames().length === 0) throw appError(file, 'its setup added no flow: add at least one with runtime.flow({ name, edges })');
}

/** Running the `roost` command as a user does: a child process, from the sources (through tsx). */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** tsx's loader by absolute URL: `--import tsx` would be resolved from the child's working directory. */
export const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
export const SERVE_APP = fileURLToPath(new URL('../fixtures/serve-app.ts', import.meta.url));

/** The environment of a child: ours without the variables that configure roost. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(ROOST_|LOG_|OTEL_)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** `roost <args>` to its end. */
export function roost(args: readonly string[], options: { cwd?: string; env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', TSX, MAIN, ...args], {
    cwd: options.cwd ?? process.cwd(),
    env: cleanEnv(options.env),
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 60_000,
    ...(options.input === undefined ? {} : { input: options.input }),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `roost <args>` to its end, without blocking the event loop (so a server in this process can answer). */
export function roostAsync(args: readonly string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd: options.cwd ?? process.cwd(), env: cleanEnv(options.env) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A fresh directory with a `roost.toml` of `toml`; removed by `cleanup`. */
export function workDir(toml: string | null): { dir: string; file: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'roost-serve-'));
  const file = join(dir, 'roost.toml');
  if (toml !== null) writeFileSync(file, toml);
  return { dir, file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A `roost serve` child with its JSON log lines. */
export interface Server {
  readonly child: ChildProcess;
  readonly url: string;
  readonly lines: Record<string, unknown>[];
  readonly stderr: () => string;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  signal(name: NodeJS.Signals): void;
}

/** Starts `roost serve` (or `roost worker …`: `args`) in `dir` and waits for its "serving" line (or its early exit). */
export function startServer(dir: string, env: Record<string, string> = {}, timeoutMs = 30_000, args: readonly string[] = ['serve']): Promise<Server> {
  const child = spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd: dir, env: cleanEnv({ ROOST_HTTP_PORT: '0', ...env }) });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  let buffer = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`roost serve did not start in ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString('utf8');
      let cut: number;
      while ((cut = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.trim() === '') continue;
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          parsed = { text: line };
        }
        lines.push(parsed);
        if (typeof parsed['url'] === 'string' && /^roost (serving|worker)/.test(String(parsed['msg']))) {
          clearTimeout(timer);
          resolve({ child, url: parsed['url'], lines, stderr: () => stderr, exited, signal: (s) => child.kill(s) });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`roost serve exited with ${code} before serving: ${stderr} ${JSON.stringify(lines)}`));
    });
  });
}

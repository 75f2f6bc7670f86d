/** The journal commands of the `roost` CLI, on an SQLite journal a runtime wrote. */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createRuntime, node, SqliteStore, type Envelope, type Runtime } from '../../src/index.js';
import { until } from '../helpers/runtime.js';
import { dropSchemas, freshSchema, schemaUrl } from '../helpers/postgres.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** tsx by path: `--import tsx` would be looked up from the child's working directory. */
const tsx = new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'roost-cli-journal-'));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas();
});

function roost(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', tsx, main, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A flow whose node fails on payloads marked bad, until `healed`. */
function flowOn(rt: Runtime, healed: boolean) {
  return rt.flow({
    name: 'cli',
    edges: [
      node('work', (env: Envelope<{ bad?: boolean; n: number }>) => {
        if (env.payload.bad && !healed) throw new Error('backend down');
        return env.payload.n * 2;
      }).to(),
    ],
  });
}

describe('roost journal commands', () => {
  it('trace, dlq list|show|replay|delete, replay, backup and prune; bad arguments exit 2', async () => {
    const path = join(dir, 'journal.db');
    const store = `sqlite:${path}`;
    const first = createRuntime({ logger: false, store });
    const f1 = flowOn(first, false);
    await first.start();
    const ok = await f1.emit({ n: 21 });
    await f1.fetch(ok.traceId);
    const bad1 = await f1.emit({ bad: true, n: 1 });
    const bad2 = await f1.emit({ bad: true, n: 2 });
    const bad3 = await f1.emit({ bad: true, n: 3 });
    for (const t of [bad1, bad2, bad3]) await f1.fetch(t.traceId).catch(() => {});
    const letters = first.deadLetters.list();
    expect(letters).toHaveLength(3);
    const [l1, l2, l3] = letters.map((l) => l.id) as [string, string, string];
    await first.close();

    const timeline = await roost(['trace', ok.traceId, '--store', store]);
    expect(timeline.status).toBe(0);
    expect(timeline.stdout).toContain(`trace ${ok.traceId} in flow cli: succeeded`);
    expect(timeline.stdout).toMatch(/\+\s+0 ms {2}trace_start/);
    expect(timeline.stdout).toContain('trace_success');
    expect(timeline.stdout).toContain('result: 42');
    const failed = await roost(['trace', bad1.traceId, '--store', store]);
    expect(failed.stdout).toContain('node_failed work attempt 1  ROOST_ERR_NODE_FAILED');
    expect((await roost(['trace', '01a20000-0000-7000-8000-000000000000', '--store', store])).status).toBe(1);

    const list = await roost(['dlq', 'list', '--store', store, '--flow', 'cli']);
    expect(list.status).toBe(0);
    for (const id of [l1, l2, l3]) expect(list.stdout).toContain(id);
    const show = await roost(['dlq', 'show', l1, '--store', store]);
    expect(JSON.parse(show.stdout)).toMatchObject({ id: l1, flow: 'cli', node: 'work', attempts: 1 });
    expect((await roost(['dlq', 'delete', l3, '--store', store])).stdout).toContain(`deleted dead letter ${l3}`);

    // A replay requested while no runtime runs happens at the next start …
    expect((await roost(['replay', l1, '--store', store])).stdout).toContain(`replay of ${l1} requested`);
    const second = createRuntime({ logger: false, store });
    flowOn(second, true);
    try {
      await second.start();
      const check = new SqliteStore(path);
      try {
        expect(await check.getDeadLetter(l1)).toBeNull();
        // … and one requested while it runs, within about a second.
        expect((await roost(['dlq', 'replay', l2, '--store', store])).status).toBe(0);
        let gone = false;
        await until(() => {
          void check.getDeadLetter(l2).then((d) => (gone = d === null));
          return gone;
        }, 10_000, 'the running runtime to replay the letter');
        expect(await check.getDeadLetter(l3)).toBeNull();
        const replays = (await check.listTraces({ flow: 'cli', status: 'succeeded', limit: 10 })).traces.map((t) => t.result);
        expect(replays.sort()).toEqual([2, 4, 42]);
      } finally {
        await check.close();
      }
    } finally {
      await second.close();
    }

    const copy = join(dir, 'backup.db');
    expect((await roost(['backup', copy, '--store', store])).status).toBe(0);
    expect(existsSync(copy)).toBe(true);
    const restored = new SqliteStore(copy);
    expect(await restored.getTrace('cli', ok.traceId)).toMatchObject({ status: 'succeeded', result: 42 });
    await restored.close();

    const pruned = await roost(['prune', '--older-than', '0s', '--store', store]);
    expect(pruned.stdout).toMatch(/pruned \d+ finished trace/);

    for (const args of [['dlq', 'frob'], ['prune', '--older-than', 'soon'], ['trace'], ['dlq', 'list', '--store', 'mysql://x'], ['dlq', 'list', '--limit', '0']]) {
      const r = await roost(args);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toContain('usage: roost');
    }
  }, 120_000);

  it('the store comes from --store, else ROOST_STORE_URL, else roost.toml, else sqlite:.roost/roost.db; a PostgreSQL backup is pg_dump', async () => {
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    const viaEnv = join(dir, 'env.db');
    const rt = createRuntime({ logger: false, store: `sqlite:${viaEnv}` });
    const f = flowOn(rt, false);
    await rt.start();
    await f.fetch((await f.emit({ bad: true, n: 1 })).traceId).catch(() => {});
    const [letter] = rt.deadLetters.list();
    await rt.close();
    const env = await roost(['dlq', 'list'], { env: { ROOST_STORE_URL: `sqlite:${viaEnv}` }, cwd });
    expect(env.stdout).toContain(letter!.id);
    // roost.toml's store.url, when neither --store nor the variable says.
    const withConfig = mkdtempSync(join(dir, 'cfg-'));
    writeFileSync(join(withConfig, 'roost.toml'), `[store]\nurl = "sqlite:${viaEnv}"\n`);
    const fromFile = await roost(['dlq', 'list'], { env: { ROOST_STORE_URL: '' }, cwd: withConfig });
    expect(fromFile.stdout).toContain(letter!.id);
    const badConfig = mkdtempSync(join(dir, 'bad-'));
    writeFileSync(join(badConfig, 'roost.toml'), '[store]\nurl = 5\n');
    const refused = await roost(['dlq', 'list'], { env: { ROOST_STORE_URL: '' }, cwd: badConfig });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain('ROOST_ERR_CONFIG');
    // Neither: the default journal under the working directory (made empty).
    const fallback = await roost(['dlq', 'list'], { env: { ROOST_STORE_URL: '' }, cwd });
    expect(fallback.stdout).toContain('no dead letters');
    expect(existsSync(join(cwd, '.roost', 'roost.db'))).toBe(true);
    const pgUrl = new URL(schemaUrl(freshSchema('cli')));
    pgUrl.password = 'sekret';
    const pg = await roost(['backup', 'out.dump', '--store', pgUrl.toString()], { cwd });
    expect(pg.status).toBe(0);
    expect(pg.stdout).toMatch(/pg_dump --schema=roost_test_cli_\w+ --format=custom --file=out\.dump '/);
    expect(pg.stdout).not.toContain('sekret');
  }, 60_000);
});

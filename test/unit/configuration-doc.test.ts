/**
 * The configuration reference stays true: each options table of `docs/reference/configuration.md`
 * lists exactly the keys the validator accepts (read from the `ROOST_ERR_INVALID_OPTION` an
 * unknown key gets, whose `expected` lists the known keys), and the documented defaults are the
 * resolved ones.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_BACKOFF, DEFAULT_QUARANTINE, createRuntime, isRoostError, node, type Runtime } from '../../src/index.js';
import { CONFIG_KEYS, loadConfig } from '../../src/index.js';
import { AGENT2389_KEYS, describeType } from '../../src/config/schema.js';
import { missing, readReference, section, tableNames } from '../helpers/markdown.js';

const doc = readReference('configuration.md');

let rt: Runtime | undefined;
afterEach(async () => {
  await rt?.close();
  rt = undefined;
});

/** The keys listed in the `expected` of the error an unknown key `__unknown__` gets from `fn`. */
function knownKeys(fn: (unknownKey: Record<string, unknown>) => unknown): string[] {
  try {
    fn({ __unknown__: 1 });
  } catch (error) {
    if (!isRoostError(error, 'ROOST_ERR_INVALID_OPTION')) throw error;
    expect(error.field).toMatch(/__unknown__$/);
    const m = /known: ([^)]*)\)/.exec(error.expected ?? '');
    if (m === null) throw new Error(`no list of known keys in ${JSON.stringify(error.expected)}`);
    return m[1]!.split(',').map((k) => k.trim());
  }
  throw new Error('an unknown key was accepted');
}

async function knownKeysAsync(fn: (unknownKey: Record<string, unknown>) => Promise<unknown>): Promise<string[]> {
  const error = await fn({ __unknown__: 1 }).then(
    () => null,
    (e: unknown) => e,
  );
  return knownKeys(() => {
    throw error;
  });
}

/** The option names in the table of the level-2 section whose heading is `` `name` ``. */
function documented(name: string): string[] {
  return tableNames(section(doc, (h) => h.level === 2 && h.text === `\`${name}\``));
}

/** The row of `option` in the section of `name`, as cells. */
function row(name: string, option: string): string[] {
  const body = section(doc, (h) => h.level === 2 && h.text === `\`${name}\``);
  const line = body.split('\n').find((l) => l.startsWith(`| \`${option}\` |`));
  if (line === undefined) throw new Error(`no row for ${option} in ${name}`);
  return line.split(/(?<!\\)\|/).map((c) => c.trim());
}

function expectSameKeys(where: string, doc: readonly string[], code: readonly string[]): void {
  expect({ where, missingFromDoc: missing(code, doc), notAnOption: missing(doc, code) }).toEqual({ where, missingFromDoc: [], notAnOption: [] });
}

const handler = (): number => 1;

describe('docs/reference/configuration.md lists exactly the accepted keys', () => {
  it('RuntimeOptions and its nested objects', () => {
    const rows = documented('RuntimeOptions');
    expectSameKeys('RuntimeOptions', rows.filter((r) => !r.includes('.')), knownKeys((u) => createRuntime(u)));
    for (const nested of ['limits', 'results', 'deadLetters', 'idempotency']) {
      const inDoc = rows.filter((r) => r.startsWith(`${nested}.`)).map((r) => r.slice(nested.length + 1));
      expectSameKeys(nested, inDoc, knownKeys((u) => createRuntime({ [nested]: u })));
    }
  });

  it('Protocol2389Options and Agent2389Options', () => {
    expectSameKeys('Protocol2389Options', documented('Protocol2389Options'), knownKeys((u) => createRuntime({ protocol2389: { broker: 'mqtt://localhost:1883', ...u } })));
    expectSameKeys('Agent2389Options', documented('Agent2389Options'), knownKeys((u) => createRuntime({ protocol2389: { broker: 'mqtt://localhost:1883', agents: [{ id: 'a', flow: 'f', ...u }] } })));
  });

  it('FleetOptions', () => {
    expectSameKeys('FleetOptions', documented('FleetOptions'), knownKeys((u) => createRuntime({ fleet: { transport: 'inprocess:', ...u } })));
  });

  it('QuarantineOptions, AgentOptions, NodePolicy, BackoffOptions', () => {
    expectSameKeys('QuarantineOptions', documented('QuarantineOptions'), knownKeys((u) => createRuntime({ quarantine: u })));
    const r = createRuntime({ logger: false });
    rt = r;
    expectSameKeys('AgentOptions', documented('AgentOptions'), knownKeys((u) => r.agent({ name: 'a1', handler, ...u })));
    expectSameKeys('NodePolicy', documented('NodePolicy'), knownKeys((u) => r.agent({ name: 'a2', handler, policy: u })));
    expectSameKeys('BackoffOptions', documented('BackoffOptions'), knownKeys((u) => r.agent({ name: 'a3', handler, policy: { backoff: u } })));
  });

  it('FlowOptions, EdgeOptions (as ingressQueue) and EmitOptions', async () => {
    const r = createRuntime({ logger: false });
    rt = r;
    expectSameKeys('FlowOptions', documented('FlowOptions'), knownKeys((u) => r.flow(u as never)));
    expectSameKeys('EdgeOptions', documented('EdgeOptions'), knownKeys((u) => r.flow({ name: 'f1', edges: [node('n1', handler).to()], ingressQueue: u })));
    const flow = r.flow({ name: 'f2', edges: [node('n2', handler).to()] });
    await r.start();
    expectSameKeys('EmitOptions', documented('EmitOptions'), await knownKeysAsync((u) => flow.emit(1, u)));
  });
});

describe('docs/reference/configuration.md states the resolved defaults', () => {
  it('of RuntimeOptions', () => {
    const resolved = createRuntime({ logger: false }).options as unknown as Record<string, unknown>;
    const paths: string[] = [];
    for (const [key, value] of Object.entries(resolved)) {
      if (typeof value === 'number') paths.push(key);
      else if (['limits', 'results', 'deadLetters', 'idempotency'].includes(key) && typeof value === 'object' && value !== null) {
        for (const sub of Object.keys(value)) paths.push(`${key}.${sub}`);
      }
    }
    expect(paths.length).toBeGreaterThan(8);
    for (const path of paths) {
      const value = path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], resolved);
      expect({ path, cell: row('RuntimeOptions', path)[3] }).toEqual({ path, cell: expect.stringContaining(`\`${String(value)}\``) });
    }
  });

  it('of QuarantineOptions and BackoffOptions', () => {
    for (const [key, value] of Object.entries(DEFAULT_QUARANTINE)) {
      const literal = typeof value === 'string' ? `'${value}'` : String(value);
      expect({ key, cell: row('QuarantineOptions', key)[3] }).toEqual({ key, cell: expect.stringContaining(`\`${literal}\``) });
    }
    for (const [key, value] of Object.entries(DEFAULT_BACKOFF)) {
      expect({ key, cell: row('BackoffOptions', key)[3] }).toEqual({ key, cell: expect.stringContaining(`\`${String(value)}\``) });
    }
  });

  it('says that unknown keys are rejected with ROOST_ERR_INVALID_OPTION naming the key', () => {
    expect(section(doc, (h) => h.text === 'Validation rules')).toMatch(/Unknown keys are rejected\*\* with `ROOST_ERR_INVALID_OPTION` naming the key/);
  });
});

describe('the roost.toml table', () => {
  const whole = section(doc, (h) => h.level === 2 && h.text === '`roost.toml` and the environment');
  // The flat keys' table comes before the `[[agent2389]]` subsection, which has a table of its own.
  const [body, agentPart] = whole.split('\n### `[[agent2389]]`');
  const rows = new Map(
    body!
      .split('\n')
      .filter((l) => /^\| `[a-z0-9_.]+` \|/.test(l))
      .map((l) => {
        const cells = l.split(/(?<!\\)\|/).map((c) => c.trim());
        return [cells[1]!.replaceAll('`', ''), cells] as const;
      }),
  );

  it('lists exactly the keys of the schema, in its order', () => {
    expect([...rows.keys()]).toEqual(CONFIG_KEYS.map((k) => k.path));
  });

  it('lists exactly the keys of an [[agent2389]] table, with their rules and defaults', () => {
    expect(agentPart, 'the [[agent2389]] subsection').toBeDefined();
    const agentRows = agentPart!
      .split('\n')
      .filter((l) => /^\| `[a-z_]+` \|/.test(l))
      .map((l) => l.split(/(?<!\\)\|/).map((c) => c.trim()));
    expect(agentRows.map((r) => r[1]!.replaceAll('`', ''))).toEqual(AGENT2389_KEYS.map((k) => k.path));
    for (const key of AGENT2389_KEYS) {
      const cells = agentRows.find((r) => r[1] === `\`${key.path}\``)!;
      const shown = key.default === null ? (key.type.kind === 'strings' ? '`[]`' : 'required') : `\`${typeof key.default === 'string' ? JSON.stringify(key.default) : String(key.default)}\``;
      expect({ key: key.path, expected: cells[2], default: cells[3] }).toEqual({ key: key.path, expected: describeType(key.type), default: shown });
    }
  });

  it('gives each its rule, default and variable', () => {
    for (const key of CONFIG_KEYS) {
      const cells = rows.get(key.path)!;
      const shown = key.default === null ? '—' : `\`${typeof key.default === 'string' ? JSON.stringify(key.default) : String(key.default)}\``;
      expect({ key: key.path, expected: cells[2], default: cells[3], env: cells[4] }).toEqual({
        key: key.path,
        expected: describeType(key.type),
        default: shown,
        env: key.env === undefined ? '—' : `\`${key.env}\``,
      });
    }
  });

  it('has defaults that load as documented, and every documented variable overrides its key', () => {
    const config = loadConfig({ env: {}, cwd: '/nonexistent-roost-dir' });
    for (const key of CONFIG_KEYS) expect({ key: key.path, value: config.values.get(key.path)!.value }).toEqual({ key: key.path, value: key.default });
    const envs = CONFIG_KEYS.filter((k) => k.env !== undefined);
    expect(envs.length).toBeGreaterThan(10);
    const port = loadConfig({ env: { ROOST_HTTP_PORT: '9099' }, cwd: '/nonexistent-roost-dir' });
    expect(port.http.port).toBe(9099);
    expect(port.values.get('http.port')!.source).toEqual({ kind: 'env', name: 'ROOST_HTTP_PORT' });
  });
});

/**
 * The metrics reference stays true: `docs/reference/metrics.md` lists exactly the `roost_*`
 * metrics of a runtime's registry, each with its type and labels, and every other metric in the
 * registry is one of prom-client's process or Node.js defaults.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRuntime, RuntimeMetrics } from '../../src/index.js';
import { duplicates, missing, readReference } from '../helpers/markdown.js';

const doc = readReference('metrics.md');

interface Row {
  readonly type: string;
  readonly labels: string[];
}

/** `| \`roost_x\` | counter | \`a\`, \`b\` | … |` rows. */
function documented(): Map<string, Row> & { names: string[] } {
  const rows = new Map<string, Row>() as Map<string, Row> & { names: string[] };
  rows.names = [];
  for (const line of doc.split('\n')) {
    const m = /^\|\s*`(roost_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|\s*([^|]*)\|/.exec(line);
    if (!m) continue;
    rows.names.push(m[1]!);
    rows.set(m[1]!, { type: m[2]!, labels: [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((l) => l[1]!).sort() });
  }
  return rows;
}

const runtime = createRuntime({ store: 'memory:' });
const metrics = new RuntimeMetrics(runtime);
afterAll(async () => {
  metrics.close();
  await runtime.close();
});

async function registered(): Promise<Map<string, Row>> {
  const out = new Map<string, Row>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    const metric = metrics.registry.getSingleMetric(m.name) as unknown as { labelNames?: readonly string[] };
    out.set(m.name, { type: String(m.type), labels: [...(metric.labelNames ?? [])].sort() });
  }
  return out;
}

describe('docs/reference/metrics.md', () => {
  it('lists every roost_* metric once, and no other', async () => {
    const rows = documented();
    const reg = await registered();
    const roost = [...reg.keys()].filter((n) => n.startsWith('roost_'));
    expect(duplicates(rows.names)).toEqual([]);
    expect(missing(roost, rows.keys()), 'registered but not documented').toEqual([]);
    expect(missing(rows.keys(), roost), 'documented but not registered').toEqual([]);
  });

  it('gives each its type and labels', async () => {
    const reg = await registered();
    for (const [name, row] of documented()) {
      expect({ name, ...row }).toEqual({ name, ...reg.get(name)! });
    }
  });

  it('has only process_ and nodejs_ defaults beside them', async () => {
    const others = [...(await registered()).keys()].filter((n) => !n.startsWith('roost_'));
    expect(others.length).toBeGreaterThan(5);
    expect(others.filter((n) => !/^(process|nodejs)_/.test(n))).toEqual([]);
  });
});

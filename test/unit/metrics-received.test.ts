/** roost_node_messages_received_total counts an envelope's first run at a node, replays included, never its retries. */
import { afterEach, describe, expect, it } from 'vitest';
import { createRuntime, node, type Envelope, type Runtime } from '../../src/index.js';
import { RuntimeMetrics } from '../../src/telemetry/metrics.js';

const open: Runtime[] = [];
afterEach(async () => {
  for (const rt of open.splice(0)) await rt.close();
});

async function value(metrics: RuntimeMetrics, name: string, node: string): Promise<number> {
  const metric = await metrics.registry.getSingleMetric(name)!.get();
  return metric.values.find((v) => v.labels['node'] === node)?.value ?? 0;
}

describe('roost_node_messages_received_total', () => {
  it('counts a first run and a replay, not a retry', async () => {
    const rt = createRuntime({ logger: false });
    open.push(rt);
    const metrics = new RuntimeMetrics(rt);
    let fail = true;
    const flow = rt.flow({
      name: 'recv',
      edges: [
        node('work', (env: Envelope<number>) => {
          if (fail) throw new Error('down');
          return env.payload;
        }, { retries: 1, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } }).to(),
      ],
    });
    await rt.start();
    const { traceId } = await flow.emit(1);
    await flow.fetch(traceId).catch(() => {});
    expect(await value(metrics, 'roost_node_retries_total', 'work')).toBe(1);
    expect(await value(metrics, 'roost_node_messages_received_total', 'work')).toBe(1);
    fail = false;
    const [letter] = rt.deadLetters.list();
    await flow.fetch(await rt.replayDeadLetter(letter!.id)); // attempt 3, its first run as a replay
    expect(await value(metrics, 'roost_node_messages_received_total', 'work')).toBe(2);
    metrics.close();
  });
});

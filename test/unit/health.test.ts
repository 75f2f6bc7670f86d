/** Liveness reads the event loop's recent stalls without resetting them, and the store probe uses one key. */
import { afterEach, describe, expect, it } from 'vitest';
import { createRuntime, InProcessTransport, MemoryStore, type Runtime } from '../../src/index.js';
import { Health } from '../../src/telemetry/health.js';

const open: { health: Health; runtime: Runtime }[] = [];
afterEach(async () => {
  for (const { health, runtime } of open.splice(0)) {
    health.close();
    await runtime.close();
  }
});

describe('Health', () => {
  it('a stall shows on every liveness read within its window, not only on the first', async () => {
    const runtime = createRuntime({ logger: false });
    const health = new Health(runtime);
    open.push({ health, runtime });
    await new Promise((r) => setTimeout(r, 50)); // the histogram samples once the loop turns
    const end = Date.now() + 1_200;
    while (Date.now() < end) {
      // a stall of 1.2 s (liveness warns from 1 s)
    }
    await new Promise((r) => setTimeout(r, 50));
    const first = health.live();
    const second = health.live(); // /health, then /health/live, say
    expect(first.status).toBe('warn');
    expect(second.status).toBe('warn');
    expect(second.message).toMatch(/longest stall in the last 10-20 s: 1\d{3} ms/);
  });

  it('the journal probe writes one shared key, however many processes probe', async () => {
    const store = new MemoryStore();
    const runtimes = [createRuntime({ logger: false, store, owner: 'p1' }), createRuntime({ logger: false, store, owner: 'p2' })];
    for (const runtime of runtimes) {
      await runtime.start();
      const health = new Health(runtime);
      open.push({ health, runtime });
      const report = await health.ready();
      expect(report.checks.find((c) => c.name === 'store')!.status).toBe('pass');
    }
    expect((await store.getValue('roost:health'))?.version).toBe(2);
    expect(await store.getValue('roost:health:p1')).toBeUndefined();
  });

  it('readiness follows the fleet\'s broker: connected passes, closed fails', async () => {
    const transport = new InProcessTransport();
    const runtime = createRuntime({ logger: false, fleet: { transport } });
    await runtime.start();
    const health = new Health(runtime);
    open.push({ health, runtime });
    const fleet = async (): Promise<string> => (await health.ready()).checks.find((c) => c.name === 'fleet')!.status;
    expect(await fleet()).toBe('pass');
    await transport.close();
    expect(await fleet()).toBe('fail');
    expect((await health.ready()).status).toBe('fail');
  });
});

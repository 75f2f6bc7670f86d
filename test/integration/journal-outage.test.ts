/**
 * A PostgreSQL outage, for real: the runtime reaches the machine's server through a TCP proxy
 * that the test cuts and restores while tasks stream in. The breaker opens and new work is
 * refused at once with ROOST_ERR_STORE_UNAVAILABLE; work already accepted is held, not dropped;
 * after the proxy comes back the breaker closes and everything accepted finishes, without a
 * restart.
 */
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { createRuntime, isRoostError, node, PostgresStore, type Envelope, type RoostEvent } from '../../src/index.js';
import { PG_URL, dropSchemas, freshSchema, schemaUrl } from '../helpers/postgres.js';
import { until } from '../helpers/runtime.js';

const schema = freshSchema('outage');
afterAll(dropSchemas);

/** A TCP proxy to the server that can be cut (every connection dropped, new ones refused) and restored. */
async function proxy(target: URL): Promise<{ port: number; cut(): void; restore(): void; close(): Promise<void> }> {
  let down = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut(): void {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore(): void {
      down = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('a PostgreSQL outage behind a TCP proxy', () => {
  it('opens the breaker, refuses new work at once, holds accepted work, and recovers without a restart', async () => {
    const target = new URL(PG_URL);
    const p = await proxy(target);
    const rt = createRuntime({
      logger: false,
      store: schemaUrl(schema, p.port),
      storeTimeoutMs: 500,
      storeBreaker: { failures: 3, cooldownMs: 200 },
      drainTimeoutMs: 2_000,
    });
    const events: RoostEvent[] = [];
    rt.on((e) => {
      if (e.type.startsWith('store_breaker')) events.push(e);
    });
    // Every fourth task takes 300 ms: those accepted just before the cut finish during the
    // outage, so their results must be held and committed after it.
    const flow = rt.flow({
      name: 'o',
      edges: [
        node(
          'n',
          async (env: Envelope<number>) => {
            if (env.payload % 4 === 0) await new Promise((r) => setTimeout(r, 300));
            return env.payload + 1;
          },
          { concurrency: 64, timeoutMs: null },
        ).to(),
      ],
    });
    try {
      await rt.start();
      const accepted = new Map<string, number>();
      const results = new Map<string, unknown>();
      let refused = 0;
      let otherErrors: unknown[] = [];
      let producing = true;
      let i = 0;
      const emits: Promise<void>[] = [];
      const producer = (async () => {
        while (producing) {
          const n = i++;
          const emitted = flow.emit(n).then(
            (t) => {
              accepted.set(t.traceId, n);
              void flow.fetch(t.traceId).then(
                (r) => results.set(t.traceId, r),
                (e: unknown) => otherErrors.push(e),
              );
            },
            (e: unknown) => {
              if (isRoostError(e, 'ROOST_ERR_STORE_UNAVAILABLE')) refused++;
              else otherErrors.push(e);
            },
          );
          emits.push(emitted);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await until(() => results.size >= 20, 10_000, 'tasks to flow before the cut');
      const inFlightAtCut = accepted.size - results.size;
      p.cut();
      await until(() => events.some((e) => e.type === 'store_breaker_open'), 10_000, 'the breaker to open');
      await until(() => refused > 0, 10_000, 'new work to be refused');
      const acceptedBeforeRestore = accepted.size;
      await new Promise((r) => setTimeout(r, 500));
      p.restore();
      await until(() => events.some((e) => e.type === 'store_breaker_closed'), 15_000, 'the breaker to close');
      await until(() => accepted.size > acceptedBeforeRestore + 10, 10_000, 'new work to be accepted again');
      producing = false;
      await producer;
      await Promise.all(emits); // every emit answered: accepted or refused (the last ones wait for a commit)
      await until(() => results.size === accepted.size, 15_000, 'every accepted task to finish');
      expect(inFlightAtCut).toBeGreaterThan(0); // accepted work was in flight when the store went away
      expect(otherErrors).toEqual([]);
      for (const [traceId, n] of accepted) expect(results.get(traceId), traceId).toBe(n + 1);
      // What was acknowledged is in the journal, finished (read past the proxy).
      const store = new PostgresStore(schemaUrl(schema));
      try {
        let succeeded = 0;
        let cursor: string | undefined;
        do {
          const page = await store.listTraces({ flow: 'o', limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
          for (const t of page.traces) {
            if (accepted.has(t.traceId)) {
              expect(t.status).toBe('succeeded');
              succeeded++;
            }
          }
          cursor = page.next ?? undefined;
        } while (cursor !== undefined);
        expect(succeeded).toBe(accepted.size);
      } finally {
        await store.close();
      }
      expect(events.map((e) => e.type)).toContain('store_breaker_half_open');
      otherErrors = [];
    } finally {
      await rt.close();
      await p.close();
    }
  }, 90_000);
});

/**
 * The baseline of bench/http-throughput.ts: a bare Fastify server with one route that parses the
 * same JSON body a task submission carries (same body limit, no logging) and answers 200 with a
 * small JSON document. Run as its own process; prints `listening <url>` when it is ready.
 */
import { randomUUID } from 'node:crypto';
import { fastify } from 'fastify';

const app = fastify({ logger: false, bodyLimit: 1_048_576 });
app.post<{ Params: { flow: string }; Body: { input?: unknown } }>('/v1/flows/:flow/tasks', (request) => ({
  traceId: randomUUID(),
  flow: request.params.flow,
  status: 'succeeded',
  result: request.body?.input ?? null,
}));
const url = await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`listening ${url}\n`);
process.on('SIGTERM', () => {
  void app.close().then(() => process.exit(0));
});

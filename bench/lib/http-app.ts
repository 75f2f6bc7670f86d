/**
 * The application bench/http-throughput.ts serves with the real `roost serve`: one flow of one
 * node that answers with its input, so a request measures the service and the runtime, not a
 * handler.
 */
import { node, type Envelope, type Runtime } from '../../src/index.js';

export default function setup(runtime: Runtime): void {
  runtime.flow({ name: 'echo', edges: [node('echo', (env: Envelope<unknown>) => env.payload, { concurrency: 64 }).to()] });
}

/**
 * A support-ticket triage flow on Roost, in one process. Run it with `npm start`.
 *
 *   classify ─▶ route(by category) ─┬─▶ billing ───┐
 *                                   ├─▶ technical ─┼─▶ reply
 *                                   └─▶ general ───┘
 *
 * It shows, in what it prints: routing by a field, a flaky agent that succeeds on its retry, a
 * lookup that hangs and is cut off by its timeout (dead-lettered, then replayed once "fixed"),
 * a cancelled ticket, and the events every step publishes.
 */
import { createRuntime, node, routeBy, type Envelope, type RoostEvent } from '../src/index.js';

interface Ticket {
  readonly id: string;
  readonly text: string;
}
interface Classified extends Ticket {
  readonly category: 'billing' | 'technical' | 'general';
}

const started = Date.now();
const short = (id: string): string => id.slice(-6);
function describe(e: RoostEvent): string | null {
  const at = `+${String(Date.now() - started).padStart(4)}ms`;
  switch (e.type) {
    case 'node_start':
      return `${at}  ${short(e.traceId)}  ${e.node.padEnd(9)} start (attempt ${e.attempt})`;
    case 'node_success':
      return `${at}  ${short(e.traceId)}  ${e.node.padEnd(9)} ok in ${e.latencyMs?.toFixed(1)} ms`;
    case 'node_error':
    case 'node_timeout':
      return `${at}  ${short(e.traceId)}  ${e.node.padEnd(9)} ${e.type === 'node_timeout' ? 'TIMED OUT' : 'error'}: ${e.error?.message}`;
    case 'node_retry':
      return `${at}  ${short(e.traceId)}  ${e.node.padEnd(9)} retry in ${e.delayMs} ms`;
    case 'dead_letter_added':
      return `${at}  ${short(e.traceId)}  dead letter from ${e.node}: ${e.error.code}`;
    case 'trace_success':
    case 'trace_failed':
    case 'trace_cancel_finish':
      return `${at}  ${short(e.traceId)}  trace ${e.type.replace('trace_', '').replace('_finish', 'led')}`;
    default:
      return null;
  }
}

const runtime = createRuntime({ logger: false });
runtime.on((e) => {
  const line = describe(e);
  if (line !== null) console.log(line);
});

let invoiceServiceUp = false;
let flakyCalls = 0;

const classify = node('classify', (env: Envelope<Ticket>): Classified => {
  const text = env.payload.text.toLowerCase();
  const category = /invoice|refund|charge/.test(text) ? 'billing' : /error|crash|login/.test(text) ? 'technical' : 'general';
  return { ...env.payload, category };
});

const billing = node(
  'billing',
  async (env: Envelope<Classified>, ctx) => {
    // The invoice lookup hangs until the service is "fixed"; the 200 ms timeout cuts it off and
    // fires ctx.signal, which a real client would pass to fetch().
    if (!invoiceServiceUp) await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    return { ...env.payload, answer: 'Your refund is on its way.' };
  },
  { timeoutMs: 200 },
);

const technical = node(
  'technical',
  (env: Envelope<Classified>) => {
    flakyCalls++;
    if (flakyCalls === 1) throw new Error('knowledge base briefly unavailable');
    return { ...env.payload, answer: 'Clear your cache and sign in again.' };
  },
  { retries: 2, backoff: { baseMs: 50, jitter: 0 } },
);

const general = node('general', (env: Envelope<Classified>) => ({ ...env.payload, answer: 'Thanks, a human will follow up.' }));

const reply = node('reply', (env: Envelope<Classified & { answer: string }>) => `[${env.payload.id}] ${env.payload.category}: ${env.payload.answer}`);

const route = routeBy('route', 'category', { billing, technical, general });
const triage = runtime.flow({
  name: 'triage',
  edges: [classify.to(route), billing.to(reply), technical.to(reply), general.to(reply)],
});

await runtime.start();
console.log('Roost example: support-ticket triage (one process, in memory)\n');

const tickets: Ticket[] = [
  { id: 'T-1', text: 'I was charged twice, please refund' },
  { id: 'T-2', text: 'Login error after the update' },
  { id: 'T-3', text: 'Do you have a dark mode?' },
];
const traces = await Promise.all(tickets.map((t) => triage.emit(t, { tenant: 'acme', idempotencyKey: t.id })));
const again = await triage.emit(tickets[0], { tenant: 'acme', idempotencyKey: 'T-1' });
console.log(`(T-1 sent twice: the second emit returned the same trace: ${again.traceId === traces[0]!.traceId})\n`);

const settled = await Promise.allSettled(traces.map((t) => triage.fetch(t.traceId)));
console.log('\nResults:');
for (const [i, s] of settled.entries()) {
  console.log(`  ${tickets[i]!.id}: ${s.status === 'fulfilled' ? String(s.value) : `failed with ${(s.reason as { code: string }).code}`}`);
}

console.log('\nThe invoice service is back; replaying the dead letters:');
invoiceServiceUp = true;
for (const letter of runtime.deadLetters.list()) {
  const traceId = await runtime.replayDeadLetter(letter.id);
  console.log(`  replayed ${(letter.envelope.payload as Ticket).id} -> ${String(await triage.fetch(traceId))}`);
}

console.log('\nA ticket cancelled while it waits on the slow invoice lookup:');
invoiceServiceUp = false;
const doomed = await triage.emit({ id: 'T-4', text: 'refund my invoice' }, { tenant: 'acme' });
setTimeout(() => void triage.cancel(doomed.traceId), 50);
await triage.fetch(doomed.traceId).catch((e: { code: string }) => console.log(`  T-4: ${e.code}`));

await runtime.close();
console.log('\nStats:', JSON.stringify({ ...triage.stats(), deadLetters: runtime.deadLetters.size, state: runtime.state }));

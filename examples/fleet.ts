/**
 * The example fleet that `npm start` serves (`roost.toml` names it as the app): three flows in
 * one process, over the SQLite journal under `./.roost/`.
 *
 *   echo       echo                                       the payload back (smoke tests, benchmarks)
 *   triage     classify ─▶ route ─┬─▶ billing ───┐
 *                                 ├─▶ technical ─┼─▶ reply    support tickets, by category
 *                                 └─▶ general ───┘
 *   research   plan ─┬─▶ web ─────┐
 *                    └─▶ archive ─┴─▶ gather(join) ─▶ summarize
 *
 * What it shows: input validation (a ticket without `text` fails with ROOST_ERR_VALIDATION and
 * is dead-lettered), a side effect done once through `ctx.step` (the invoice lookup), a retry with
 * backoff (the knowledge base fails the first attempt of a ticket that mentions a crash), a
 * timeout (a `slow` ticket's lookup is cut off after 2 s), fan-out and a join.
 *
 *   curl -s localhost:8080/v1/flows/triage/tasks?wait=5000 -H 'content-type: application/json' \
 *        -d '{"input":{"id":"T-1","text":"I was charged twice, please refund"}}'
 */
import { join, node, routeBy, type Envelope, type Runtime } from '../src/index.js';

interface Ticket {
  readonly id: string;
  readonly text: string;
}
interface Classified extends Ticket {
  readonly category: 'billing' | 'technical' | 'general';
}
interface Answered extends Classified {
  readonly answer: string;
}

/** Waits `ms`, or rejects when `signal` aborts (a timeout, a cancel): what a well-behaved call does. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });
}

const CATEGORIES: readonly [Classified['category'], RegExp][] = [
  ['billing', /invoice|refund|charge|bill/i],
  ['technical', /error|crash|login|bug|slow/i],
];

const TICKET_SCHEMA = {
  type: 'object',
  required: ['id', 'text'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64 }, text: { type: 'string', minLength: 1, maxLength: 10_000 } },
} as const;

function triage(runtime: Runtime): void {
  const classify = node(
    'classify',
    (env: Envelope<Ticket>): Classified => {
      const category = CATEGORIES.find(([, pattern]) => pattern.test(env.payload.text))?.[0] ?? 'general';
      return { ...env.payload, category };
    },
    { validate: { input: TICKET_SCHEMA } },
  );
  const billing = node(
    'billing',
    async (env: Envelope<Classified>, ctx): Promise<Answered> => {
      // The lookup is a side effect of this ticket: done once, even if this node runs again.
      const invoice = await ctx.step('look-up-invoice', async ({ stepKey }) => {
        await pause(/slow/i.test(env.payload.text) ? 5_000 : 30, ctx.signal);
        return { number: `INV-${stepKey.slice(0, 6)}`, amount: 4200 };
      });
      return { ...env.payload, answer: `Invoice ${invoice.number} (${invoice.amount / 100} EUR) is being refunded.` };
    },
    { timeoutMs: 2_000 },
  );
  const technical = node(
    'technical',
    async (env: Envelope<Classified>, ctx): Promise<Answered> => {
      await pause(20, ctx.signal);
      if (ctx.attempt === 1 && /crash/i.test(env.payload.text)) throw new Error('knowledge base briefly unavailable');
      return { ...env.payload, answer: 'Clear your cache and sign in again.' };
    },
    { retries: 2, backoff: { baseMs: 100, jitter: 0.2 } },
  );
  const general = node('general', (env: Envelope<Classified>): Answered => ({ ...env.payload, answer: 'Thanks, a human will follow up.' }));
  const reply = node('reply', (env: Envelope<Answered>) => ({ ticket: env.payload.id, category: env.payload.category, reply: env.payload.answer }));
  runtime.flow({
    name: 'triage',
    edges: [classify.to(routeBy('route', 'category', { billing, technical, general })), billing.to(reply), technical.to(reply), general.to(reply)],
  });
}

function research(runtime: Runtime): void {
  const plan = node('plan', (env: Envelope<{ topic?: unknown }>) => ({ topic: typeof env.payload.topic === 'string' ? env.payload.topic : 'roost' }));
  const web = node('web', async (env: Envelope<{ topic: string }>, ctx) => {
    await pause(40, ctx.signal);
    return { source: 'web', note: `3 articles on ${env.payload.topic}` };
  });
  const archive = node('archive', async (env: Envelope<{ topic: string }>, ctx) => {
    await pause(25, ctx.signal);
    return { source: 'archive', note: `1 report on ${env.payload.topic}` };
  });
  const gather = join('gather', { timeoutMs: 5_000 });
  const summarize = node('summarize', (env: Envelope<{ source: string; note: string }[]>) => ({
    summary: env.payload.map((p) => `${p.source}: ${p.note}`).join('; '),
    sources: env.payload.length,
  }));
  runtime.flow({ name: 'research', edges: [plan.to(web, archive), web.to(gather), archive.to(gather), gather.to(summarize)] });
}

/** Adds the fleet's flows to the runtime `roost serve` made. */
export default function setup(runtime: Runtime): void {
  runtime.flow({ name: 'echo', edges: [node('echo', (env: Envelope<unknown>) => env.payload, { concurrency: 64 }).to()] });
  triage(runtime);
  research(runtime);
}

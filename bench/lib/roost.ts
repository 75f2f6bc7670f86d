/**
 * The `roost` variant: the same three-node flow as the baselines, with the configuration a
 * production user would run rather than the fastest one — a timeout and retries on every node,
 * the idempotency window on, an event subscriber, bounded edges — so the ratio to `raw-queue`
 * is the price of those guarantees, not of a stripped-down runtime.
 */
import { createRuntime, node, type Envelope, type NodePolicy } from '../../src/index.js';
import { inc, type Payload, type Target, type Variant } from './measure.js';

/** Edge capacity, the same as raw-queue's rings. */
export const ROOST_QUEUE_CAPACITY = 64;
export const ROOST_POLICY: NodePolicy = { timeoutMs: 5000, retries: 2 };
/** Events a successful trace of this flow publishes: trace_start, 3 × (node_start, node_success), trace_success. */
const EVENTS_PER_TRACE = 8;

export const ROOST_CONFIG_NOTE =
  `roost: timeoutMs ${ROOST_POLICY.timeoutMs} + retries ${ROOST_POLICY.retries} on every node, edge cap ${ROOST_QUEUE_CAPACITY} (overflow wait), ` +
  'idempotency window on (default) and a fresh key per message, validation at ingress (emit checks its options and that the payload is JSON under the size cap; ' +
  'the rest of the envelope is made by Roost), 1 event listener counting events, logger off, default limits; ' +
  'per message: flow.emit(payload, { tenant, idempotencyKey }) then flow.fetch(traceId)';

/** What an ablation variant turns off (`BENCH_ABLATE=1`): the price of each guarantee alone. */
export interface RoostFeatures {
  /** A fresh idempotency key per message (the window is used). */
  readonly key: boolean;
  /** One event listener counting events. */
  readonly listener: boolean;
  /** `timeoutMs` and `retries` on every node. */
  readonly policy: boolean;
}

const ALL: RoostFeatures = { key: true, listener: true, policy: true };

/** A handler node running the shared step on the envelope's payload. */
function incNode(name: string, policy: NodePolicy | undefined) {
  return node(name, (env: Envelope<Payload>) => inc(env.payload), policy);
}

/** The roost variant with `features` (all of them: the configuration the brief fixes). */
export function roostVariantWith(name: string, features: RoostFeatures = ALL): Variant {
  return {
    name,
    async open(): Promise<Target> {
      const rt = createRuntime({ logger: false });
      let events = 0;
      if (features.listener) {
        rt.on(() => {
          events++;
        });
      }
      const policy = features.policy ? ROOST_POLICY : undefined;
      const n1 = incNode('n1', policy);
      const n2 = incNode('n2', policy);
      const n3 = incNode('n3', policy);
      const flow = rt.flow({ name: 'bench', edges: [n1.to(n2), n2.to(n3)], queueCapacity: ROOST_QUEUE_CAPACITY });
      await rt.start();
      let key = 0;
      const plain = { tenant: 'bench' };
      return {
        async submit(payload: Payload): Promise<unknown> {
          // A key per message, as a caller that retries its own requests sends: the window is used.
          // Not a decimal counter: V8 keeps the strings it makes from numbers in base 10 in a cache
          // in the old generation, so every such key survived two scavenges and was promoted (half
          // of each scavenge's work, an eighth of this variant's time): the key maker's cost, not Roost's.
          const options = features.key ? { tenant: 'bench', idempotencyKey: `k${(key++).toString(36)}` } : plain;
          const { traceId } = await flow.emit(payload, options);
          return flow.fetch(traceId);
        },
        async close(): Promise<string> {
          const fs = flow.stats();
          await rt.close();
          const rs = rt.stats();
          // Every trace must have succeeded and left nothing behind; a silent failure would
          // otherwise show up only as a suspiciously good number.
          const problems: string[] = [];
          if (fs.failed !== 0 || fs.cancelled !== 0) problems.push(`${fs.failed} failed, ${fs.cancelled} cancelled traces`);
          if (fs.activeTraces !== 0 || rs.inFlightTraces !== 0) problems.push(`${rs.inFlightTraces} traces still in flight`);
          if (rs.deadLetters !== 0) problems.push(`${rs.deadLetters} dead letters`);
          if (fs.lateResults !== 0) problems.push(`${fs.lateResults} late results`);
          const expected = features.listener ? fs.succeeded * EVENTS_PER_TRACE : 0;
          if (events !== expected) problems.push(`${events} events for ${fs.succeeded} traces (expected ${expected})`);
          if (problems.length > 0) throw new Error(`${name}: ${problems.join('; ')}`);
          return features.listener ? `${fs.succeeded} ok, ${(events / fs.succeeded).toFixed(0)} ev/msg` : `${fs.succeeded} ok`;
        },
      };
    },
  };
}

/** The configuration the brief fixes: every guarantee on. */
export const roostVariant: Variant = roostVariantWith('roost');

/**
 * One guarantee off each, then all of them: what each costs on its own, and what the runtime's
 * core (admission, queues, runs, trace tracking, results) costs without any.
 */
export const ABLATION_VARIANTS: readonly Variant[] = [
  roostVariantWith('r-nokey', { key: false, listener: true, policy: true }),
  roostVariantWith('r-noevent', { key: true, listener: false, policy: true }),
  roostVariantWith('r-nopolicy', { key: true, listener: true, policy: false }),
  roostVariantWith('r-bare', { key: false, listener: false, policy: false }),
];

/**
 * An answer the broker refuses for good (here an ACL on a private Mosquitto that denies the
 * conversation's topic, so its PUBACK says 0x87, not authorized): it is not sent again at every
 * look for owed answers, its note goes, and no `completed` event says the task was answered. An
 * answer the broker takes goes out once, with its event, as usual.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, node, type RoostEvent } from '../../src/index.js';
import type { Agent2389TaskEvent } from '../../src/protocol2389/events.js';
import { NOTE_PREFIX } from '../../src/protocol2389/agent.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { eventually } from '../helpers/runtime.js';
import { ForeignClient, agentId, taskV1 } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'refused-2389-'));
let broker: PrivateBroker | undefined;

beforeAll(async () => {
  broker = await privateBroker('mosquitto', undefined, { acl: 'topic deny /conversations/blocked/#\ntopic readwrite #\n' });
});
afterAll(async () => {
  await broker?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('an answer the broker refuses for good', () => {
  it('is not sent again at every look for owed answers, its note goes and no completed event is published; an answer the broker takes goes out once', async () => {
    const id = agentId('refused');
    const url = broker!.url;
    // Looks for owed answers once a second (max(1 s, ownerLeaseMs)).
    const rt = createRuntime({ logger: false, store: `sqlite:${join(dir, 'journal.db')}`, ownerLeaseMs: 1_000, protocol2389: { broker: url, agents: [{ id, flow: 'work' }], health: { port: 0 } } });
    const events: RoostEvent[] = [];
    rt.on((e) => events.push(e));
    rt.flow({ name: 'work', edges: [node('run', () => ({ ran: true })).to()] });
    const foreign = await ForeignClient.connect(url);
    try {
      await rt.start();
      const failures = async (): Promise<number> => {
        const res = await fetch(`http://127.0.0.1:${rt.protocol2389!.healthPort!}/metrics`);
        return ((await res.json()) as { mqtt: { publish_failures: number } }).mqtt.publish_failures;
      };
      const notes = async (): Promise<number> => (await rt.journal!.store.listCheckpoints(NOTE_PREFIX, null, 10)).length;
      const taskEvents = (): Agent2389TaskEvent[] => events.filter((e): e is Agent2389TaskEvent => e.type === 'agent2389_task');

      const blocked = taskV1(id, { n: 1 }, { conversation_id: 'blocked' });
      await foreign.publish(`/control/agents/${id}/input`, blocked);
      await eventually(failures, (n) => n >= 1, 10_000, 'the refused answer');
      await eventually(notes, (n) => n === 0, 10_000, 'the refused answer\'s note to go');
      await sleep(3_500); // three looks for owed answers
      expect(await failures()).toBe(1);
      expect(await notes()).toBe(0);
      expect(taskEvents().map((e) => e.outcome)).toEqual(['accepted']);

      const open = taskV1(id, { n: 2 });
      const openTopic = `/conversations/${open['conversation_id'] as string}/${id}`;
      await foreign.subscribe(openTopic);
      await foreign.publish(`/control/agents/${id}/input`, open);
      await foreign.until(() => foreign.on(openTopic).length === 1, 10_000, 'the answer');
      await sleep(1_500); // another look: nothing owed, nothing sent twice
      expect(foreign.on(openTopic).map((h) => h.json)).toEqual([{ response: { ran: true }, task_id: open['task_id'] }]);
      expect(taskEvents().map((e) => [e.outcome, e.taskId])).toEqual([
        ['accepted', blocked['task_id']],
        ['accepted', open['task_id']],
        ['completed', open['task_id']],
      ]);
      expect(await failures()).toBe(1);
      expect(await notes()).toBe(0);
    } finally {
      await foreign.close();
      await rt.close();
    }
  });
});

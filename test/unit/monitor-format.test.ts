/**
 * What `roost monitor` makes of a message (src/cli/monitor-format.ts) and which topics a mode
 * watches: topics read after 2389 canonicalisation, every payload classified without a throw,
 * previews bounded and free of control characters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { monitorSubscriptions } from '../../src/cli/monitor.js';
import { PREVIEW_CHARS, classify, formatCompact, formatJson, formatPretty, preview, readTopic } from '../../src/cli/monitor-format.js';

const facts = { receivedAt: Date.UTC(2025, 0, 2, 3, 4, 5, 6), retained: false };
const bytes = (v: unknown): Buffer => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

describe('monitor-format', () => {
  it('reads topics as 2389 agents do: canonicalised, the conversation agent is the last level', () => {
    expect(readTopic('control/agents/a1/status/')).toMatchObject({ role: 'status', agentId: 'a1' });
    expect(readTopic('//control//agents/a1/input')).toMatchObject({ role: 'input', agentId: 'a1' });
    expect(readTopic('/control/agents/a1/progress/tools')).toMatchObject({ role: 'progress', agentId: 'a1', progressChannel: 'tools' });
    expect(readTopic('/conversations/c/with/levels/agent-9')).toMatchObject({ role: 'conversation', agentId: 'agent-9', conversationId: 'c/with/levels' });
    expect(readTopic('/control/agents/a1/other')).toMatchObject({ role: 'other', agentId: 'a1' });
    expect(readTopic('/somewhere')).toMatchObject({ role: 'other', agentId: null });
  });

  it('classifies statuses, envelopes, responses and errors, and says what is wrong with the rest', () => {
    expect(classify('/control/agents/a/status', bytes({ agent_id: 'b', status: 'available' }), facts)).toMatchObject({ kind: 'status', problem: 'agent_id b is not the topic\'s agent' });
    expect(classify('/control/agents/a/status', bytes({ status: 'busy' }), facts)).toMatchObject({ kind: 'invalid', problem: 'status: expected "available" or "unavailable", got busy' });
    expect(classify('/control/agents/a/input', bytes({ version: '3.0' }), facts)).toMatchObject({ kind: 'invalid', problem: 'version: expected "2.0" (or none, v1), got 3.0' });
    expect(classify('/control/agents/a/input', bytes({ task_id: 't', conversation_id: 'c', topic: 'x', instruction: 7 }), facts)).toMatchObject({ kind: 'invalid', conversationId: 'c' });
    expect(classify('/conversations/c/a', bytes({ error: 'boom' }), facts)).toMatchObject({ kind: 'invalid', problem: 'error: expected {code, message}, got boom' });
    expect(classify('/conversations/c/a', bytes({ hello: 1 }), facts)).toMatchObject({ kind: 'invalid' });
    expect(classify('/conversations/c/a', bytes({ response: null, task_id: 't' }), facts)).toMatchObject({ kind: 'response', taskId: 't' });
    expect(classify('/control/agents/a/progress', bytes('"plain"'), facts)).toMatchObject({ kind: 'progress', detail: { message: 'plain' } });
    expect(classify('/control/agents/a/status', Buffer.alloc(0), { ...facts, retained: true })).toMatchObject({ kind: 'cleared', retained: true });
  });

  it('counts a deep `next` chain without recursing, and prints it (a payload too deep to re-serialise too)', () => {
    const deep = 25_000; // 225 KB: under the 256 KiB cap, far deeper than JSON.stringify can recurse
    const next = `${'{"next":'.repeat(deep)}null${'}'.repeat(deep)}`;
    const text = `{"task_id":"t","conversation_id":"c","topic":"/control/agents/a/input","instruction":null,"input":{},"next":${next}}`;
    const m = classify('/control/agents/a/input', Buffer.from(text), facts);
    expect(m.kind).toBe('input');
    expect(m.detail.depth).toBe(1_001);
    expect(formatPretty(m)[0]).toContain('depth=1001');
    expect(JSON.parse(formatJson(m))).toMatchObject({ kind: 'input', payload: null, problem: expect.stringContaining('too deeply nested') });
  });

  it('never throws on any topic and payload, and every output is bounded and has no control characters', () => {
    const topics = fc.oneof(
      fc.string(),
      fc.constantFrom('/control/agents/a/status', '/control/agents/a/input', '/conversations/c/a', '/control/agents/a/progress/llm'),
    );
    const payloads = fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.json().map((j) => Buffer.from(j)), fc.string().map((s) => Buffer.from(s)));
    fc.assert(
      fc.property(topics, payloads, fc.boolean(), (topic, payload, retained) => {
        const m = classify(topic, payload, { ...facts, retained });
        for (const line of [...formatPretty(m), formatCompact(m)]) {
          // eslint-disable-next-line no-control-regex
          expect(line).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f]/);
        }
        expect(() => JSON.parse(formatJson(m)) as unknown).not.toThrow();
      }),
      { numRuns: 500 },
    );
  });

  it('previews are one line of at most their length', () => {
    fc.assert(
      fc.property(fc.anything(), fc.integer({ min: 2, max: 300 }), (value, max) => {
        const p = preview(value, max);
        expect(p.length).toBeLessThanOrEqual(max);
        expect(p).not.toContain('\n');
      }),
    );
    expect(preview('z'.repeat(1_000_000), PREVIEW_CHARS)).toHaveLength(PREVIEW_CHARS);
  });

  it('subscribes per mode, narrowed by the filters where the topic can say it', () => {
    expect(monitorSubscriptions('all', {})).toEqual(['/control/agents/+/status', '/control/agents/+/input', '/conversations/#', '/control/agents/+/progress/#']);
    expect(monitorSubscriptions('availability', { agentId: 'a' })).toEqual(['/control/agents/a/status']);
    expect(monitorSubscriptions('all', { conversationId: 'c' })).toEqual(['/control/agents/+/input', '/conversations/c/#', '/control/agents/+/progress/#']);
    expect(monitorSubscriptions('conversations', { agentId: 'a', conversationId: 'c' })).toEqual(['/conversations/c/a']);
    expect(monitorSubscriptions('conversations', { agentId: 'a' })).toEqual(['/conversations/#']);
    expect(monitorSubscriptions('progress', {})).toEqual(['/control/agents/+/progress/#']);
    expect(monitorSubscriptions('inputs', { agentId: 'a' })).toEqual(['/control/agents/a/input']);
  });
});

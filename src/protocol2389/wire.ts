/**
 * The 2389 Agent Protocol's wire format (../shared/REFERENCE.md, "2389 Agent Protocol"): topics,
 * TaskEnvelope v1 and v2, responses, errors and status messages. Pure functions: parsing never
 * throws, it says what is wrong (and which conversation and task it could still read, so the
 * sender can be told).
 */

import { createHash } from 'node:crypto';

/** Error codes of a 2389 error envelope. */
export type ErrorCode2389 = 'tool_execution_failed' | 'llm_error' | 'invalid_input' | 'pipeline_depth_exceeded' | 'internal_error';

/** The largest packet a 2389 agent takes (256 KiB). */
export const MAX_PACKET_BYTES = 262_144;
/** The default limit on the depth of a `next` chain. */
export const DEFAULT_MAX_DEPTH = 16;

/** Agent ids: `[a-zA-Z0-9._-]+` (at most 64 here, so a topic of one stays short). */
const AGENT_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** Any UUID, in its canonical text form. */
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function isAgentId(value: unknown): value is string {
  return typeof value === 'string' && AGENT_ID.test(value);
}

/** A task id as 2389 requires it: a UUID. */
export function isTaskId(value: unknown): boolean {
  return typeof value === 'string' && UUID.test(value);
}

/** A conversation id usable as one topic segment: no `/`, no wildcards, no NUL, 1 to 256 characters. */
export function isConversationId(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 1 && value.length <= 256 && !/[/+#]/.test(value) && !value.includes('\u0000');
}

/** A topic canonicalised: exactly one leading `/`, `//` collapsed, no trailing `/`. */
export function canonicalTopic(topic: string): string {
  const parts = topic.split('/').filter((p) => p !== '');
  return `/${parts.join('/')}`;
}

export const inputTopic = (agentId: string): string => `/control/agents/${agentId}/input`;
export const statusTopic = (agentId: string): string => `/control/agents/${agentId}/status`;
export const conversationTopic = (conversationId: string, agentId: string): string => `/conversations/${conversationId}/${agentId}`;

/** The agent id of an input topic (`/control/agents/{id}/input`, canonicalised), or null. */
export function agentOfInputTopic(topic: string): string | null {
  const m = /^\/control\/agents\/([^/]+)\/input$/.exec(canonicalTopic(topic));
  return m !== null && isAgentId(m[1]) ? m[1] : null;
}

/** `next`: the task that follows, recursively. */
export interface NextTask {
  readonly topic: string;
  readonly instruction?: string | null;
  readonly input?: unknown;
  readonly next?: NextTask | null;
}

export interface StepCompleted {
  readonly agent_id: string;
  readonly action: string;
  readonly timestamp: string;
}

export interface TaskContext {
  readonly original_query: string;
  readonly steps_completed: readonly StepCompleted[];
  readonly iteration_count: number;
}

export interface RoutingStep {
  readonly from_agent: string;
  readonly to_agent: string;
  readonly reason: string;
  readonly timestamp: string;
  readonly step_number: number;
}

/** A TaskEnvelope, v1 or v2 (v2 has `version: "2.0"` and may have `context` and `routing_trace`). */
export interface TaskEnvelope {
  readonly version?: '2.0';
  readonly task_id: string;
  readonly conversation_id: string;
  readonly topic: string;
  readonly instruction: string | null;
  readonly input: unknown;
  readonly next: NextTask | null;
  readonly context?: TaskContext;
  readonly routing_trace?: readonly RoutingStep[];
}

/** A task read off the wire, or what is wrong with it. */
export type ParsedTask =
  | { readonly ok: true; readonly task: TaskEnvelope; readonly depth: number }
  | {
      readonly ok: false;
      readonly reason: 'too_large' | 'not_json' | 'invalid' | 'unknown_version';
      readonly message: string;
      /** The conversation and task the packet names, when it names usable ones (so an error can go there). */
      readonly conversationId: string | null;
      readonly taskId: string | null;
    };

/** The number of nested `next` tasks (0: none), or -1 when one is malformed; counted without recursion. */
function checkNext(next: unknown): { depth: number; error: string | null } {
  let depth = 0;
  let at: unknown = next;
  let path = 'next';
  while (at !== null && at !== undefined) {
    if (typeof at !== 'object' || Array.isArray(at)) return { depth, error: `${path}: expected an object or null` };
    const n = at as Record<string, unknown>;
    if (typeof n['topic'] !== 'string' || n['topic'].trim() === '') return { depth, error: `${path}.topic: expected a topic string` };
    if (/[+#]/.test(n['topic']) || n['topic'].includes('\u0000')) return { depth, error: `${path}.topic: expected a topic without wildcards` };
    if (n['instruction'] !== undefined && n['instruction'] !== null && typeof n['instruction'] !== 'string') return { depth, error: `${path}.instruction: expected a string or null` };
    depth++;
    at = n['next'];
    path += '.next';
  }
  return { depth, error: null };
}

function checkContext(value: unknown): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'context: expected an object';
  const c = value as Record<string, unknown>;
  if (typeof c['original_query'] !== 'string') return 'context.original_query: expected a string';
  if (!Array.isArray(c['steps_completed'])) return 'context.steps_completed: expected an array';
  for (const [i, s] of (c['steps_completed'] as unknown[]).entries()) {
    const step = s as Record<string, unknown> | null;
    if (typeof step !== 'object' || step === null || typeof step['agent_id'] !== 'string' || typeof step['action'] !== 'string' || typeof step['timestamp'] !== 'string') {
      return `context.steps_completed[${i}]: expected {agent_id, action, timestamp} strings`;
    }
  }
  const n = c['iteration_count'];
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) return 'context.iteration_count: expected a non-negative integer';
  return null;
}

function checkRoutingTrace(value: unknown): string | null {
  if (!Array.isArray(value)) return 'routing_trace: expected an array';
  for (const [i, s] of value.entries()) {
    const r = s as Record<string, unknown> | null;
    if (
      typeof r !== 'object' ||
      r === null ||
      typeof r['from_agent'] !== 'string' ||
      typeof r['to_agent'] !== 'string' ||
      typeof r['reason'] !== 'string' ||
      typeof r['timestamp'] !== 'string' ||
      typeof r['step_number'] !== 'number'
    ) {
      return `routing_trace[${i}]: expected {from_agent, to_agent, reason, timestamp, step_number}`;
    }
  }
  return null;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads a TaskEnvelope: v2 when `version` is `"2.0"`, else v1 (no `version`); any other version
 * is refused. Never throws.
 */
export function parseTask(bytes: Uint8Array, maxBytes = MAX_PACKET_BYTES): ParsedTask {
  let doc: unknown;
  // JSON is UTF-8: bytes that are not are refused (read leniently only to name the sender's
  // conversation and task, when those are intact), not silently turned into U+FFFD.
  let utf8 = true;
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    utf8 = false;
    text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  }
  try {
    doc = JSON.parse(text);
  } catch (error) {
    // Too large and not JSON: nothing to name.
    const why = bytes.byteLength > maxBytes ? `a packet of ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit` : `not JSON (${(error as Error).message})`;
    return { ok: false, reason: bytes.byteLength > maxBytes ? 'too_large' : 'not_json', message: why, conversationId: null, taskId: null };
  }
  const o = typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : null;
  const intact = (v: unknown): boolean => utf8 || (typeof v === 'string' && !v.includes('\uFFFD'));
  const conversationId = o !== null && isConversationId(o['conversation_id']) && intact(o['conversation_id']) ? o['conversation_id'] : null;
  // As the sender wrote it (even when it is not a UUID), so it can match the error to its task.
  const taskId = o !== null && typeof o['task_id'] === 'string' && o['task_id'].length <= 128 && intact(o['task_id']) ? o['task_id'] : null;
  const fail = (reason: 'too_large' | 'invalid' | 'unknown_version', message: string): ParsedTask => ({ ok: false, reason, message, conversationId, taskId });
  if (bytes.byteLength > maxBytes) return fail('too_large', `a packet of ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit`);
  if (!utf8) return fail('invalid', 'expected UTF-8 (JSON text is UTF-8)');
  if (o === null) return fail('invalid', 'expected a JSON object (a TaskEnvelope)');
  const version = o['version'];
  if (version !== undefined && version !== '2.0') return fail('unknown_version', `version: expected "2.0" (v2) or absent (v1), got ${JSON.stringify(version)}`);
  const rawTaskId = o['task_id'];
  if (typeof rawTaskId !== 'string') return fail('invalid', 'task_id: expected a UUID string');
  if (!isTaskId(rawTaskId)) return fail('invalid', `task_id: expected a UUID, got ${JSON.stringify(rawTaskId.slice(0, 64))}`);
  if (typeof o['conversation_id'] !== 'string' || o['conversation_id'] === '') return fail('invalid', 'conversation_id: expected a non-empty string');
  if (conversationId === null) return fail('invalid', 'conversation_id: expected 1 to 256 characters without /, + or #');
  if (typeof o['topic'] !== 'string') return fail('invalid', 'topic: expected a topic string');
  const instruction = o['instruction'];
  if (instruction !== undefined && instruction !== null && typeof instruction !== 'string') return fail('invalid', 'instruction: expected a string or null');
  const next = checkNext(o['next']);
  if (next.error !== null) return fail('invalid', next.error);
  if (version === '2.0') {
    if (o['context'] !== undefined && o['context'] !== null) {
      const e = checkContext(o['context']);
      if (e !== null) return fail('invalid', e);
    }
    if (o['routing_trace'] !== undefined && o['routing_trace'] !== null) {
      const e = checkRoutingTrace(o['routing_trace']);
      if (e !== null) return fail('invalid', e);
    }
  }
  const task: TaskEnvelope = {
    ...(version === '2.0' ? { version } : {}),
    task_id: rawTaskId,
    conversation_id: conversationId,
    topic: o['topic'],
    instruction: instruction ?? null,
    input: o['input'] ?? null,
    next: (o['next'] as NextTask | null | undefined) ?? null,
    ...(version === '2.0' && o['context'] != null ? { context: o['context'] as TaskContext } : {}),
    ...(version === '2.0' && o['routing_trace'] != null ? { routing_trace: o['routing_trace'] as RoutingStep[] } : {}),
  };
  return { ok: true, task, depth: next.depth };
}

/** RFC 3339 in UTC with a `Z`, as 2389 writes its timestamps. */
export function timestamp(now = Date.now()): string {
  return new Date(now).toISOString();
}

/** The envelope that carries a finished task's result on to `next` (a fresh task id, the same conversation). */
export function nextEnvelope(task: TaskEnvelope, agentId: string, result: unknown, taskId: string, now = Date.now()): TaskEnvelope | null {
  const next = task.next;
  if (next === null) return null;
  const topic = canonicalTopic(next.topic);
  const base = {
    task_id: taskId,
    conversation_id: task.conversation_id,
    topic,
    instruction: next.instruction ?? null,
    input: result,
    next: next.next ?? null,
  };
  if (task.version !== '2.0') return base;
  const ts = timestamp(now);
  const before = task.context;
  const trace = task.routing_trace ?? [];
  return {
    version: '2.0',
    ...base,
    context: {
      original_query: before?.original_query ?? task.instruction ?? '',
      steps_completed: [...(before?.steps_completed ?? []), { agent_id: agentId, action: task.instruction ?? 'process', timestamp: ts }],
      iteration_count: (before?.iteration_count ?? 0) + 1,
    },
    routing_trace: [...trace, { from_agent: agentId, to_agent: agentOfInputTopic(topic) ?? topic, reason: 'next', timestamp: ts, step_number: trace.length + 1 }],
  };
}

/**
 * The task id of the `next` task a trace's answer sends: a UUIDv4 made from the trace id (a hash,
 * not random), so the same answer sent again after a crash sends the same task, which the next
 * agent drops as a duplicate.
 */
export function nextTaskId(traceId: string): string {
  const b = createHash('sha256').update(`roost-2389-next:${traceId}`).digest();
  b[6] = (b[6]! & 0x0f) | 0x40; // version 4
  b[8] = (b[8]! & 0x3f) | 0x80; // RFC 9562 variant
  const h = b.subarray(0, 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The JSON object in `bytes`, or null when they hold none. */
function jsonObject(bytes: Uint8Array): Record<string, unknown> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return null;
  }
  return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : null;
}

/** A status message (`/control/agents/{id}/status`, retained). */
export interface StatusMessage {
  readonly agent_id: string;
  readonly status: 'available' | 'unavailable';
  readonly timestamp: string;
  readonly capabilities?: readonly string[];
  readonly description?: string;
}

/** Reads a status message leniently (foreign agents add fields); null when it is not one. */
export function parseStatus(bytes: Uint8Array): StatusMessage | null {
  const o = jsonObject(bytes);
  if (o === null) return null;
  if (!isAgentId(o['agent_id']) || (o['status'] !== 'available' && o['status'] !== 'unavailable')) return null;
  const caps = Array.isArray(o['capabilities']) ? (o['capabilities'] as unknown[]).filter((c): c is string => typeof c === 'string') : [];
  return {
    agent_id: o['agent_id'],
    status: o['status'],
    timestamp: typeof o['timestamp'] === 'string' ? o['timestamp'] : '',
    capabilities: caps,
    ...(typeof o['description'] === 'string' ? { description: o['description'] } : {}),
  };
}

/** A response or an error on a conversation topic, read leniently; null when it is neither. */
export function parseReply(bytes: Uint8Array): { taskId: string; response: unknown } | { taskId: string; error: { code: string; message: string } } | null {
  const o = jsonObject(bytes);
  if (o === null) return null;
  if (typeof o['task_id'] !== 'string') return null;
  const e = o['error'];
  if (typeof e === 'object' && e !== null) {
    const err = e as Record<string, unknown>;
    return { taskId: o['task_id'], error: { code: typeof err['code'] === 'string' ? err['code'] : 'internal_error', message: typeof err['message'] === 'string' ? err['message'] : '' } };
  }
  if (!('response' in o)) return null;
  return { taskId: o['task_id'], response: o['response'] };
}

/**
 * What `roost monitor` makes of one MQTT message of the 2389 Agent Protocol, and how it prints it.
 * Pure: no broker, no clock (the receive time is passed in). Only the wire format is relied on
 * (../../docs/reference/transports.md, "roost monitor"), so Roost's 2389 agents and foreign ones
 * read the same.
 *
 * - Topics: `/control/agents/{agent}/status|input|progress[/…]` and
 *   `/conversations/{conversation}/{agent}` (the agent is the last level). A topic is read after
 *   canonicalisation (one leading `/`, no `//`, no trailing `/`), as 2389 agents do.
 * - A message never makes the monitor throw: an empty payload is `cleared` (a retained status
 *   removed), a payload over the 2389 packet cap, one that is not UTF-8 or not JSON, or JSON
 *   that is not what its topic carries, is `invalid` with the reason.
 */

/** The 2389 packet cap: a payload over it is not parsed (and never printed whole). */
export const MAX_MONITOR_PAYLOAD_BYTES = 256 * 1024;
/** The default length of an instruction, response or payload preview in pretty output. */
export const PREVIEW_CHARS = 200;
/** The length of a preview in compact output (one line per message). */
export const COMPACT_PREVIEW_CHARS = 80;

/** What a message is. */
export type MonitorKind = 'status' | 'input' | 'response' | 'error' | 'progress' | 'cleared' | 'invalid' | 'other';

/** Where a topic sits in the protocol. */
export type TopicRole = 'status' | 'input' | 'progress' | 'conversation' | 'other';

/** A topic, read. */
export interface TopicInfo {
  readonly role: TopicRole;
  /** The agent the topic names (for a conversation: its last level), or null. */
  readonly agentId: string | null;
  /** The conversation the topic names (conversations only), or null. */
  readonly conversationId: string | null;
  /** The levels after `progress` (`tools`, `llm`), or null. */
  readonly progressChannel: string | null;
}

/** One message as the monitor understood it. */
export interface MonitorMessage {
  /** When it was received (RFC 3339, UTC). */
  readonly ts: string;
  readonly topic: string;
  readonly kind: MonitorKind;
  readonly agentId: string | null;
  readonly conversationId: string | null;
  readonly taskId: string | null;
  /** Delivered from the broker's store (a retained message), not published just now. */
  readonly retained: boolean;
  readonly bytes: number;
  /** The remaining MQTT 5 message expiry in seconds, when the message has one. */
  readonly expirySeconds: number | null;
  /** The parsed payload (null when it could not be parsed or was empty). */
  readonly payload: unknown;
  /** Why it is `invalid` (or what is odd about it), else null. */
  readonly problem: string | null;
  /** Kind-specific facts, ready to print. */
  readonly detail: MonitorDetail;
}

/** Kind-specific facts of a {@link MonitorMessage}. */
export interface MonitorDetail {
  /** status: `available` or `unavailable`. */
  readonly status?: string;
  readonly capabilities?: readonly string[];
  readonly description?: string;
  /** input: `1` or `2`. */
  readonly version?: 1 | 2;
  readonly instruction?: string | null;
  /** input: how many `next` steps follow (the depth 2389 agents check). */
  readonly depth?: number;
  /** input v2: `context.steps_completed` and `routing_trace` counts. */
  readonly steps?: number;
  readonly routing?: number;
  /** input: where `next` goes. */
  readonly nextTopic?: string;
  /** response: the response (any JSON). */
  readonly response?: unknown;
  /** error: its code and message. */
  readonly errorCode?: string;
  readonly errorMessage?: string;
  /** progress: the channel (`tools`, `llm`), event type and message, when the payload has them. */
  readonly channel?: string;
  readonly event?: string;
  readonly message?: string;
  /** invalid: the first characters of a payload that is text. */
  readonly text?: string;
}

/** The topic canonicalised as 2389 agents do: one leading `/`, no `//`, no trailing `/`. */
export function canonicalTopic(topic: string): string {
  return `/${topic.split('/').filter((level) => level !== '').join('/')}`;
}

/** Reads a topic's place in the protocol. */
export function readTopic(topic: string): TopicInfo {
  const levels = canonicalTopic(topic).split('/').slice(1);
  const none: TopicInfo = { role: 'other', agentId: null, conversationId: null, progressChannel: null };
  if (levels[0] === 'control' && levels[1] === 'agents' && levels.length >= 4) {
    const agentId = levels[2]!;
    const what = levels[3];
    if (what === 'status' && levels.length === 4) return { ...none, role: 'status', agentId };
    if (what === 'input' && levels.length === 4) return { ...none, role: 'input', agentId };
    if (what === 'progress') return { ...none, role: 'progress', agentId, progressChannel: levels.length > 4 ? levels.slice(4).join('/') : null };
    return { ...none, agentId };
  }
  if (levels[0] === 'conversations' && levels.length >= 3) {
    return { ...none, role: 'conversation', agentId: levels[levels.length - 1]!, conversationId: levels.slice(1, -1).join('/') };
  }
  return none;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The receive facts of a message, beside its topic and bytes. */
export interface ReceivedFacts {
  /** Receive time, ms since the epoch. */
  readonly receivedAt: number;
  readonly retained: boolean;
  readonly expirySeconds?: number | undefined;
}

/** Classifies one message; never throws. */
export function classify(topic: string, payload: Uint8Array, facts: ReceivedFacts): MonitorMessage {
  const info = readTopic(topic);
  const base: Base = {
    ts: new Date(facts.receivedAt).toISOString(),
    topic,
    agentId: info.agentId,
    conversationId: info.conversationId,
    taskId: null,
    retained: facts.retained,
    bytes: payload.byteLength,
    expirySeconds: facts.expirySeconds ?? null,
    payload: null,
    problem: null,
    detail: info.progressChannel === null ? {} : { channel: info.progressChannel },
  };
  if (payload.byteLength === 0) return { ...base, kind: 'cleared' };
  if (payload.byteLength > MAX_MONITOR_PAYLOAD_BYTES) {
    return { ...base, kind: 'invalid', problem: `${payload.byteLength} bytes: over the 2389 packet cap of ${MAX_MONITOR_PAYLOAD_BYTES} bytes (not parsed)` };
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch {
    return { ...base, kind: 'invalid', problem: `not UTF-8 text (${payload.byteLength} bytes of binary)` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { ...base, kind: 'invalid', problem: `not JSON: ${(error as Error).message}`, detail: { ...base.detail, text: preview(text, PREVIEW_CHARS) } };
  }
  const withPayload = { ...base, payload: parsed };
  const invalid = (problem: string): MonitorMessage => ({ ...withPayload, kind: 'invalid', problem });
  switch (info.role) {
    case 'status':
      return status(withPayload, parsed, invalid);
    case 'input':
      return input(withPayload, parsed, invalid);
    case 'conversation':
      return conversation(withPayload, parsed, invalid);
    case 'progress':
      return progress(withPayload, parsed);
    default:
      return { ...withPayload, kind: 'other', taskId: isObject(parsed) ? (str(parsed['task_id']) ?? null) : null };
  }
}

type Base = Omit<MonitorMessage, 'kind'>;

function status(base: Base, p: unknown, invalid: (why: string) => MonitorMessage): MonitorMessage {
  if (!isObject(p)) return invalid('a status must be a JSON object');
  const s = p['status'];
  if (s !== 'available' && s !== 'unavailable') return invalid(`status: expected "available" or "unavailable", got ${short(s)}`);
  const caps = Array.isArray(p['capabilities']) ? p['capabilities'].filter((c): c is string => typeof c === 'string') : undefined;
  const description = str(p['description']);
  const named = str(p['agent_id']);
  return {
    ...base,
    kind: 'status',
    problem: named !== undefined && named !== base.agentId ? `agent_id ${short(named)} is not the topic's agent` : null,
    detail: { status: s, ...(caps === undefined ? {} : { capabilities: caps }), ...(description === undefined ? {} : { description }) },
  };
}

function input(base: Base, p: unknown, invalid: (why: string) => MonitorMessage): MonitorMessage {
  if (!isObject(p)) return invalid('a TaskEnvelope must be a JSON object');
  const version = p['version'];
  if (version !== undefined && version !== '2.0') return invalid(`version: expected "2.0" (or none, v1), got ${short(version)}`);
  const taskId = str(p['task_id']);
  const conversationId = str(p['conversation_id']);
  const partial = { ...base, taskId: taskId ?? null, conversationId: conversationId ?? null };
  for (const [field, value] of [['task_id', taskId], ['conversation_id', conversationId], ['topic', str(p['topic'])]] as const) {
    if (value === undefined) return { ...partial, kind: 'invalid', problem: `${field}: expected a string, got ${short(p[field])}` };
  }
  const instruction = p['instruction'];
  if (instruction !== undefined && instruction !== null && typeof instruction !== 'string') {
    return { ...partial, kind: 'invalid', problem: `instruction: expected a string or null, got ${short(instruction)}` };
  }
  let depth = 0;
  // Bounded: a chain deeper than any agent accepts is counted up to here and shown as such.
  for (let next = p['next']; isObject(next) && depth <= 1_000; next = next['next']) depth++;
  const next = isObject(p['next']) ? str(p['next']['topic']) : undefined;
  const detail: MonitorDetail = {
    version: version === '2.0' ? 2 : 1,
    instruction: instruction ?? null,
    depth,
    ...(next === undefined ? {} : { nextTopic: next }),
  };
  if (version === '2.0') {
    const context = p['context'];
    const steps = isObject(context) && Array.isArray(context['steps_completed']) ? context['steps_completed'].length : 0;
    const routing = Array.isArray(p['routing_trace']) ? p['routing_trace'].length : 0;
    return { ...partial, kind: 'input', detail: { ...detail, steps, routing } };
  }
  return { ...partial, kind: 'input', detail };
}

function conversation(base: Base, p: unknown, invalid: (why: string) => MonitorMessage): MonitorMessage {
  if (!isObject(p)) return invalid('a response or error must be a JSON object');
  const taskId = str(p['task_id']) ?? null;
  const withTask = { ...base, taskId };
  if ('error' in p) {
    const e = p['error'];
    if (!isObject(e)) return { ...withTask, kind: 'invalid', problem: `error: expected {code, message}, got ${short(e)}` };
    return { ...withTask, kind: 'error', detail: { errorCode: str(e['code']) ?? short(e['code']), errorMessage: str(e['message']) ?? short(e['message']) } };
  }
  if ('response' in p) return { ...withTask, kind: 'response', detail: { response: p['response'] } };
  return { ...withTask, kind: 'invalid', problem: 'neither a response ({response, task_id}) nor an error ({error, task_id})' };
}

function progress(base: Base, p: unknown): MonitorMessage {
  if (!isObject(p)) return { ...base, kind: 'progress', detail: { ...base.detail, message: preview(p, PREVIEW_CHARS) } };
  const event = str(p['event_type']) ?? str(p['event']) ?? str(p['type']);
  const message = str(p['message']);
  return {
    ...base,
    kind: 'progress',
    taskId: str(p['task_id']) ?? null,
    conversationId: str(p['conversation_id']) ?? null,
    detail: { ...base.detail, ...(event === undefined ? {} : { event }), ...(message === undefined ? {} : { message }) },
  };
}

/** What a message must match to be printed. */
export interface MonitorFilters {
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
}

/**
 * Whether `m` passes the filters: its agent is the one asked for (the topic's agent), and its
 * conversation is the one asked for (the topic's for responses and errors, the envelope's
 * `conversation_id` for inputs, the payload's for progress). A message that names no
 * conversation (a status, an unparseable input) does not pass a conversation filter.
 */
export function passes(m: MonitorMessage, filters: MonitorFilters): boolean {
  if (filters.agentId !== undefined && m.agentId !== filters.agentId) return false;
  if (filters.conversationId !== undefined && m.conversationId !== filters.conversationId) return false;
  return true;
}

/** `value` as one printable line of at most `max` characters (strings as they are, else JSON). */
export function preview(value: unknown, max: number): string {
  let text: string;
  if (typeof value === 'string') text = value.length > max * 4 ? value.slice(0, max * 4) : value;
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  const line = printable(text.replace(/\s+/g, ' ').trim());
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Control characters (a terminal's escape sequences) replaced, so a payload cannot drive the terminal. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '�');
}

function short(v: unknown): string {
  if (v === undefined) return 'nothing';
  return preview(v, 40);
}

/** A task id shortened for people: its first 8 characters. */
export function shortTask(id: string | null): string {
  if (id === null) return '-';
  return printable(id.length > 8 ? id.slice(0, 8) : id);
}

const LABEL: Record<MonitorKind, string> = {
  status: 'STATUS',
  input: 'INPUT',
  response: 'RESPONSE',
  error: 'ERROR',
  progress: 'PROGRESS',
  cleared: 'CLEARED',
  invalid: 'INVALID',
  other: 'OTHER',
};

/** The kind-specific summary: `available caps=a,b`, `v2 depth=1 steps=2 routing=1`, `code=llm_error`. */
function summary(m: MonitorMessage): string[] {
  const d = m.detail;
  const parts: string[] = [];
  if (m.kind === 'status') {
    parts.push(d.status ?? '?');
    if (d.capabilities !== undefined) parts.push(`capabilities=${d.capabilities.length === 0 ? '-' : printable(d.capabilities.join(','))}`);
  } else if (m.kind === 'input') {
    parts.push(`v${d.version ?? 1}`, `depth=${d.depth ?? 0}`);
    if (d.version === 2) parts.push(`steps=${d.steps ?? 0}`, `routing=${d.routing ?? 0}`);
    if (d.nextTopic !== undefined) parts.push(`next=${printable(d.nextTopic)}`);
  } else if (m.kind === 'error') {
    parts.push(`code=${printable(d.errorCode ?? '?')}`);
  } else if (m.kind === 'progress') {
    if (d.channel !== undefined) parts.push(`channel=${printable(d.channel)}`);
    if (d.event !== undefined) parts.push(`event=${printable(d.event)}`);
  } else if (m.kind === 'cleared') {
    parts.push('(empty payload: a retained message removed)');
  }
  if (m.retained) parts.push('retained');
  if (m.expirySeconds !== null) parts.push(`expires-in=${m.expirySeconds}s`);
  return parts;
}

/** The text worth previewing: the instruction, response, error message, status description, … */
function body(m: MonitorMessage): { label: string; value: unknown } | null {
  const d = m.detail;
  switch (m.kind) {
    case 'status':
      return d.description === undefined ? null : { label: 'description', value: d.description };
    case 'input':
      return d.instruction === null || d.instruction === undefined ? null : { label: 'instruction', value: d.instruction };
    case 'response':
      return { label: 'response', value: d.response };
    case 'error':
      return { label: 'message', value: d.errorMessage ?? '' };
    case 'progress':
      return d.message !== undefined ? { label: 'message', value: d.message } : m.payload === null ? null : { label: 'payload', value: m.payload };
    case 'invalid':
      return d.text !== undefined ? { label: 'text', value: d.text } : null;
    case 'other':
      return { label: 'payload', value: m.payload };
    default:
      return null;
  }
}

/** Pretty output: a head line, then the problem and a bounded preview, each indented. */
export function formatPretty(m: MonitorMessage, previewChars: number = PREVIEW_CHARS): string[] {
  const head = [
    m.ts,
    LABEL[m.kind].padEnd(8),
    `agent=${m.agentId === null ? '-' : printable(m.agentId)}`,
    ...(m.conversationId === null ? [] : [`conversation=${printable(m.conversationId)}`]),
    ...(m.taskId === null ? [] : [`task=${shortTask(m.taskId)}`]),
    ...summary(m),
  ].join(' ');
  const lines = [head];
  if (m.kind === 'invalid' || m.kind === 'other') lines.push(`    topic: ${printable(m.topic)}`);
  if (m.problem !== null) lines.push(`    ${m.kind === 'invalid' ? 'problem' : 'note'}: ${printable(m.problem)}`);
  const b = body(m);
  if (b !== null) lines.push(`    ${b.label}: ${preview(b.value, previewChars)}`);
  return lines;
}

/** Compact output: one line per message. */
export function formatCompact(m: MonitorMessage): string {
  const b = body(m);
  return [
    m.ts.slice(11, 23),
    m.kind,
    m.agentId === null ? '-' : printable(m.agentId),
    m.conversationId === null ? '-' : printable(m.conversationId),
    shortTask(m.taskId),
    ...summary(m),
    ...(m.problem === null ? [] : [`problem=${JSON.stringify(preview(m.problem, COMPACT_PREVIEW_CHARS))}`]),
    ...(b === null ? [] : [JSON.stringify(preview(b.value, COMPACT_PREVIEW_CHARS))]),
  ].join(' ');
}

/** JSON output: one object per line (NDJSON), with the whole parsed payload. */
export function formatJson(m: MonitorMessage): string {
  const d = m.detail;
  const out: Record<string, unknown> = {
    ts: m.ts,
    topic: m.topic,
    kind: m.kind,
    agent_id: m.agentId,
    conversation_id: m.conversationId,
    task_id: m.taskId,
    retained: m.retained,
    bytes: m.bytes,
    expiry_s: m.expirySeconds,
  };
  if (m.kind === 'status') Object.assign(out, { status: d.status ?? null });
  if (m.kind === 'input') Object.assign(out, { version: d.version, depth: d.depth, ...(d.version === 2 ? { steps: d.steps, routing: d.routing } : {}) });
  if (m.kind === 'error') Object.assign(out, { error_code: d.errorCode ?? null });
  if (m.kind === 'progress' && d.channel !== undefined) Object.assign(out, { channel: d.channel });
  if (m.problem !== null) out['problem'] = m.problem;
  if (d.text !== undefined) out['text'] = d.text;
  const head = JSON.stringify(out);
  try {
    return `${head.slice(0, -1)},"payload":${JSON.stringify(m.payload) ?? 'null'}}`;
  } catch {
    // JSON.parse reads any depth, JSON.stringify recurses: a payload nested deeper than the stack
    // cannot be written back. Say so rather than fail the whole monitor.
    const problem = `${m.problem === null ? '' : `${m.problem}; `}payload too deeply nested to print as JSON`;
    return JSON.stringify({ ...out, problem, payload: null });
  }
}

/**
 * A process's presence record as it travels (UTF-8 JSON, one per process, version 1):
 *
 *   { "v": 1, "id": "worker-1", "status": "available", "version": "0.1.0", "load": 2, "capacity": 8,
 *     "agents": [{ "name": "summarize", "capabilities": ["text"], "description": "…" }],
 *     "nodes": ["triage/classify"], "ts": 1767225600000, "expiresAt": 1767225615000, "expiryMs": 15000 }
 *
 * `ts` and `expiresAt` are the sender's clock; `expiryMs` is its expiry (so `expiresAt` is
 * `ts + expiryMs`). A last will (MQTT), written when the connection is made and published by the
 * broker whenever it fires, has `ts` and `expiresAt` null: its reader takes the time it heard it.
 * Unknown fields are ignored (a later minor addition); any other shape is malformed, and
 * {@link decodePresence} says which field.
 */
import { isName } from '../envelope/names.js';
import { invalidOption } from '../errors.js';

/** The record's `v`. */
export const PRESENCE_RECORD_VERSION = 1;
/** The largest record sent or accepted: room for a few thousand agents and nodes. */
export const MAX_PRESENCE_RECORD_BYTES = 256 * 1024;
/** The statuses a process can report. */
export const PRESENCE_STATUSES = ['available', 'draining', 'unavailable'] as const;

/** A process's presence status. */
export type PresenceStatus = (typeof PRESENCE_STATUSES)[number];

/** An agent a process hosts, as its presence tells it. */
export interface PresenceAgent {
  readonly name: string;
  readonly capabilities: readonly string[];
  readonly description?: string;
}

/** A process as the fleet sees it. */
export interface PresenceInfo {
  /** The process (its runtime owner id): 1 to 100 of `A-Z a-z 0-9 . _ : -`. */
  readonly id: string;
  readonly status: PresenceStatus;
  /** The Roost package version it runs. */
  readonly version: string;
  /** Runs in progress now. */
  readonly load: number;
  /** Runs it can take at once (0: unknown). */
  readonly capacity: number;
  readonly agents: readonly PresenceAgent[];
  /** `flow/node` names this process works on for others. */
  readonly nodes: readonly string[];
  /** Epoch ms of this heartbeat (of hearing it, for a last will). */
  readonly ts: number;
  /** When this record stops counting: `ts` + its expiry. */
  readonly expiresAt: number;
}

/** A record as it travels: {@link PresenceInfo} with its expiry, and null times for a last will. */
export interface PresenceRecord extends Omit<PresenceInfo, 'ts' | 'expiresAt'> {
  readonly v: typeof PRESENCE_RECORD_VERSION;
  readonly ts: number | null;
  readonly expiresAt: number | null;
  readonly expiryMs: number;
}

const ID = /^[A-Za-z0-9._:-]{1,100}$/;
/** An expiry of a day at most: a record that claims longer is not a heartbeat. */
export const MAX_EXPIRY_MS = 24 * 3_600_000;
const MAX_LIST = 10_000;
const MAX_TEXT = 1_024;

/** Checks a process id (the runtime owner id): `ROOST_ERR_INVALID_OPTION` naming `field`. */
export function checkPresenceId(id: unknown, field = 'id'): string {
  if (typeof id !== 'string' || !ID.test(id)) throw invalidOption(field, 'a process id of 1 to 100 letters, digits and . _ : -', id);
  return id;
}

/** Why a record is malformed: the field at fault and what it should be. */
export class MalformedPresence extends Error {
  constructor(
    readonly field: string,
    readonly expected: string,
  ) {
    super(`${field}: expected ${expected}`);
  }
}

function fail(field: string, expected: string): never {
  throw new MalformedPresence(field, expected);
}

function count(o: Record<string, unknown>, key: string, path: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${path}${key}`, 'an integer from 0 up');
  return v;
}

function time(o: Record<string, unknown>, key: string): number | null {
  const v = o[key];
  if (v === null) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(key, 'epoch milliseconds, or null for a last will');
  return v;
}

function text(v: unknown, field: string, max = MAX_TEXT): string {
  if (typeof v !== 'string' || v.length > max) fail(field, `a string of at most ${max} characters`);
  return v;
}

function list(v: unknown, field: string): unknown[] {
  if (!Array.isArray(v) || v.length > MAX_LIST) fail(field, `an array of at most ${MAX_LIST} items`);
  return v;
}

function agentOf(v: unknown, field: string): PresenceAgent {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(field, 'an object { name, capabilities, description? }');
  const a = v as Record<string, unknown>;
  if (!isName(a['name'])) fail(`${field}.name`, 'a name matching [A-Za-z0-9._-]{1,64}');
  const capabilities = list(a['capabilities'], `${field}.capabilities`).map((c, i) => {
    const s = text(c, `${field}.capabilities[${i}]`, 128);
    if (s.length === 0) fail(`${field}.capabilities[${i}]`, 'a non-empty string');
    return s;
  });
  const description = a['description'];
  return {
    name: a['name'],
    capabilities,
    ...(description === undefined ? {} : { description: text(description, `${field}.description`) }),
  };
}

function nodeOf(v: unknown, field: string): string {
  const s = text(v, field, 129);
  const parts = s.split('/');
  if (parts.length !== 2 || !isName(parts[0]) || !isName(parts[1])) fail(field, 'a "flow/node" name');
  return s;
}

/** The fields every record has, checked (for decode, and for what a process sends). */
export function checkRecord(raw: unknown): PresenceRecord {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('record', 'a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['v'] !== PRESENCE_RECORD_VERSION) fail('v', `${PRESENCE_RECORD_VERSION}`);
  const id = o['id'];
  if (typeof id !== 'string' || !ID.test(id)) fail('id', 'a process id of 1 to 100 letters, digits and . _ : -');
  const status = o['status'];
  if (!(PRESENCE_STATUSES as readonly unknown[]).includes(status)) fail('status', PRESENCE_STATUSES.join(', '));
  const expiryMs = o['expiryMs'];
  if (typeof expiryMs !== 'number' || !Number.isSafeInteger(expiryMs) || expiryMs < 1 || expiryMs > MAX_EXPIRY_MS) fail('expiryMs', `an integer from 1 to ${MAX_EXPIRY_MS}`);
  const ts = time(o, 'ts');
  const expiresAt = time(o, 'expiresAt');
  if ((ts === null) !== (expiresAt === null)) fail('expiresAt', 'null exactly when ts is (a last will)');
  if (ts !== null && expiresAt! < ts) fail('expiresAt', 'ts or later');
  return {
    v: PRESENCE_RECORD_VERSION,
    id,
    status: status as PresenceStatus,
    version: text(o['version'], 'version', 64),
    load: count(o, 'load', ''),
    capacity: count(o, 'capacity', ''),
    agents: list(o['agents'], 'agents').map((a, i) => agentOf(a, `agents[${i}]`)),
    nodes: list(o['nodes'], 'nodes').map((n, i) => nodeOf(n, `nodes[${i}]`)),
    ts,
    expiresAt,
    expiryMs,
  };
}

/** The bytes of a record (checked first: a process never sends one its readers would refuse). */
export function encodePresence(record: PresenceRecord): Uint8Array {
  let checked: PresenceRecord;
  try {
    checked = checkRecord(record);
  } catch (error) {
    if (error instanceof MalformedPresence) throw invalidOption(`presence.${error.field}`, error.expected, fieldValue(record, error.field));
    throw error;
  }
  const bytes = Buffer.from(JSON.stringify(checked), 'utf8');
  if (bytes.length > MAX_PRESENCE_RECORD_BYTES) throw invalidOption('presence', `a record of at most ${MAX_PRESENCE_RECORD_BYTES} bytes (fewer agents or nodes)`, `${bytes.length} bytes`);
  return bytes;
}

/** The value at a simple path (`agents[2].name`) of a record, for an error message. */
function fieldValue(record: unknown, path: string): unknown {
  let v: unknown = record;
  for (const part of path.split(/[.[\]]+/).filter((p) => p !== '')) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/** The record in `bytes`; throws {@link MalformedPresence} naming the field when they are not one. */
export function decodePresence(bytes: Uint8Array): PresenceRecord {
  if (bytes.length > MAX_PRESENCE_RECORD_BYTES) fail('record', `at most ${MAX_PRESENCE_RECORD_BYTES} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    fail('record', 'JSON');
  }
  return checkRecord(raw);
}

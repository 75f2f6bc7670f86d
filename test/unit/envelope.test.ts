/**
 * The envelope: codec round trips and caps, the validator's codes and fields, and UUIDv7 ids.
 * Property tests (fast-check) cover arbitrary valid envelopes and arbitrary garbage; the
 * examples pin each error's code and field.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_MAX_ENVELOPE_BYTES,
  DEFAULT_TENANT,
  ENVELOPE_KINDS,
  ENVELOPE_SCHEMA,
  ENVELOPE_VERSION,
  NAME_PATTERN,
  decodeEnvelope,
  encodeEnvelope,
  isName,
  isRoostError,
  isUuidV7,
  uuidv7,
  uuidv7Time,
  deriveUuidv7,
  validateEnvelope,
  type Envelope,
  type ErrorCode,
  type RoostError,
} from '../../src/index.js';
import { deriveId, formatUuidv7, idBits, lastIdBits, lastUuidv7Time, saltHash } from '../../src/envelope/uuid.js';
import { surelyValid } from '../../src/envelope/schema.js';
import { Ajv } from 'ajv';

// ---- arbitraries ------------------------------------------------------------------------------

const NAME_CHARS = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-'];
const HEX = [...'0123456789abcdef'];
const MAX_EPOCH_MS = 8.64e15;

/** A valid name: `[A-Za-z0-9._-]{1,max}`. */
const nameArb = (max = 64): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: max });

const hexArb = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...HEX), minLength: n, maxLength: n });

/** A valid UUIDv7: made by `uuidv7()`, or any string of the right shape (any time, counter and variant). */
const uuidArb: fc.Arbitrary<string> = fc.oneof(
  fc.constant(null).map(() => uuidv7()),
  fc
    .tuple(hexArb(8), hexArb(4), hexArb(3), fc.constantFrom('8', '9', 'a', 'b'), hexArb(3), hexArb(12))
    .map(([a, b, c, variant, d, e]) => `${a}-${b}-7${c}-${variant}${d}-${e}`),
);

/** A valid address: names joined by `/`, maybe with a leading `/`, at most 256 characters. */
const addressArb: fc.Arbitrary<string> = fc
  .tuple(fc.boolean(), fc.array(nameArb(40), { minLength: 1, maxLength: 6 }))
  .map(([lead, parts]) => (lead ? '/' : '') + parts.join('/'));

/** Headers within the schema: ≤ 64 keys of ≤ 128 code points, string values (kept short here). */
const headersArb: fc.Arbitrary<Record<string, string>> = fc.dictionary(
  fc.string({ unit: 'binary', maxLength: 128 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  { maxKeys: 64 },
);

const epochArb = fc.integer({ min: 0, max: MAX_EPOCH_MS });

/** Any valid envelope, every field present. */
const envelopeArb: fc.Arbitrary<Envelope> = fc.record({
  v: fc.constant(1 as const),
  id: uuidArb,
  traceId: uuidArb,
  parentId: fc.option(uuidArb, { nil: null }),
  tenant: nameArb(),
  from: nameArb(),
  to: addressArb,
  kind: fc.constantFrom(...ENVELOPE_KINDS),
  payload: fc.jsonValue(),
  headers: headersArb,
  deadline: fc.option(epochArb, { nil: null }),
  createdAt: epochArb,
  attempt: fc.integer({ min: 1, max: 1_000_000 }),
  idempotencyKey: fc.option(fc.string({ unit: 'binary', minLength: 1, maxLength: 256 }), { nil: null }),
});

const FIELDS = Object.keys(ENVELOPE_SCHEMA.properties) as (keyof Envelope)[];
const REQUIRED: readonly string[] = ENVELOPE_SCHEMA.required;
const OPTIONAL_DEFAULTS: Readonly<Record<string, unknown>> = { parentId: null, headers: {}, deadline: null, idempotencyKey: null };
const DECODE_CODES: readonly ErrorCode[] = [
  'ROOST_ERR_ENVELOPE_PARSE',
  'ROOST_ERR_ENVELOPE_INVALID',
  'ROOST_ERR_UNSUPPORTED_VERSION',
  'ROOST_ERR_PAYLOAD_TOO_LARGE',
];

// ---- helpers ----------------------------------------------------------------------------------

/** A fixed, valid envelope with every field set. */
function sample(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    v: 1,
    id: uuidv7(),
    traceId: uuidv7(),
    parentId: uuidv7(),
    tenant: 'acme',
    from: 'classify',
    to: 'billing',
    kind: 'task',
    payload: { ticket: 1, text: 'hello' },
    headers: { 'x-request-id': 'r1' },
    deadline: 1_800_000_000_000,
    createdAt: 1_700_000_000_000,
    attempt: 1,
    idempotencyKey: 'k-1',
    ...overrides,
  };
}

/** `env` without `key`. */
function without(env: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy = { ...env };
  delete copy[key];
  return copy;
}

/** What a JSON round trip makes of `value` (-0 → 0, undefined keys dropped, …). */
function viaJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}

/** The RoostError `fn` throws; fails the test when it returns or throws anything else. */
function roostErrorOf(fn: () => unknown): RoostError {
  let result: unknown;
  try {
    result = fn();
  } catch (error) {
    if (isRoostError(error)) return error;
    throw new Error(`expected a RoostError, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected a RoostError, but it returned ${JSON.stringify(result)?.slice(0, 200)}`);
}

/** Decodes, asserting that a failure is a RoostError with one of the decode codes. */
function tryDecode(input: Uint8Array | string, maxBytes?: number): { ok: true; env: Envelope } | { ok: false; error: RoostError } {
  try {
    return { ok: true, env: decodeEnvelope(input, maxBytes === undefined ? {} : { maxBytes }) };
  } catch (error) {
    if (!isRoostError(error)) throw new Error(`decodeEnvelope threw a non-RoostError: ${String(error)}`, { cause: error });
    expect(DECODE_CODES).toContain(error.code);
    return { ok: false, error };
  }
}

/** Asserts `fn` throws a RoostError with `code` and `field`; returns it. */
function expectCode(fn: () => unknown, code: ErrorCode, field: string | undefined): RoostError {
  const error = roostErrorOf(fn);
  expect({ code: error.code, field: error.field }).toEqual({ code, field });
  return error;
}

afterEach(() => {
  vi.restoreAllMocks();
});

// ---- round trips ------------------------------------------------------------------------------

describe('encodeEnvelope / decodeEnvelope round trip', () => {
  it('decodes what it encodes, for arbitrary valid envelopes (JSON semantics; over the cap is refused)', () => {
    fc.assert(
      fc.property(envelopeArb, (env) => {
        const text = JSON.stringify(env);
        const size = Buffer.byteLength(text, 'utf8');
        if (size > DEFAULT_MAX_ENVELOPE_BYTES) {
          expectCode(() => encodeEnvelope(env), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
          return;
        }
        const bytes = encodeEnvelope(env);
        expect(Buffer.isBuffer(bytes)).toBe(true);
        expect(bytes.byteLength).toBe(size);
        const expected = viaJson(env);
        expect(decodeEnvelope(bytes)).toEqual(expected);
        expect(decodeEnvelope(bytes.toString('utf8'))).toEqual(expected);
        expect(validateEnvelope(env)).toBe(env); // a complete, valid envelope is returned as is
      }),
      { numRuns: 300 },
    );
  });

  it('fills absent optional fields with null and {}, for arbitrary valid envelopes', () => {
    const dropArb = fc.subarray(Object.keys(OPTIONAL_DEFAULTS));
    fc.assert(
      fc.property(envelopeArb, dropArb, (env, drop) => {
        let wire: Record<string, unknown> = { ...env };
        for (const key of drop) wire = without(wire, key);
        const decoded = decodeEnvelope(JSON.stringify(wire));
        expect(Object.keys(decoded).sort()).toEqual([...FIELDS].sort());
        const expected = viaJson(env) as Record<string, unknown>;
        for (const key of drop) expected[key] = OPTIONAL_DEFAULTS[key];
        expect(decoded).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });

  it('honours a custom cap exactly: encode refuses and decode refuses above it, both accept at or below it', () => {
    fc.assert(
      fc.property(envelopeArb, fc.integer({ min: 100, max: 4_000 }), (env, maxBytes) => {
        const size = Buffer.byteLength(JSON.stringify(env), 'utf8');
        const bytes = Buffer.from(JSON.stringify(env), 'utf8');
        if (size > maxBytes) {
          const e1 = expectCode(() => encodeEnvelope(env, { maxBytes }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
          expect(e1.details).toEqual({ size, max: maxBytes });
          const e2 = expectCode(() => decodeEnvelope(bytes, { maxBytes }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
          expect(e2.details).toEqual({ size, max: maxBytes });
          expectCode(() => decodeEnvelope(bytes.toString('utf8'), { maxBytes }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
        } else {
          expect(encodeEnvelope(env, { maxBytes }).equals(bytes)).toBe(true);
          expect(decodeEnvelope(bytes, { maxBytes })).toEqual(viaJson(env));
        }
      }),
      { numRuns: 200 },
    );
  });

  it('encodes exactly the bytes of JSON.stringify, whatever the field order, absent or undefined optional fields, or the headers object', () => {
    class Headers {
      constructor(readonly traceparent: string) {}
    }
    fc.assert(
      fc.property(
        envelopeArb,
        fc.subarray(Object.keys(OPTIONAL_DEFAULTS)),
        fc.boolean(),
        fc.constantFrom('plain', 'null-proto', 'class'),
        fc.boolean(),
        (env, drop, shuffle, headersKind, undefinedOnes) => {
          let entries = Object.entries(env).filter(([k]) => !drop.includes(k));
          if (undefinedOnes) entries = [...entries, ...drop.map((k): [string, unknown] => [k, undefined])];
          if (shuffle) entries = [...entries].reverse();
          const wire = Object.fromEntries(entries) as Record<string, unknown>;
          if (wire['headers'] !== undefined && headersKind !== 'plain') {
            wire['headers'] = headersKind === 'class' ? new Headers('00-x') : Object.assign(Object.create(null) as object, env.headers);
          }
          const text = JSON.stringify(wire);
          if (Buffer.byteLength(text) > DEFAULT_MAX_ENVELOPE_BYTES) return;
          expect(encodeEnvelope(wire as unknown as Envelope).toString('utf8')).toBe(text);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('turns -0 into 0, as JSON does', () => {
    const decoded = decodeEnvelope(encodeEnvelope(sample({ payload: { n: -0, list: [-0] } }) as unknown as Envelope));
    const payload = decoded.payload as { n: number; list: number[] };
    expect(Object.is(payload.n, 0)).toBe(true);
    expect(Object.is(payload.list[0], 0)).toBe(true);
  });

  it('accepts every kind of JSON payload, null included', () => {
    for (const payload of [null, true, false, 0, -1.5, 1e308, '', 'text', [], [1, 'a', null], {}, { a: { b: [{}] } }]) {
      expect(decodeEnvelope(JSON.stringify(sample({ payload }))).payload).toEqual(payload);
    }
  });

  it('reads a Uint8Array view that does not start at the beginning of its buffer', () => {
    const env = sample();
    const text = JSON.stringify(env);
    const backing = new Uint8Array(Buffer.byteLength(text) + 20).fill(0x20);
    backing.set(Buffer.from(text, 'utf8'), 10);
    const view = new Uint8Array(backing.buffer, 10, Buffer.byteLength(text));
    expect(decodeEnvelope(view)).toEqual(env);
  });

  it('decodes non-ASCII text and counts the cap in UTF-8 bytes', () => {
    const env = sample({ payload: 'é😀中', headers: { 'ключ': 'значение' }, idempotencyKey: '😀'.repeat(256) });
    const bytes = encodeEnvelope(env as unknown as Envelope);
    expect(bytes.byteLength).toBe(Buffer.byteLength(JSON.stringify(env), 'utf8'));
    expect(bytes.byteLength).toBeGreaterThan(JSON.stringify(env).length);
    expect(decodeEnvelope(bytes)).toEqual(env);
  });
});

// ---- decoding garbage -------------------------------------------------------------------------

describe('decodeEnvelope on garbage never throws anything but a RoostError', () => {
  it('random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2_048 }), (bytes) => {
        tryDecode(bytes);
      }),
      { numRuns: 500 },
    );
  });

  it('random strings (any code points, lone surrogates included) and random JSON-looking text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary-ascii' }), fc.string({ unit: 'grapheme' }), fc.json()), (text) => {
        tryDecode(text);
        tryDecode(text + '\ud800'); // a lone surrogate
      }),
      { numRuns: 500 },
    );
  });

  it('random JSON values and random objects, which are not envelopes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.object()), (value) => {
        const text = JSON.stringify(value);
        if (text === undefined) return;
        const result = tryDecode(text);
        // A random value is never a valid envelope (it lacks the required fields).
        expect(result.ok).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('valid envelopes with one field corrupted: a failure names that field', () => {
    const corruption = fc.oneof(
      { weight: 4, arbitrary: fc.jsonValue() },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, 2, 0, -1, 1.5, '', ' ', 'A'.repeat(300), null, [], {}) },
    );
    fc.assert(
      fc.property(envelopeArb, fc.constantFrom(...FIELDS), corruption, (env, field, value) => {
        const wire = value === undefined ? without({ ...env }, field) : { ...env, [field]: value };
        const result = tryDecode(JSON.stringify(wire));
        if (result.ok) {
          // the new value happened to be valid there: it decodes as sent
          const expected = viaJson(wire) as Record<string, unknown>;
          if (value === undefined) expected[field] = OPTIONAL_DEFAULTS[field];
          expect(result.env).toEqual(expected);
          return;
        }
        if (result.error.code === 'ROOST_ERR_PAYLOAD_TOO_LARGE') return;
        expect(result.error.field).toBe(`envelope.${field}`);
        if (result.error.code === 'ROOST_ERR_UNSUPPORTED_VERSION') expect(field).toBe('v');
      }),
      { numRuns: 1_000 },
    );
  });

  it('valid envelopes with an unknown field added: refused, naming the field', () => {
    const unknownKey = fc.string({ maxLength: 20 }).filter((k) => !Object.prototype.hasOwnProperty.call(ENVELOPE_SCHEMA.properties, k));
    fc.assert(
      fc.property(envelopeArb, unknownKey, fc.jsonValue(), (env, key, value) => {
        const wire: Record<string, unknown> = { ...env, [key]: value };
        const result = tryDecode(JSON.stringify(wire));
        expect(result.ok).toBe(false);
        if (!result.ok && result.error.code !== 'ROOST_ERR_PAYLOAD_TOO_LARGE') {
          expect({ code: result.error.code, field: result.error.field }).toEqual({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: `envelope.${key}` });
        }
      }),
      { numRuns: 300 },
    );
  });

  it('encoded envelopes with a byte flipped: decoded validly or refused with a RoostError', () => {
    fc.assert(
      fc.property(envelopeArb, fc.nat(), fc.integer({ min: 0, max: 255 }), (env, at, byte) => {
        const bytes = Buffer.from(JSON.stringify(env), 'utf8');
        if (bytes.byteLength > DEFAULT_MAX_ENVELOPE_BYTES) return;
        bytes[at % bytes.byteLength] = byte;
        const result = tryDecode(bytes);
        if (!result.ok) return;
        // What decode accepts survives a re-encode unchanged (JSON text compared: -0 becomes 0).
        const text = JSON.stringify(result.env);
        expect(JSON.stringify(decodeEnvelope(encodeEnvelope(result.env)))).toBe(text);
        expect(JSON.stringify(validateEnvelope(viaJson(result.env)))).toBe(text);
      }),
      { numRuns: 500 },
    );
  });
});

// ---- the validator's quick check ----------------------------------------------------------------

describe('surelyValid (the quick check before the compiled validator)', () => {
  const schema = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true }).compile(ENVELOPE_SCHEMA);
  const many = (n: number, v = 'v'): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`h${i}`, v]));
  const EDGES: readonly unknown[] = [
    undefined, null, 0, -0, 1, 2, -1, 1.5, 1_000_000, 1_000_001, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, Infinity, -Infinity, NaN,
    '', ' ', 'a', 'A'.repeat(64), 'A'.repeat(65), 'a/b', '/a', 'a/', 'a//b', 'a.b', 'a b', 'x'.repeat(256), 'x'.repeat(257), 'é', '😀'.repeat(128), '😀'.repeat(129),
    uuidv7(), uuidv7().toUpperCase(), randomUUID(), `${uuidv7()}\n`, 'task', 'result', 'chunk', 'other', true, false, [], {}, [1], ['v'], { a: 1 }, () => 1, 10n,
    { k: 'x'.repeat(8192) }, { k: 'x'.repeat(8193) }, { k: '😀'.repeat(4097) }, { ['k'.repeat(128)]: 'v' }, { ['k'.repeat(129)]: 'v' }, { ['😀'.repeat(65)]: 'v' },
    many(64), many(65), many(3, ''), { k: 1 }, { k: null }, { k: ['v'] }, { n: 1 },
  ];
  const edge = fc.constantFrom(...EDGES);
  const value = fc.oneof({ weight: 4, arbitrary: edge }, { weight: 1, arbitrary: fc.jsonValue() }, { weight: 1, arbitrary: fc.anything() });
  const key = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...FIELDS) },
    { weight: 1, arbitrary: fc.constantFrom('extra', '__proto__', 'toString', 'constructor', '') },
    { weight: 1, arbitrary: fc.string({ maxLength: 10 }) },
  );

  it('never accepts what the schema refuses: each field of a valid envelope set to each edge value', () => {
    const base = sample();
    for (const field of [...FIELDS, 'extra']) {
      for (const v of EDGES) {
        const wire: Record<string, unknown> = { ...base };
        if (v === undefined) delete wire[field];
        else wire[field] = v;
        if (surelyValid(wire)) expect(schema(wire), `${field} = ${String(v).slice(0, 40)}`).toBe(true);
      }
    }
  });

  it('never accepts what the schema refuses: valid envelopes with fields corrupted, dropped or added', () => {
    fc.assert(
      fc.property(envelopeArb, fc.array(fc.tuple(key, value), { maxLength: 3 }), fc.boolean(), (env, changes, inherit) => {
        const wire: Record<string, unknown> = { ...env };
        for (const [k, v] of changes) {
          if (v === undefined) delete wire[k];
          else Object.defineProperty(wire, k, { value: v, enumerable: true, writable: true, configurable: true });
        }
        // an enumerable inherited key, which the schema's for … in sees too
        const input = inherit ? Object.assign(Object.create({ inherited: 1 }) as Record<string, unknown>, wire) : wire;
        if (surelyValid(input)) expect(schema(input)).toBe(true);
      }),
      { numRuns: 5_000 },
    );
  });

  it('accepts the envelopes Roost makes (every field present, or optional ones absent)', () => {
    fc.assert(
      fc.property(envelopeArb, fc.subarray(Object.keys(OPTIONAL_DEFAULTS)), (env, drop) => {
        let wire: Record<string, unknown> = { ...env };
        for (const k of drop) wire = without(wire, k);
        const quick = surelyValid(wire);
        expect(schema(wire)).toBe(true);
        // longer in UTF-16 units than the schema's code points: the quick check may leave it to the validator
        const long = Object.entries(env.headers).some(([k, v]) => k.length > 128 || v.length > 8192) || (env.idempotencyKey?.length ?? 0) > 256;
        if (!long) expect(quick).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

// ---- specific errors --------------------------------------------------------------------------

describe('decodeEnvelope errors: code and field', () => {
  it('a number literal that overflows a double → ROOST_ERR_ENVELOPE_INVALID naming its path', () => {
    const env = sample({ payload: { x: [1, 2] } });
    const text = JSON.stringify(env).replace('[1,2]', '[1,-1e400]');
    expectCode(() => decodeEnvelope(text), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload.x[1]');
    const digits = JSON.stringify(env).replace('[1,2]', `[1,${'9'.repeat(400)}]`);
    expectCode(() => decodeEnvelope(digits), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload.x[1]');
    // Large but finite, and a tiny exponent, still decode.
    const fine = JSON.stringify(env).replace('[1,2]', '[1.7e308,1e-400]');
    expect(decodeEnvelope(fine).payload).toEqual({ x: [1.7e308, 0] });
  });

  it('text that is not JSON → ROOST_ERR_ENVELOPE_PARSE, field envelope, the SyntaxError as cause', () => {
    for (const text of ['', '{', '{"v":1,}', 'undefined', "{'v':1}", 'NaN', '\u0000']) {
      const error = expectCode(() => decodeEnvelope(text), 'ROOST_ERR_ENVELOPE_PARSE', 'envelope');
      expect(error.cause).toBeInstanceOf(SyntaxError);
      expect(error.retryable).toBe(false);
    }
    expectCode(() => decodeEnvelope(Buffer.from('{"v":')), 'ROOST_ERR_ENVELOPE_PARSE', 'envelope');
  });

  it('input that is neither bytes nor a string → ROOST_ERR_ENVELOPE_PARSE', () => {
    for (const input of [42, null, undefined, { v: 1 }, [1, 2], new ArrayBuffer(4)]) {
      const error = expectCode(() => decodeEnvelope(input as unknown as string), 'ROOST_ERR_ENVELOPE_PARSE', 'envelope');
      expect(error.expected).toBe('bytes or a string of JSON');
    }
  });

  it('JSON that is not an object → ROOST_ERR_ENVELOPE_INVALID, field envelope', () => {
    const cases: [string, string][] = [
      ['null', 'null (null)'],
      ['[]', '[] (array)'],
      ['42', '42 (number)'],
      ['"x"', '"x" (string)'],
      ['true', 'true (boolean)'],
    ];
    for (const [text, received] of cases) {
      const error = expectCode(() => decodeEnvelope(text), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope');
      expect(error.received).toBe(received);
    }
  });

  it('a field of the wrong type → ROOST_ERR_ENVELOPE_INVALID naming it', () => {
    const wrong: Record<string, readonly unknown[]> = {
      v: ['1', true, null, 1.5, [1]],
      id: [42, null, true, {}, ['x']],
      traceId: [42, null, {}],
      parentId: [42, true, {}, []],
      tenant: [42, null, [], {}],
      from: [42, null, []],
      to: [42, null, {}],
      kind: [42, null, 'Task', 'tasks', ''],
      headers: ['x', 42, null, [], ['a']],
      deadline: ['1', true, {}, 1.5],
      createdAt: ['1', null, 1.5, {}],
      attempt: ['1', null, 1.5, true],
      idempotencyKey: [42, true, {}, []],
    };
    expect(Object.keys(wrong).sort()).toEqual(FIELDS.filter((f) => f !== 'payload').sort());
    for (const [field, values] of Object.entries(wrong)) {
      for (const value of values) {
        const error = expectCode(() => decodeEnvelope(JSON.stringify(sample({ [field]: value }))), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}`);
        expect(error.expected, field).toMatch(/\S/);
        expect(error.message).toContain(`envelope.${field}`);
      }
    }
  });

  it('a value out of range → ROOST_ERR_ENVELOPE_INVALID naming the field', () => {
    const cases: [string, unknown][] = [
      ['attempt', 0],
      ['attempt', -1],
      ['attempt', 1_000_001],
      ['createdAt', -1],
      ['createdAt', MAX_EPOCH_MS + 1],
      ['deadline', -1],
      ['deadline', MAX_EPOCH_MS + 1],
      ['idempotencyKey', ''],
      ['idempotencyKey', 'k'.repeat(257)],
      ['headers', Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`h${i}`, 'x']))],
      ['headers', { ['k'.repeat(129)]: 'x' }],
      ['headers', { k: 'v'.repeat(8_193) }],
      ['headers', { k: 1 }],
      ['headers', { k: null }],
    ];
    for (const [field, value] of cases) {
      expectCode(() => decodeEnvelope(JSON.stringify(sample({ [field]: value }))), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}`);
    }
  });

  it('accepts the limits themselves', () => {
    const ok: Record<string, unknown> = {
      attempt: 1_000_000,
      createdAt: MAX_EPOCH_MS,
      deadline: 0,
      idempotencyKey: '😀'.repeat(256), // 256 code points, 512 UTF-16 units: lengths count code points
      headers: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [i === 0 ? 'k'.repeat(128) : `h${i}`, i === 1 ? 'v'.repeat(8_192) : ''])),
    };
    const env = sample(ok);
    expect(decodeEnvelope(JSON.stringify(env))).toEqual(env);
    expect(decodeEnvelope(JSON.stringify(sample({ createdAt: 0, idempotencyKey: 'k' })))).toMatchObject({ createdAt: 0, idempotencyKey: 'k' });
  });

  it('a missing required field → ROOST_ERR_ENVELOPE_INVALID naming it, received "nothing"', () => {
    expect(REQUIRED.length).toBe(10);
    for (const field of REQUIRED) {
      const error = expectCode(() => decodeEnvelope(JSON.stringify(without(sample(), field))), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}`);
      expect(error.received).toBe('nothing');
    }
  });

  it('a missing optional field decodes to null (headers to {})', () => {
    for (const [field, value] of Object.entries(OPTIONAL_DEFAULTS)) {
      const decoded = decodeEnvelope(JSON.stringify(without(sample(), field))) as unknown as Record<string, unknown>;
      expect(decoded[field]).toEqual(value);
      expect(Object.keys(decoded)).toHaveLength(FIELDS.length);
    }
    const bare = REQUIRED.reduce<Record<string, unknown>>((acc, k) => ({ ...acc, [k]: sample()[k] }), {});
    expect(decodeEnvelope(JSON.stringify(bare))).toEqual({ ...bare, ...OPTIONAL_DEFAULTS });
  });

  it('an unknown field → ROOST_ERR_ENVELOPE_INVALID naming it', () => {
    for (const key of ['extra', 'V', 'trace_id', '__proto__', '']) {
      const text = JSON.stringify(sample()).replace(/^\{/, `{${JSON.stringify(key)}:1,`);
      const error = expectCode(() => decodeEnvelope(text), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${key}`);
      expect(error.expected).toBe('no field outside the envelope schema');
    }
  });

  it('another major version → ROOST_ERR_UNSUPPORTED_VERSION, checked before the other fields', () => {
    for (const v of [2, 0, -1, 99]) {
      const error = expectCode(() => decodeEnvelope(JSON.stringify(sample({ v }))), 'ROOST_ERR_UNSUPPORTED_VERSION', 'envelope.v');
      expect(error.received).toBe(`${v} (number)`);
      expect(error.retryable).toBe(false);
    }
    // a v2 envelope may look nothing like v1: still reported as a version problem
    expectCode(() => decodeEnvelope('{"v":2,"body":"new shape"}'), 'ROOST_ERR_UNSUPPORTED_VERSION', 'envelope.v');
    expect(ENVELOPE_VERSION).toBe(1);
  });

  it('bad ids: a v4 UUID, upper case, wrong variant, no dashes → ROOST_ERR_ENVELOPE_INVALID naming the field', () => {
    const good = uuidv7();
    const bad = [randomUUID(), good.toUpperCase(), `${good.slice(0, 19)}c${good.slice(20)}`, good.replaceAll('-', ''), `${good} `, `{${good}}`];
    expect(bad[0]).not.toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/); // randomUUID is version 4
    for (const field of ['id', 'traceId', 'parentId']) {
      for (const id of bad) {
        expectCode(() => decodeEnvelope(JSON.stringify(sample({ [field]: id }))), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}`);
      }
    }
  });

  it('bad names: a space, 65 characters, empty, other characters → ROOST_ERR_ENVELOPE_INVALID', () => {
    for (const field of ['tenant', 'from']) {
      for (const name of ['a b', 'x'.repeat(65), '', 'a/b', 'é', 'a\n', 'tenant!']) {
        expectCode(() => decodeEnvelope(JSON.stringify(sample({ [field]: name }))), 'ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}`);
      }
      for (const name of ['x'.repeat(64), 'A.b-c_9', '.', '-', DEFAULT_TENANT]) {
        expect(decodeEnvelope(JSON.stringify(sample({ [field]: name })))[field as 'tenant']).toBe(name);
      }
    }
    expect(isName('x'.repeat(64)) && !isName('x'.repeat(65)) && !isName('') && !isName('a b') && !isName(5)).toBe(true);
    expect(NAME_PATTERN).toBe('^[A-Za-z0-9._-]{1,64}$');
  });

  it('addresses: names joined by /, optional leading /, at most 256 characters', () => {
    for (const to of ['a b', '', 'a//b', 'a/', '/', '//a', 'a/b c', 'x'.repeat(257), `/${'x'.repeat(256)}`]) {
      expectCode(() => decodeEnvelope(JSON.stringify(sample({ to }))), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.to');
    }
    for (const to of ['billing', '/a/b', 'tenant.a/agent-1/inbox_2', 'x'.repeat(256), `/${'x'.repeat(255)}`, 'x'.repeat(100)]) {
      expect(decodeEnvelope(JSON.stringify(sample({ to }))).to).toBe(to);
    }
  });

  it('each envelope kind is accepted', () => {
    expect([...ENVELOPE_KINDS]).toEqual(['task', 'result', 'error', 'event', 'chunk']);
    for (const kind of ENVELOPE_KINDS) expect(decodeEnvelope(JSON.stringify(sample({ kind }))).kind).toBe(kind);
  });
});

describe('the size cap', () => {
  /** A valid envelope whose JSON is exactly `size` bytes. */
  function envelopeOfSize(size: number): string {
    const base = JSON.stringify(sample({ payload: '' }));
    const text = JSON.stringify(sample({ payload: 'p'.repeat(size - Buffer.byteLength(base)) }));
    expect(Buffer.byteLength(text)).toBe(size);
    return text;
  }

  it('accepts exactly the cap and refuses one byte more (bytes and strings, default and custom caps)', () => {
    for (const max of [DEFAULT_MAX_ENVELOPE_BYTES, 1_000, 10_000]) {
      const options = max === DEFAULT_MAX_ENVELOPE_BYTES ? {} : { maxBytes: max };
      expect(decodeEnvelope(envelopeOfSize(max), options).v).toBe(1);
      expect(decodeEnvelope(Buffer.from(envelopeOfSize(max)), options).v).toBe(1);
      const over = envelopeOfSize(max + 1);
      const e1 = expectCode(() => decodeEnvelope(over, options), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
      expect(e1).toMatchObject({ details: { size: max + 1, max }, expected: `at most ${max} bytes`, received: `${max + 1} bytes`, retryable: false });
      expectCode(() => decodeEnvelope(Buffer.from(over), options), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    }
  });

  it('refuses oversized input before parsing it: huge invalid JSON is PAYLOAD_TOO_LARGE, and JSON.parse is never called', () => {
    const parse = vi.spyOn(JSON, 'parse');
    const junk = '{'.repeat(DEFAULT_MAX_ENVELOPE_BYTES + 1);
    expectCode(() => decodeEnvelope(junk), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expectCode(() => decodeEnvelope(Buffer.from(junk)), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expectCode(() => decodeEnvelope(new Uint8Array(5_000_000)), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expectCode(() => decodeEnvelope('not json at all', { maxBytes: 10 }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expect(parse).not.toHaveBeenCalled();
    // the same junk under the cap is a parse error: the cap was what stopped it
    expectCode(() => decodeEnvelope('{'.repeat(100)), 'ROOST_ERR_ENVELOPE_PARSE', 'envelope');
    expect(parse).toHaveBeenCalledTimes(1);
  });

  it('measures strings in UTF-8 bytes, not characters', () => {
    const max = 1_000;
    // 400 characters but 800 bytes of payload: over a 1,000-byte cap only with the rest of the envelope
    const base = Buffer.byteLength(JSON.stringify(sample({ payload: '' })));
    const chars = Math.ceil((max - base) / 2) + 1;
    const text = JSON.stringify(sample({ payload: 'é'.repeat(chars) }));
    expect(text.length).toBeLessThanOrEqual(max);
    const bytes = Buffer.byteLength(text);
    expect(bytes).toBeGreaterThan(max);
    const error = expectCode(() => decodeEnvelope(text, { maxBytes: max }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expect(error.details).toEqual({ size: bytes, max });
    // and a string whose length × 3 is over the cap but whose bytes are not is fine
    const ascii = envelopeOfSize(900);
    expect(ascii.length * 3).toBeGreaterThan(max);
    expect(decodeEnvelope(ascii, { maxBytes: max }).v).toBe(1);
  });

  it('lets a larger custom cap through what the default refuses', () => {
    const big = envelopeOfSize(DEFAULT_MAX_ENVELOPE_BYTES + 10_000);
    expectCode(() => decodeEnvelope(big), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    const env = decodeEnvelope(big, { maxBytes: 2 * DEFAULT_MAX_ENVELOPE_BYTES });
    expectCode(() => encodeEnvelope(env), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expect(encodeEnvelope(env, { maxBytes: 2 * DEFAULT_MAX_ENVELOPE_BYTES }).toString('utf8')).toBe(big);
  });
});

describe('encodeEnvelope errors', () => {
  it('a BigInt payload → ROOST_ERR_ENVELOPE_INVALID with the TypeError as cause', () => {
    const error = expectCode(() => encodeEnvelope(sample({ payload: { n: 10n } }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload');
    expect(error.cause).toBeInstanceOf(TypeError);
    expect(error.expected).toBe('a JSON-serialisable value');
  });

  it('a circular payload → ROOST_ERR_ENVELOPE_INVALID', () => {
    const payload: Record<string, unknown> = { a: 1 };
    payload['self'] = payload;
    const error = expectCode(() => encodeEnvelope(sample({ payload }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload');
    expect(error.cause).toBeInstanceOf(TypeError);
  });

  it('a payload JSON would drop (a function) is refused, so encode never makes bytes decode refuses', () => {
    expectCode(() => encodeEnvelope(sample({ payload: () => 1 }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload');
    expectCode(() => encodeEnvelope(sample({ payload: { toJSON: () => undefined } }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload');
  });

  it('an invalid envelope is refused before it is encoded, with the validator’s code and field', () => {
    expectCode(() => encodeEnvelope(sample({ tenant: 'no spaces' }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.tenant');
    expectCode(() => encodeEnvelope(sample({ v: 2 }) as unknown as Envelope), 'ROOST_ERR_UNSUPPORTED_VERSION', 'envelope.v');
    expectCode(() => encodeEnvelope(without(sample(), 'payload') as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.payload');
    expectCode(() => encodeEnvelope(sample({ extra: true }) as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope.extra');
    expectCode(() => encodeEnvelope(null as unknown as Envelope), 'ROOST_ERR_ENVELOPE_INVALID', 'envelope');
  });

  it('over a custom cap → ROOST_ERR_PAYLOAD_TOO_LARGE with the size and the cap', () => {
    const env = sample({ payload: 'x'.repeat(500) }) as unknown as Envelope;
    const size = Buffer.byteLength(JSON.stringify(env));
    const error = expectCode(() => encodeEnvelope(env, { maxBytes: 400 }), 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'envelope');
    expect(error.details).toEqual({ size, max: 400 });
    expect(encodeEnvelope(env, { maxBytes: size }).byteLength).toBe(size);
  });

  it('omitted optional fields stay omitted on the wire and decode to null', () => {
    const env = without(without(sample(), 'parentId'), 'headers') as unknown as Envelope;
    const wire = JSON.parse(encodeEnvelope(env).toString('utf8')) as Record<string, unknown>;
    expect(wire).not.toHaveProperty('parentId');
    expect(decodeEnvelope(JSON.stringify(wire))).toMatchObject({ parentId: null, headers: {} });
  });
});

// ---- UUIDv7 -----------------------------------------------------------------------------------

const UUIDV7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('uuidv7', () => {
  it('makes lower-case RFC 9562 version-7 ids with the RFC variant', () => {
    for (let i = 0; i < 1_000; i++) {
      const id = uuidv7();
      expect(id).toMatch(UUIDV7_RE);
      expect(id[14]).toBe('7'); // version nibble
      expect(['8', '9', 'a', 'b']).toContain(id[19]); // variant 0b10xx
      expect(isUuidV7(id)).toBe(true);
    }
  });

  it('is strictly increasing over 100,000 ids made in a tight loop', () => {
    const ids = new Array<string>(100_000);
    for (let i = 0; i < ids.length; i++) ids[i] = uuidv7();
    let violations = 0;
    for (let i = 1; i < ids.length; i++) if (!(ids[i - 1]! < ids[i]!)) violations++;
    expect(violations).toBe(0);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => UUIDV7_RE.test(id))).toBe(true);
  });

  it('carries the current time', () => {
    const before = Date.now();
    const t = uuidv7Time(uuidv7());
    // the counter may have borrowed a few ms ahead during the 100k loop above
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThan(Date.now() + 1_000);
  });

  it('uuidv7Time reads the RFC 9562 example and rejects nothing it should not parse', () => {
    // RFC 9562 appendix A.6: 017F22E2-79B0-7CC3-98C4-DC0C0C07398F is 2022-02-22T19:22:22.000Z
    expect(uuidv7Time('017f22e2-79b0-7cc3-98c4-dc0c0c07398f')).toBe(Date.UTC(2022, 1, 22, 19, 22, 22));
    expect(isUuidV7('017f22e2-79b0-7cc3-98c4-dc0c0c07398f')).toBe(true);
    expect(isUuidV7('017F22E2-79B0-7CC3-98C4-DC0C0C07398F')).toBe(false);
    expect(isUuidV7(randomUUID())).toBe(false);
    expect(isUuidV7(42)).toBe(false);
  });

  // The tests below move this process's clock for ids into the future: keep them last.

  it('uuidv7Time returns the ms given', () => {
    const base = Date.now() + 60_000;
    for (const t of [base, base + 1, base + 999, base + 86_400_000]) {
      expect(uuidv7Time(uuidv7(t))).toBe(t);
    }
  });

  it('counts up by one in the low 48 bits of rand_b within one millisecond, from a random start in their lower half', () => {
    const t = Date.now() + 2 * 86_400_000;
    const ids = Array.from({ length: 10_000 }, () => uuidv7(t));
    const low48 = (id: string): number => parseInt(id.slice(24), 16);
    for (let i = 1; i < ids.length; i++) {
      expect(ids[i - 1]! < ids[i]!).toBe(true);
      expect(low48(ids[i]!)).toBe(low48(ids[i - 1]!) + 1); // across the 4,096-id steps of the cached head too
      expect(ids[i]!.slice(0, 24)).toBe(ids[0]!.slice(0, 24)); // time, version, rand_a and the top of rand_b stay
    }
    expect(ids.every((id) => uuidv7Time(id) === t && UUIDV7_RE.test(id))).toBe(true);
    expect(low48(ids[0]!)).toBeLessThan(2 ** 47);
    // The next millisecond draws fresh random bits: its ids are not a continuation of the count.
    const next = [uuidv7(t + 1), uuidv7(t + 1)];
    expect(next[0]! > ids.at(-1)!).toBe(true);
    expect(low48(next[1]!)).toBe(low48(next[0]!) + 1);
    expect(next[0]!.slice(14, 23)).not.toBe(ids[0]!.slice(14, 23)); // 26 random bits differ (2^-26 to fail by chance)
  });

  it('an id made with an earlier `now` than a previous one still sorts after it (monotonic)', () => {
    const t = Date.now() + 3 * 86_400_000;
    const a = uuidv7(t);
    const b = uuidv7(t - 10_000);
    const c = uuidv7(0);
    const d = uuidv7();
    expect(a < b && b < c && c < d).toBe(true);
    expect(uuidv7Time(b)).toBe(t); // keeps the latest time and counts on
    expect(uuidv7Time(d)).toBe(t);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: t + 1_000 }), { minLength: 2, maxLength: 50 }), (times) => {
        const ids = times.map((ms) => uuidv7(ms));
        for (let i = 1; i < ids.length; i++) expect(ids[i - 1]! < ids[i]!).toBe(true);
        expect(ids.every((id) => UUIDV7_RE.test(id))).toBe(true);
      }),
    );
  });
});

describe('formatUuidv7', () => {
  it('makes again the id uuidv7 made, from its time and bits', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 2 ** 48 - 1 }), { minLength: 1, maxLength: 50 }), (times) => {
        for (const ms of times) {
          const id = uuidv7(ms);
          expect(formatUuidv7(lastUuidv7Time(), lastIdBits.a, lastIdBits.b, lastIdBits.c)).toBe(id);
        }
      }),
    );
    // Many ids in one millisecond: the counter part changes, and crosses its 4,096 boundary.
    for (let i = 0; i < 10_000; i++) {
      const id = uuidv7();
      expect(formatUuidv7(lastUuidv7Time(), lastIdBits.a, lastIdBits.b, lastIdBits.c)).toBe(id);
    }
  });
});

describe('deriveUuidv7', () => {
  it('keeps the parent\'s time, is a UUIDv7, and is the same for the same inputs only', () => {
    const parent = uuidv7();
    const id = deriveUuidv7(parent, 'a>b', 0);
    const made = { ...lastIdBits };
    expect(id).toMatch(UUIDV7_RE);
    expect(uuidv7Time(id)).toBe(uuidv7Time(parent));
    expect(deriveUuidv7(parent, 'a>b', 0)).toBe(id);
    expect(deriveUuidv7(parent, 'a>b', 1)).not.toBe(id);
    expect(deriveUuidv7(parent, 'a>c', 0)).not.toBe(id);
    expect(deriveUuidv7(uuidv7(), 'a>b', 0)).not.toBe(id);
    // The send path reads no string: the bits of an id it made, or of a derived one, are handed on.
    expect(made).toEqual(idBits(id));
    const child = uuidv7();
    expect({ ...lastIdBits }).toEqual(idBits(child));
    const bits = idBits(id);
    expect(deriveId(id.slice(0, 13), bits.a, bits.b, bits.c, saltHash('b>c'), 2)).toBe(deriveUuidv7(id, 'b>c', 2));
  });

  it('does not collide over 300,000 derivations from parents of one millisecond, and its 74 bits are evenly set', () => {
    const seen = new Set<string>();
    const ones = new Array<number>(74).fill(0);
    const parents = Array.from({ length: 3_000 }, () => uuidv7());
    for (const parent of parents) {
      for (let n = 0; n < 100; n++) {
        const id = deriveUuidv7(parent, n % 2 === 0 ? 'node-a>node-b' : 'node-a>node-c', n >> 1);
        seen.add(id);
        if (seen.size <= 20_000) {
          // rand_a (12 bits), the variant's 2 free bits, then 60 bits of rand_b
          const hex = id.slice(15, 18) + id.slice(19, 23) + id.slice(24);
          const bits = [...hex].map((h) => parseInt(h, 16).toString(2).padStart(4, '0')).join('');
          const free = bits.slice(0, 12) + bits.slice(14); // drop the variant's fixed '10'
          for (let b = 0; b < 74; b++) if (free[b] === '1') ones[b]!++;
        }
      }
    }
    expect(seen.size).toBe(300_000);
    // Each bit is set in 50 % of 20,000 ids, give or take 5 standard deviations (±1.8 %).
    for (const count of ones) expect(Math.abs(count / 20_000 - 0.5)).toBeLessThan(0.018);
  });
});

describe('uuidv7 with an odd clock', () => {
  it('a fractional or out-of-range time never corrupts this or later ids', () => {
    expect(isUuidV7(uuidv7(Date.now() + 0.5))).toBe(true);
    expect(isUuidV7(uuidv7(-5))).toBe(true);
    expect(isUuidV7(uuidv7(Number.NaN))).toBe(true);
    expect(isUuidV7(uuidv7())).toBe(true);
  });
});

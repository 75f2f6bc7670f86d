/**
 * The streaming API over real sockets: Server-Sent Events (resumable with Last-Event-ID) and the
 * WebSocket API (first-frame timeout, ping/pong, a dead peer, a slow consumer).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { node, type Envelope, type Runtime } from '../../src/index.js';
import { deferred, until } from '../helpers/runtime.js';
import { call, startService, type Running } from '../helpers/service.js';

interface SseFrame {
  id: string | null;
  event: string;
  data: Record<string, unknown>;
}

/** Reads a Server-Sent Events response until it closes (or `limit` frames). */
async function sse(url: string, headers: Record<string, string> = {}, limit = Infinity): Promise<{ status: number; frames: SseFrame[] }> {
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers } });
  const frames: SseFrame[] = [];
  if (res.body === null) return { status: res.status, frames };
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (block.startsWith(':')) continue; // a comment (keep-alive)
      const frame: SseFrame = { id: null, event: 'message', data: {} };
      for (const line of block.split('\n')) {
        const [k, ...rest] = line.split(': ');
        const v = rest.join(': ');
        if (k === 'id') frame.id = v;
        else if (k === 'event') frame.event = v;
        else if (k === 'data') frame.data = JSON.parse(v) as Record<string, unknown>;
      }
      frames.push(frame);
      if (frames.length >= limit) return { status: res.status, frames };
    }
  }
  return { status: res.status, frames };
}

/** A WebSocket client that collects the server's frames. */
function client(url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}): Promise<{ ws: WebSocket; frames: Record<string, unknown>[]; next(type: string, timeoutMs?: number): Promise<Record<string, unknown>>; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), options);
  const frames: Record<string, unknown>[] = [];
  const waiters: { type: string; resolve: (f: Record<string, unknown>) => void }[] = [];
  let seen = 0;
  ws.on('message', (data) => {
    const f = JSON.parse((data as Buffer).toString('utf8')) as Record<string, unknown>;
    frames.push(f);
    for (const w of [...waiters]) {
      if (w.type === f['type']) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(f);
      }
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('open', () =>
      resolve({
        ws,
        frames,
        closed,
        next(type: string, timeoutMs = 5_000) {
          const found = frames.slice(seen).find((f) => f['type'] === type);
          if (found !== undefined) {
            seen = frames.indexOf(found) + 1;
            return Promise.resolve(found);
          }
          return new Promise((res, rej) => {
            const timer = setTimeout(() => rej(new Error(`no ${type} frame within ${timeoutMs} ms (got ${JSON.stringify(frames.map((x) => x['type']))})`)), timeoutMs);
            waiters.push({
              type,
              resolve: (f) => {
                clearTimeout(timer);
                seen = frames.indexOf(f) + 1;
                res(f);
              },
            });
          });
        },
      }),
    );
  });
}

let s: Running;
let gate = deferred();

function flows(rt: Runtime): void {
  rt.flow({
    name: 'steps',
    edges: [
      node('one', (env: Envelope<number>) => env.payload + 1).to(
        node('two', async (env: Envelope<number>) => {
          await gate.promise;
          return env.payload + 1;
        }),
      ),
    ],
  });
  rt.flow({
    name: 'chatty',
    edges: [
      node('loop', async (env: Envelope<number>, ctx) => {
        // Many runs of many events: a trace that keeps publishing while a client stops reading.
        for (let i = 0; i < env.payload; i++) await ctx.emit(i, { to: 'sink' });
        return 'done';
      }).to(node('sink', (env: Envelope<number>) => env.payload)),
    ],
  });
}

beforeAll(async () => {
  s = await startService(flows);
});
afterAll(async () => {
  gate.resolve();
  await s.close();
});

describe('Server-Sent Events', () => {
  it('streams a trace\'s events as they happen, then its end, and closes', async () => {
    gate = deferred();
    const submitted = await call(`${s.url}/v1/flows/steps/tasks`, 'POST', { input: 1 });
    const traceId = String(submitted.json['traceId']);
    const reading = sse(`${s.url}/v1/traces/${traceId}/events`);
    setTimeout(() => gate.resolve(), 100);
    const { status, frames } = await reading;
    expect(status).toBe(200);
    const types = frames.map((f) => f.event);
    expect(types[0]).toBe('trace_start'); // still in the ring: sent on connect
    expect(types).toEqual(expect.arrayContaining(['node_start', 'node_success', 'trace_success']));
    expect(types.at(-1)).toBe('end');
    expect(frames.at(-1)!.data).toMatchObject({ traceId, status: 'succeeded', result: 3 });
    const ids = frames.filter((f) => f.id !== null).map((f) => Number(f.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b)); // increasing ids
  });

  it('resumes after Last-Event-ID with only what came after it', async () => {
    gate = deferred();
    gate.resolve();
    const done = await call(`${s.url}/v1/flows/steps/tasks?wait=2000`, 'POST', { input: 10 });
    const traceId = String(done.json['traceId']);
    const all = await sse(`${s.url}/v1/traces/${traceId}/events`);
    const numbered = all.frames.filter((f) => f.id !== null);
    expect(numbered.length).toBeGreaterThanOrEqual(5);
    const cut = numbered[2]!;
    const rest = await sse(`${s.url}/v1/traces/${traceId}/events`, { 'last-event-id': String(cut.id) });
    expect(rest.frames.filter((f) => f.id !== null).map((f) => f.id)).toEqual(numbered.slice(3).map((f) => f.id));
    expect(rest.frames.at(-1)).toMatchObject({ event: 'end', data: { status: 'succeeded', result: 12 } });
    const viaQuery = await sse(`${s.url}/v1/traces/${traceId}/events?lastEventId=${String(numbered.at(-1)!.id)}`);
    expect(viaQuery.frames.map((f) => f.event)).toEqual(['end']);
  });

  it('is not found for another tenant', async () => {
    const done = await call(`${s.url}/v1/flows/steps/tasks`, 'POST', { input: 1 }, { 'x-roost-tenant': 'a' });
    const r = await call(`${s.url}/v1/traces/${String(done.json['traceId'])}/events`, 'GET', undefined, { 'x-roost-tenant': 'b' });
    expect(r.status).toBe(404);
  });
});

describe('WebSocket /v1/ws', () => {
  it('submits, streams the trace\'s events and its end, subscribes to another trace, and cancels one', async () => {
    gate = deferred();
    const c = await client(`${s.url}/v1/ws`, { headers: { 'x-roost-tenant': 'ws-tenant' } });
    expect(await c.next('connected')).toMatchObject({ protocol: 1, tenant: 'ws-tenant' });
    c.ws.send(JSON.stringify({ type: 'submit', id: 'r1', flow: 'steps', input: 40 }));
    const submitted = await c.next('submitted');
    expect(submitted).toMatchObject({ id: 'r1', flow: 'steps', deduplicated: false });
    const traceId = String(submitted['traceId']);
    expect(await c.next('event')).toMatchObject({ traceId });
    gate.resolve();
    expect(await c.next('end')).toMatchObject({ traceId, status: 'succeeded', result: 42 });

    gate = deferred();
    const other = await call(`${s.url}/v1/flows/steps/tasks`, 'POST', { input: 1 }, { 'x-roost-tenant': 'ws-tenant' });
    c.ws.send(JSON.stringify({ type: 'subscribe', id: 'r2', traceId: other.json['traceId'] }));
    expect(await c.next('subscribed')).toMatchObject({ id: 'r2', status: 'running' });
    c.ws.send(JSON.stringify({ type: 'cancel', id: 'r3', traceId: other.json['traceId'] }));
    expect(await c.next('cancelled')).toMatchObject({ id: 'r3', cancelled: true });
    // The trace's end may come before or after the answer to the cancel: both must come.
    await until(() => c.frames.some((f) => f['type'] === 'end' && f['traceId'] === other.json['traceId']), 5_000, 'the cancelled trace to end');
    expect(c.frames.find((f) => f['type'] === 'end' && f['traceId'] === other.json['traceId'])).toMatchObject({ status: 'cancelled' });
    gate.resolve();

    // One Idempotency-Key over HTTP and over the WebSocket with the same input: one trace.
    const key = `both-${Math.random()}`;
    const viaHttp = await call(`${s.url}/v1/flows/steps/tasks?wait=5000`, 'POST', { input: 7, timeoutMs: 60_000 }, { 'x-roost-tenant': 'ws-tenant', 'idempotency-key': key });
    c.ws.send(JSON.stringify({ type: 'submit', id: 'r5', flow: 'steps', input: 7, idempotencyKey: key, subscribe: false }));
    expect(await c.next('submitted')).toMatchObject({ id: 'r5', traceId: viaHttp.json['traceId'], deduplicated: true });
    c.ws.send(JSON.stringify({ type: 'submit', id: 'r6', flow: 'steps', input: 8, idempotencyKey: key, subscribe: false }));
    expect(await c.next('error')).toMatchObject({ id: 'r6', error: { code: 'ROOST_ERR_IDEMPOTENCY_CONFLICT' } });

    c.ws.send('not json');
    expect(await c.next('error')).toMatchObject({ error: { code: 'ROOST_ERR_BAD_REQUEST', field: 'frame' } });
    c.ws.send(JSON.stringify({ type: 'frob' }));
    expect(await c.next('error')).toMatchObject({ error: { code: 'ROOST_ERR_BAD_REQUEST', field: 'frame.type' } });
    c.ws.send(JSON.stringify({ type: 'subscribe', id: 'r4', traceId: other.json['traceId'] }));
    // Another tenant's trace is not found over the WebSocket either.
    const stranger = await client(`${s.url}/v1/ws`, { headers: { 'x-roost-tenant': 'nosy' } });
    stranger.ws.send(JSON.stringify({ type: 'subscribe', id: 'x', traceId: other.json['traceId'] }));
    expect(await stranger.next('error')).toMatchObject({ id: 'x', error: { code: 'ROOST_ERR_NOT_FOUND' } });
    stranger.ws.close();
    c.ws.close();
  });
});

describe('WebSocket liveness and backpressure', () => {
  it('closes a client that sends no first frame in time (1008); a quiet client that answers pings stays', async () => {
    const short = await startServiceWith({ firstFrameMs: 300, pingMs: 200 });
    try {
      const silent = await client(`${short.url}/v1/ws`);
      const closed = await silent.closed;
      expect(closed.code).toBe(1008);
      const quiet = await client(`${short.url}/v1/ws`);
      quiet.ws.send(JSON.stringify({ type: 'ping' }));
      await quiet.next('pong');
      await new Promise((r) => setTimeout(r, 1_000)); // five ping intervals: ws answers pings by itself
      expect(quiet.ws.readyState).toBe(WebSocket.OPEN);
      quiet.ws.close();
      // A dead peer: it never answers the server's pings, and is closed.
      const dead = await client(`${short.url}/v1/ws`, { autoPong: false });
      dead.ws.send(JSON.stringify({ type: 'ping' }));
      const gone = await Promise.race([dead.closed, new Promise<null>((r) => setTimeout(() => r(null), 3_000))]);
      expect(gone).not.toBeNull();
    } finally {
      await short.close();
    }
  });

  it('tells connected clients the server is going away (1001) when it shuts down', async () => {
    const own = await startServiceWith({});
    const c = await client(`${own.url}/v1/ws`);
    await c.next('connected');
    await own.close();
    expect((await c.closed).code).toBe(1001);
  });

  it('drops a client that stops reading once its unsent frames pass the cap (1013)', { timeout: 30_000 }, async () => {
    const small = await startServiceWith({ maxBufferedBytes: 16_384 });
    try {
      const c = await client(`${small.url}/v1/ws`);
      await c.next('connected');
      // Stop reading at the TCP level: the server's writes pile up in its buffer.
      (c.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      // Enough events (tens of MB of frames) to fill the kernel's socket buffers on both sides first.
      c.ws.send(JSON.stringify({ type: 'submit', flow: 'chatty', input: 60_000 }));
      await new Promise((r) => setTimeout(r, 4_000));
      (c.ws as unknown as { _socket: { resume(): void } })._socket.resume();
      const closed = await Promise.race([c.closed, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
      expect(closed).toMatchObject({ code: 1013 });
    } finally {
      await small.close();
    }
  });
});

/** A service with short WebSocket timers or a small send buffer (keys of a roost.toml of its own). */
async function startServiceWith(o: { firstFrameMs?: number; pingMs?: number; maxBufferedBytes?: number }): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'roost-ws-'));
  const file = join(dir, 'roost.toml');
  writeFileSync(
    file,
    `[http]\nport = 0\n[websocket]\n${o.firstFrameMs === undefined ? '' : `first_frame_timeout_ms = ${o.firstFrameMs}\n`}${o.pingMs === undefined ? '' : `ping_interval_ms = ${o.pingMs}\n`}${o.maxBufferedBytes === undefined ? '' : `max_buffered_bytes = ${o.maxBufferedBytes}\n`}`,
  );
  return startService(flows, { env: { ROOST_CONFIG: file } });
}

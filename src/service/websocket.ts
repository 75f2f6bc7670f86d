/**
 * The WebSocket API, `/v1/ws`: submit tasks, subscribe to traces, cancel them, over one
 * connection. Frames are JSON objects tagged by `type` (docs/reference/http-api.md lists them).
 *
 * - The first client frame must come within `websocket.first_frame_timeout_ms` (15 s), or the
 *   connection is closed (1008).
 * - The server pings every `websocket.ping_interval_ms`; a client that did not answer the last
 *   ping is gone and is closed. A quiet subscriber that answers pings stays.
 * - A client that reads too slowly never makes the server hold more than
 *   `websocket.max_buffered_bytes` for it: past that it is closed (1013, "slow consumer").
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type {} from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { isUuidV7, uuidv7 } from '../envelope/uuid.js';
import { isName } from '../envelope/names.js';
import { RoostError, isRoostError } from '../errors.js';
import { tenantOf, tenantTrace, type ServiceContext } from './context.js';
import { asRoostError } from './errors.js';
import { admitTask, emitTask, taskFingerprint, type SubmitOptions } from './submit.js';
import { watchTrace } from './watch.js';

/** Frames held for a subscription made before its task was acknowledged, at most. */
const MAX_HELD_FRAMES = 4_096;

/** Close codes the server uses. */
export const WS_CLOSE = { noFirstFrame: 1008, slowConsumer: 1013, goingAway: 1001 } as const;

function bad(field: string, expected: string, value: unknown): RoostError {
  return new RoostError('ROOST_ERR_BAD_REQUEST', `${field}: expected ${expected}`, { field, expected, received: JSON.stringify(value)?.slice(0, 80) ?? 'nothing' });
}

/** Registers `/v1/ws` (the websocket plugin must be registered first). */
export function websocketRoute(app: FastifyInstance, ctx: ServiceContext): void {
  const settings = ctx.settings.websocket;
  app.get('/v1/ws', { websocket: true, schema: { summary: 'The WebSocket API: submit, subscribe, cancel (see docs/reference/http-api.md)', tags: ['streams'] } }, (socket: WebSocket, request: FastifyRequest) => {
    let tenant: string;
    try {
      tenant = tenantOf(request);
    } catch (error) {
      socket.send(JSON.stringify({ type: 'error', error: asRoostError(error).toJSON() }));
      socket.close(1008, 'bad tenant');
      return;
    }
    ctx.metrics.streamClients.inc({ kind: 'ws' });
    const watches = new Map<string, () => void>();
    let open = true;
    let answered = true;
    const closeAll = (): void => {
      if (!open) return;
      open = false;
      clearTimeout(firstFrame);
      clearInterval(pinger);
      for (const stop of watches.values()) stop();
      watches.clear();
      ctx.metrics.streamClients.dec({ kind: 'ws' });
    };
    const send = (frame: Record<string, unknown>): void => {
      if (!open) return;
      if (socket.bufferedAmount > settings.maxBufferedBytes) {
        closeAll();
        socket.close(WS_CLOSE.slowConsumer, 'slow consumer: too much unsent');
        return;
      }
      socket.send(JSON.stringify(frame));
    };
    const fail = (error: unknown, id: unknown): void => {
      const e = asRoostError(error);
      send({ type: 'error', ...(typeof id === 'string' ? { id } : {}), error: { code: e.code, message: e.message, ...(e.field === undefined ? {} : { field: e.field }) } });
    };
    const firstFrame = setTimeout(() => {
      closeAll();
      socket.close(WS_CLOSE.noFirstFrame, `no frame within ${settings.firstFrameTimeoutMs} ms`);
    }, settings.firstFrameTimeoutMs);
    const pinger = setInterval(() => {
      if (!answered) {
        closeAll();
        socket.terminate(); // no pong since the last ping: the peer is gone
        return;
      }
      answered = false;
      socket.ping();
    }, settings.pingIntervalMs);
    socket.on('pong', () => {
      answered = true;
    });
    socket.on('close', closeAll);
    socket.on('error', closeAll);

    /**
     * Follows a trace. With `held`, frames wait until the returned function is called (a submit
     * subscribes before the task starts, and its `submitted` reply must come first).
     */
    const subscribe = (flow: string, traceId: string, after: number, held = false): (() => void) => {
      if (watches.has(traceId)) return () => {};
      let queue: Record<string, unknown>[] | null = held ? [] : null;
      const out = (frame: Record<string, unknown>): void => {
        if (queue === null) send(frame);
        else if (queue.length < MAX_HELD_FRAMES) queue.push(frame);
        else {
          // A trace this chatty before its submission is even acknowledged: the client cannot keep up.
          queue = null;
          closeAll();
          socket.close(WS_CLOSE.slowConsumer, 'slow consumer: too many frames held');
        }
      };
      const stop = watchTrace(ctx.ring, ctx.runtime, ctx.store, flow, traceId, after, {
        event: (e) => out({ type: 'event', traceId, seq: e.seq, event: e.event }),
        gap: (from, to) => out({ type: 'gap', traceId, from, to }),
        end: (end) => {
          watches.delete(traceId);
          out({ type: 'end', ...end });
        },
      });
      if (open) watches.set(traceId, stop);
      else stop();
      return () => {
        const frames = queue ?? [];
        queue = null;
        for (const f of frames) send(f);
      };
    };

    const handle = async (frame: Record<string, unknown>): Promise<void> => {
      const id = frame['id'];
      switch (frame['type']) {
        case 'ping':
          send({ type: 'pong', ...(typeof id === 'string' ? { id } : {}) });
          return;
        case 'submit': {
          const flowName = frame['flow'];
          if (typeof flowName !== 'string' || !isName(flowName)) throw bad('frame.flow', 'a flow name', flowName);
          const flow = admitTask(ctx, flowName, tenant);
          const options: SubmitOptions = { tenant };
          const key = frame['idempotencyKey'];
          if (key !== undefined) {
            if (typeof key !== 'string' || key === '') throw bad('frame.idempotencyKey', 'a non-empty string', key);
            options.idempotencyKey = key;
            options.idempotencyFingerprint = taskFingerprint(frame['input']);
          }
          if (frame['deadline'] !== undefined) options.deadline = frame['deadline'] as number;
          if (frame['headers'] !== undefined) options.headers = frame['headers'] as Record<string, string>;
          // Subscribed before the task starts, under the id it will have: no event comes before the watch.
          const follow = frame['subscribe'] !== false;
          const planned = uuidv7();
          let release = (): void => {};
          if (follow && key === undefined) {
            options.traceId = planned;
            release = subscribe(flowName, planned, ctx.ring.nextSeq - 1, true);
          }
          let result: { traceId: string; deduplicated: boolean };
          try {
            result = await emitTask(ctx, flow, frame['input'] ?? null, options, ctx.spanOf(request));
          } catch (error) {
            watches.get(planned)?.();
            watches.delete(planned);
            throw error;
          }
          send({ type: 'submitted', ...(typeof id === 'string' ? { id } : {}), traceId: result.traceId, flow: flowName, deduplicated: result.deduplicated });
          release();
          if (follow && result.traceId !== planned) subscribe(flowName, result.traceId, 0); // a repeat of a key: the first trace
          return;
        }
        case 'subscribe': {
          const traceId = frame['traceId'];
          if (!isUuidV7(traceId)) throw bad('frame.traceId', 'a trace id (UUIDv7)', traceId);
          const after = frame['lastEventId'] ?? 0;
          if (typeof after !== 'number' || !Number.isInteger(after) || after < 0) throw bad('frame.lastEventId', 'a non-negative integer', after);
          const trace = await tenantTrace(ctx, traceId, tenant);
          send({ type: 'subscribed', ...(typeof id === 'string' ? { id } : {}), traceId, flow: trace.flow, status: trace.status });
          subscribe(trace.flow, traceId, after);
          return;
        }
        case 'unsubscribe': {
          const traceId = frame['traceId'];
          if (typeof traceId !== 'string') throw bad('frame.traceId', 'a trace id', traceId);
          watches.get(traceId)?.();
          watches.delete(traceId);
          send({ type: 'unsubscribed', traceId });
          return;
        }
        case 'cancel': {
          const traceId = frame['traceId'];
          if (!isUuidV7(traceId)) throw bad('frame.traceId', 'a trace id (UUIDv7)', traceId);
          const trace = await tenantTrace(ctx, traceId, tenant);
          const cancelled = (await ctx.runtime.getFlow(trace.flow)?.cancel(traceId)) ?? false;
          send({ type: 'cancelled', ...(typeof id === 'string' ? { id } : {}), traceId, cancelled });
          return;
        }
        default:
          throw bad('frame.type', 'one of submit, subscribe, unsubscribe, cancel, ping', frame['type']);
      }
    };

    socket.on('message', (data: Buffer, isBinary: boolean) => {
      clearTimeout(firstFrame);
      let frame: unknown;
      try {
        frame = JSON.parse(isBinary ? data.toString('utf8') : String(data));
      } catch {
        fail(bad('frame', 'a JSON object', String(data).slice(0, 80)), undefined);
        return;
      }
      if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
        fail(bad('frame', 'a JSON object', frame), undefined);
        return;
      }
      const f = frame as Record<string, unknown>;
      handle(f).catch((error: unknown) => {
        if (!isRoostError(error)) request.log.error({ err: error }, 'a WebSocket frame failed');
        fail(error, f['id']);
      });
    });
    send({ type: 'connected', protocol: 1, tenant });
  });
}

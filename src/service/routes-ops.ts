/**
 * Operations over HTTP: the dead-letter queue (list, show, replay, delete; scoped by tenant) and
 * the agents (state, capabilities, load; quarantine and restore; and the fleet's processes as
 * their presence tells them, when the service has a registry). Replays, deletions, quarantines
 * and restores are written as audit lines.
 */
import type { FastifyInstance } from 'fastify';
import { NAME_PATTERN } from '../envelope/names.js';
import { UUIDV7_PATTERN } from '../envelope/uuid.js';
import type { StoredDeadLetter } from '../store/store.js';
import { tenantOf, type ServiceContext } from './context.js';
import { notFound } from './errors.js';

const errorRef = { $ref: 'roost-error#' } as const;
const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: UUIDV7_PATTERN } } } as const;
const nameParam = { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: NAME_PATTERN } } } as const;

function letterView(d: StoredDeadLetter): Record<string, unknown> {
  return { id: d.id, flow: d.flow, node: d.node, traceId: d.traceId, tenant: d.tenant, attempts: d.attempts, error: d.error, createdAt: d.createdAt, envelope: d.envelope };
}

/** Registers the routes (see the module comment). */
export function opsRoutes(app: FastifyInstance, ctx: ServiceContext): void {
  const { runtime, store, fleet } = ctx;

  const tenantLetter = async (id: string, tenant: string): Promise<StoredDeadLetter> => {
    const letter = await store.getDeadLetter(id);
    if (letter === null || letter.tenant !== tenant) throw notFound('deadLetterId', id, 'dead letter');
    return letter;
  };

  app.get<{ Querystring: { flow?: string; limit?: number } }>(
    '/v1/dead-letters',
    {
      schema: {
        summary: "The tenant's dead letters, newest first",
        tags: ['dead letters'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { flow: { type: 'string', pattern: NAME_PATTERN }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request) => {
      const q = request.query;
      const letters = await store.listDeadLetters({ tenant: tenantOf(request), ...(q.flow === undefined ? {} : { flow: q.flow }), limit: q.limit ?? 100 });
      return { deadLetters: letters.map(letterView) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/dead-letters/:id',
    { schema: { summary: 'One dead letter, with its envelope and error', tags: ['dead letters'], params: idParam, response: { '4xx': errorRef, '5xx': errorRef } } },
    async (request) => letterView(await tenantLetter(request.params.id, tenantOf(request))),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/dead-letters/:id/replay',
    {
      schema: {
        summary: 'Replay a dead letter: a new trace at the node that failed it (attempt + 1)',
        tags: ['dead letters'],
        params: idParam,
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request, reply) => {
      const letter = await tenantLetter(request.params.id, tenantOf(request));
      const traceId = await runtime.replayDeadLetter(letter.id);
      request.log.info({ audit: 'dead_letter_replay', deadLetterId: letter.id, flow: letter.flow, node: letter.node, tenant: letter.tenant, traceId }, 'replayed a dead letter');
      return reply.code(202).send({ deadLetterId: letter.id, traceId, links: { trace: `/v1/traces/${traceId}` } });
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/dead-letters/:id',
    { schema: { summary: 'Delete a dead letter without replaying it', tags: ['dead letters'], params: idParam, response: { '4xx': errorRef, '5xx': errorRef } } },
    async (request, reply) => {
      const letter = await tenantLetter(request.params.id, tenantOf(request));
      await runtime.deleteDeadLetter(letter.id);
      request.log.info({ audit: 'dead_letter_delete', deadLetterId: letter.id, flow: letter.flow, tenant: letter.tenant }, 'deleted a dead letter');
      return reply.code(204).send();
    },
  );

  const agentView = (name: string): Record<string, unknown> => {
    const info = runtime.listAgents().find((a) => a.name === name);
    if (info === undefined) throw notFound('agent', name, 'agent');
    return { ...info };
  };

  app.get(
    '/v1/agents',
    { schema: { summary: "This process's agents (state, capabilities, load), and the fleet's processes by presence when the service has a registry", tags: ['agents'] } },
    () => (fleet === null ? { agents: runtime.listAgents() } : { agents: runtime.listAgents(), fleet: fleet.list() }),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/agents/:name',
    { schema: { summary: 'One agent', tags: ['agents'], params: nameParam, response: { '4xx': errorRef, '5xx': errorRef } } },
    (request) => agentView(request.params.name),
  );

  app.post<{ Params: { name: string } }>(
    '/v1/agents/:name/quarantine',
    {
      schema: {
        summary: 'Take an agent out of service: envelopes for it are refused or parked (its quarantine mode)',
        tags: ['agents'],
        params: nameParam,
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    (request) => {
      agentView(request.params.name);
      runtime.quarantine(request.params.name);
      request.log.warn({ audit: 'agent_quarantine', agent: request.params.name }, 'quarantined an agent on request');
      return agentView(request.params.name);
    },
  );

  app.post<{ Params: { name: string } }>(
    '/v1/agents/:name/restore',
    { schema: { summary: 'Bring a quarantined agent back', tags: ['agents'], params: nameParam, response: { '4xx': errorRef, '5xx': errorRef } } },
    (request) => {
      agentView(request.params.name);
      runtime.restore(request.params.name);
      request.log.info({ audit: 'agent_restore', agent: request.params.name }, 'restored an agent on request');
      return agentView(request.params.name);
    },
  );
}

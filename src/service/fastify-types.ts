/**
 * Route schemas carry their documentation (`summary`, `description`, `tags`), from which
 * `/openapi.json` is built (routes-probes.ts). Fastify's types know only the validation parts.
 */
declare module 'fastify' {
  interface FastifySchema {
    summary?: string;
    description?: string;
    tags?: readonly string[];
  }
}

export {};

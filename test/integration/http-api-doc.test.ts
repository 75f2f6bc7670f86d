/**
 * The HTTP API reference stays true: `docs/reference/http-api.md` heads exactly the routes the
 * server registers (as `### \`METHOD /path\``, read from its own `/openapi.json`), and its table
 * of statuses gives each error code the status the server answers with.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, RoostError, node, type ErrorCode } from '../../src/index.js';
import { statusOf } from '../../src/service/errors.js';
import { duplicates, headings, missing, readReference } from '../helpers/markdown.js';
import { call, startService, type Running } from '../helpers/service.js';

const doc = readReference('http-api.md');

let s: Running;
beforeAll(async () => {
  s = await startService((rt) => {
    rt.flow({ name: 'echo', edges: [node('echo', (env) => env.payload).to()] });
  });
});
afterAll(() => s.close());

describe('docs/reference/http-api.md', () => {
  it('documents every route the server serves, once, and no other', async () => {
    const r = await call(`${s.url}/openapi.json`, 'GET');
    expect(r.status).toBe(200);
    const paths = r.json['paths'] as Record<string, Record<string, unknown>>;
    const served = ['GET /openapi.json'];
    for (const [path, methods] of Object.entries(paths)) {
      for (const method of Object.keys(methods)) served.push(`${method.toUpperCase()} ${path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1')}`);
    }
    expect(served.length).toBeGreaterThan(20);
    const documented = headings(doc).flatMap((h) => {
      const m = /^`((?:GET|POST|PUT|PATCH|DELETE) \/\S*)`$/.exec(h.text);
      return m ? [m[1]!] : [];
    });
    expect(duplicates(documented)).toEqual([]);
    expect(missing(served, documented), 'served but not documented').toEqual([]);
    expect(missing(documented, served), 'documented but not served').toEqual([]);
  });

  it('gives every error code that is not a 500 the status the server answers with', () => {
    const rows = new Map<string, number>();
    for (const line of doc.split('\n')) {
      const m = /^\| `(ROOST_ERR_[A-Z_]+)` \| (\d{3}) \|$/.exec(line);
      if (m) rows.set(m[1]!, Number(m[2]));
    }
    const codes = Object.keys(ERROR_CODES) as ErrorCode[];
    const not500 = codes.filter((c) => statusOf(new RoostError(c, 'x')) !== 500);
    expect(missing(not500, rows.keys()), 'answered with a non-500 status but not in the table').toEqual([]);
    for (const [code, status] of rows) expect({ code, status }).toEqual({ code, status: statusOf(new RoostError(code as ErrorCode, 'x')) });
  });
});

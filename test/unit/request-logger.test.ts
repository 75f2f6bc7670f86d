/** The request logger binds the request id, and makes its pino child only for a line that is written. */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { RequestLogger } from '../../src/service/request-logger.js';

function capture(level: string): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level, redact: ['secret'] }, sink), lines };
}

describe('RequestLogger', () => {
  it('writes enabled lines through a child bound to the request id; others make nothing', () => {
    const { logger, lines } = capture('info');
    const child = vi.spyOn(logger, 'child');
    const log = new RequestLogger(logger, { reqId: 'r-1' }, {});
    log.debug({ a: 1 }, 'not written');
    log.trace('nor this');
    expect(child).not.toHaveBeenCalled();
    log.info({ a: 2, secret: 'x' }, 'written');
    log.error(new Error('boom'));
    log.warn('plain %s', 'text');
    expect(child).toHaveBeenCalledTimes(1);
    expect(lines.map((l) => [l['reqId'], l['msg'], l['a'], l['secret']])).toEqual([
      ['r-1', 'written', 2, '[Redacted]'],
      ['r-1', 'boom', undefined, undefined],
      ['r-1', 'plain text', undefined, undefined],
    ]);
    expect(log.level).toBe('info');
    log.child({ more: true }).info('from a grandchild');
    expect(lines.at(-1)).toMatchObject({ reqId: 'r-1', more: true, msg: 'from a grandchild' });
  });

  it('follows a level set on it', () => {
    const { logger, lines } = capture('info');
    const log = new RequestLogger(logger, { reqId: 'r-2' }, {});
    log.level = 'debug';
    log.debug('now written');
    expect(lines.map((l) => l['msg'])).toEqual(['now written']);
    expect(logger.level).toBe('info');
  });
});

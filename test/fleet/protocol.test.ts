/** The fleet's wire messages: docs/reference/wire-formats.md lists exactly them, and bad ones are refused. */
import { describe, expect, it } from 'vitest';
import { CONTROL_OPS, WORKER_MESSAGE_TYPES, fromWire, readControlMessage, readWorkerMessage, wireError } from '../../src/fleet/protocol.js';
import { RoostError } from '../../src/index.js';
import { codeBlocks, readReference, section } from '../helpers/markdown.js';

const doc = section(readReference('wire-formats.md'), (h) => h.text === 'Fleet messages');

function firstColumn(tableHeader: string): string[] {
  const start = doc.indexOf(tableHeader);
  const lines = doc.slice(start).split('\n').slice(2);
  const out: string[] = [];
  for (const line of lines) {
    if (!line.startsWith('|')) break;
    out.push(line.split('|')[1]!.trim().replaceAll('`', ''));
  }
  return out;
}

describe('fleet messages', () => {
  it('are documented exactly', () => {
    expect(firstColumn('| `t` |')).toEqual([...WORKER_MESSAGE_TYPES]);
    expect(firstColumn('| `op` |')).toEqual([...CONTROL_OPS]);
    const example = JSON.parse(codeBlocks(doc, 'json')[0]!) as unknown;
    expect(readWorkerMessage(example)).toEqual(example);
  });

  it('refuses what is not a message, without throwing', () => {
    for (const bad of [null, 1, 'x', [], {}, { t: 'done' }, { t: 'nope', k: 'a', w: 'b' }, { t: 'fail', k: 'a', w: 'b', e: { message: 1 } }, { t: 'beat', w: 'b', ks: [1] }, { t: 'emit', k: 'a', w: 'b', v: 1, to: 3 }]) {
      expect(readWorkerMessage(bad)).toBeNull();
    }
    for (const bad of [null, {}, { op: 'abort', traceId: 't', epoch: 'e', e: { message: 'm', retryable: true } }, { op: 'cancel', traceId: 't', e: { message: 'm', retryable: true } }, { op: 'x', traceId: 't', epoch: 'e', e: { message: 'm', retryable: true } }]) {
      expect(readControlMessage(bad)).toBeNull();
    }
  });

  it('carries a RoostError by its code, and any other error by name and message', () => {
    const roost = fromWire(wireError(new RoostError('ROOST_ERR_NODE_TIMEOUT', 'slow', { details: { node: 'x' } })));
    expect(roost).toMatchObject({ code: 'ROOST_ERR_NODE_TIMEOUT', message: 'slow', details: { node: 'x' } });
    const plain = fromWire(wireError(Object.assign(new TypeError('bad'), { retryable: false })));
    expect(plain).toMatchObject({ name: 'TypeError', message: 'bad', retryable: false });
    expect('code' in plain).toBe(false);
    expect(fromWire({ code: 'NOT_A_CODE', message: 'm', retryable: true })).not.toHaveProperty('code');
  });
});

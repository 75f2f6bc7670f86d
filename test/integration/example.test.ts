import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const example = fileURLToPath(new URL('../../examples/triage.ts', import.meta.url));

describe('examples/triage.ts (the library tour the README points to)', () => {
  it('runs to the end and shows routing, a retry, a timeout into the DLQ, a replay and a cancel', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', example], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const out = r.stdout;
    expect(out).toContain('the second emit returned the same trace: true');
    expect(out).toMatch(/technical retry in 50 ms/);
    expect(out).toMatch(/billing {3}TIMED OUT: node billing timed out after 200 ms/);
    expect(out).toContain('T-1: failed with ROOST_ERR_NODE_TIMEOUT');
    expect(out).toContain('T-2: [T-2] technical: Clear your cache and sign in again.');
    expect(out).toContain('T-3: [T-3] general: Thanks, a human will follow up.');
    expect(out).toContain('replayed T-1 -> [T-1] billing: Your refund is on its way.');
    expect(out).toContain('T-4: ROOST_ERR_TRACE_CANCELLED');
    expect(out).toMatch(/"activeTraces":0,"queued":0,"running":0/);
  });
});

describe('the README example', () => {
  it('is examples/orders.ts, word for word, and it runs', () => {
    const file = fileURLToPath(new URL('../../examples/orders.ts', import.meta.url));
    const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const block = /## Example\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(readFileSync(file, 'utf8').replace("from '../src/index.js'", "from 'roost'"));
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('total 4200');
  });
});

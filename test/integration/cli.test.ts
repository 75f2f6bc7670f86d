import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/index.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
function roost(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', main, ...args], { input, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// Seven runs of the CLI from the sources (tsx compiles them at each start): about 13 s on this
// machine, 30 s under a busy neighbour; the bound is twice that (as the other CLI tests').
describe('roost CLI', { timeout: 60_000 }, () => {
  it('validate: exit 0 for valid envelopes, 1 with the code of each bad one, 2 for bad usage', () => {
    const now = Date.now();
    const good = { v: 1, id: uuidv7(), traceId: uuidv7(), tenant: 't', from: 'a', to: 'b', kind: 'task', payload: {}, createdAt: now, attempt: 1 };
    expect(roost(['validate', '-'], JSON.stringify(good))).toMatchObject({ status: 0, stdout: expect.stringContaining('1: ok task') });
    const lines = [JSON.stringify(good), 'not json', JSON.stringify({ ...good, v: 2 }), JSON.stringify({ ...good, tenant: 'a b' })].join('\n');
    const bad = roost(['validate'], lines);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain('2: ROOST_ERR_ENVELOPE_PARSE');
    expect(bad.stdout).toContain('3: ROOST_ERR_UNSUPPORTED_VERSION');
    expect(bad.stdout).toContain('4: ROOST_ERR_ENVELOPE_INVALID envelope.tenant');
    expect(roost(['validate', '--max-bytes', '10'], JSON.stringify(good)).stdout).toContain('ROOST_ERR_PAYLOAD_TOO_LARGE');
    expect(roost(['validate', '--max-bytes', 'x'], '').status).toBe(2);
    expect(roost(['frobnicate']).status).toBe(2);
    expect(roost(['version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

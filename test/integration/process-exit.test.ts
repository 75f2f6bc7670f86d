import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../fixtures/leave-open.ts', import.meta.url));

describe('an idle runtime does not hold the process', () => {
  it('exits by itself after work that armed 60 s timers and a day-long deadline finished', () => {
    const started = Date.now();
    // The timers armed are 60 s or more; 20 s leaves a 3× margin while catching any held one.
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined(); // a kill by the timeout shows up here
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('simple 1');
    expect(r.stdout).toContain('joined ROOST_ERR_NODE_FAILED');
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});

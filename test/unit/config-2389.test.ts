/** `[protocol2389]` and `[[agent2389]]` in roost.toml: loaded, checked, and turned into the runtime option. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { protocol2389Options } from '../../src/cli/serve.js';
import { describeConfig, loadConfig } from '../../src/config/load.js';
import { isRoostError } from '../../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'roost-config-2389-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(text: string): string {
  const path = join(dir, `roost-${++n}.toml`);
  writeFileSync(path, text);
  return path;
}

function refusal(text: string, env: Record<string, string> = {}): { field: string | undefined; message: string } {
  try {
    loadConfig({ file: file(text), env, cwd: dir });
  } catch (error) {
    if (!isRoostError(error, 'ROOST_ERR_CONFIG_INVALID')) throw error;
    return { field: error.field, message: error.message };
  }
  throw new Error('the configuration was accepted');
}

describe('[[agent2389]]', () => {
  it('reads every table with its defaults, and becomes the runtime option', () => {
    const path = file(
      [
        '[protocol2389]',
        'broker = "mqtt://localhost:1883"',
        'health_port = 0',
        '',
        '[[agent2389]]',
        'id = "summarizer"',
        'flow = "summarize"',
        'capabilities = ["summarize", "text"]',
        'description = "Summarizes"',
        '',
        '[[agent2389]]',
        'id = "echo.1"',
        'flow = "${ECHO_FLOW:-echo}"',
        'max_depth = 4',
        'heartbeat_s = 2',
        'status_expiry_s = 60',
        'tenant = "acme"',
        'payload = "input"',
        '',
      ].join('\n'),
    );
    const c = loadConfig({ file: path, env: {}, cwd: dir });
    expect(c.protocol2389).toEqual({ broker: 'mqtt://localhost:1883', healthPort: 0, healthHost: '127.0.0.1', registryExpiryMs: 15_000 });
    expect(c.agents2389).toEqual([
      { id: 'summarizer', flow: 'summarize', capabilities: ['summarize', 'text'], description: 'Summarizes', maxDepth: 16, heartbeatS: 5, statusExpiryS: 3600, tenant: 'default', payload: 'task' },
      { id: 'echo.1', flow: 'echo', capabilities: [], description: '', maxDepth: 4, heartbeatS: 2, statusExpiryS: 60, tenant: 'acme', payload: 'input' },
    ]);
    expect(protocol2389Options(c)).toMatchObject({ broker: 'mqtt://localhost:1883', health: { port: 0, host: '127.0.0.1' }, agents: [{ id: 'summarizer' }, { id: 'echo.1', maxDepth: 4 }] });
    expect(describeConfig(c).some((l) => l.startsWith('agent2389[1] = {"id":"echo.1"'))).toBe(true);
  });

  it('takes the broker from an MQTT fleet transport, and from ROOST_2389_BROKER over the file', () => {
    const text = '[fleet]\ntransport = "mqtt://fleet:1883"\n\n[[agent2389]]\nid = "a"\nflow = "f"\n';
    expect(loadConfig({ file: file(text), env: {}, cwd: dir }).protocol2389?.broker).toBe('mqtt://fleet:1883');
    expect(loadConfig({ file: file(text), env: { ROOST_2389_BROKER: 'mqtts://other:8883' }, cwd: dir }).protocol2389?.broker).toBe('mqtts://other:8883');
    expect(loadConfig({ env: {}, cwd: dir }).protocol2389).toBeNull();
  });

  it('refuses what is wrong, naming the key and the line', () => {
    expect(refusal('[[agent2389]]\nid = "a"\nflow = "f"\n')).toMatchObject({ field: 'protocol2389.broker' });
    expect(refusal('[fleet]\ntransport = "nats://n:4222"\n[[agent2389]]\nid = "a"\nflow = "f"\n')).toMatchObject({ field: 'protocol2389.broker' });
    const base = '[protocol2389]\nbroker = "mqtt://b:1883"\n';
    expect(refusal(`${base}[[agent2389]]\nid = "a"\nflow = "f"\ncolour = "red"\n`)).toMatchObject({ field: 'agent2389[0].colour', message: expect.stringMatching(/:6: agent2389\[0\]\.colour: unknown key/) as unknown });
    expect(refusal(`${base}[[agent2389]]\nflow = "f"\n`)).toMatchObject({ field: 'agent2389[0].id' });
    expect(refusal(`${base}[[agent2389]]\nid = "a"\n`)).toMatchObject({ field: 'agent2389[0].flow' });
    expect(refusal(`${base}[[agent2389]]\nid = "bad id"\nflow = "f"\n`)).toMatchObject({ field: 'agent2389[0].id' });
    expect(refusal(`${base}[[agent2389]]\nid = "a"\nflow = "f"\ncapabilities = "x"\n`)).toMatchObject({ field: 'agent2389[0].capabilities' });
    expect(refusal(`${base}[[agent2389]]\nid = "a"\nflow = "f"\ncapabilities = ["ok", 3]\n`)).toMatchObject({ field: 'agent2389[0].capabilities' });
    expect(refusal(`${base}[[agent2389]]\nid = "a"\nflow = "f"\nmax_depth = -1\n`)).toMatchObject({ field: 'agent2389[0].max_depth', message: expect.stringMatching(/:6: /) as unknown });
    expect(refusal(`${base}[[agent2389]]\nid = "a"\nflow = "f"\n[[agent2389]]\nid = "a"\nflow = "g"\n`)).toMatchObject({ field: 'agent2389[1].id' });
    expect(refusal(`${base}[agent2389]\nid = "a"\nflow = "f"\n`)).toMatchObject({ field: 'agent2389' });
    expect(refusal('[protocol2389]\nbroker = "http://b"\n')).toMatchObject({ field: 'protocol2389.broker' });
  });
});

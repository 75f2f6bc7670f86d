/**
 * The service's commands, as a user types them: `roost submit` against a running server (exit 0
 * on success, 1 on a failed trace, 2 on bad usage), `roost config check` (secrets hidden) and
 * `roost doctor` (what is wrong, and what to do).
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { node, type Envelope, type Runtime } from '../../src/index.js';
import { spawn } from 'node:child_process';
import { MQTT_URL } from '../helpers/brokers.js';
import { MAIN, SERVE_APP, TSX, cleanEnv, roost, roostAsync, workDir } from '../helpers/cli.js';
import { startService, type Running } from '../helpers/service.js';

const running: Running[] = [];
const dirs: { cleanup(): void }[] = [];
const sockets: NetServer[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.close();
  for (const d of dirs.splice(0)) d.cleanup();
  for (const s of sockets.splice(0)) await new Promise((r) => s.close(r));
});

function flows(rt: Runtime): void {
  const shout = node('shout', async (env: Envelope<{ text: string }>) => {
    await new Promise((r) => setTimeout(r, 30));
    return env.payload.text.toUpperCase();
  });
  const mark = node('mark', (env: Envelope<string>) => `${env.payload}!`);
  rt.flow({
    name: 'upper',
    edges: [shout.to(mark), mark.to()],
  });
  rt.flow({
    name: 'broken',
    edges: [
      node('boom', () => {
        throw Object.assign(new Error('no luck'), { retryable: false });
      }).to(),
    ],
  });
}

async function server(): Promise<Running> {
  const s = await startService(flows);
  running.push(s);
  return s;
}

describe('roost submit', () => {
  it('--wait prints the events as they happen, then the result; exit 0', async () => {
    const s = await server();
    const r = await roostAsync(['submit', 'upper', '{"text":"hi"}', '--wait', '--url', s.url, '--tenant', 'acme']);
    expect(r.stderr).toMatch(/node_start {2}shout/);
    expect(r.stderr).toMatch(/node_success {2}mark {2}[\d.]+ ms/);
    expect(r.stderr).toMatch(/trace_success {2}after \d+ ms/);
    expect(r.stdout.trim()).toBe('"HI!"');
    expect(r.status).toBe(0);
  });

  it('without --wait prints the accepted task (JSON); input from a file and from stdin', async () => {
    const s = await server();
    const d = workDir(null);
    dirs.push(d);
    const file = join(d.dir, 'input.json');
    writeFileSync(file, '{"text":"from a file"}');
    const r = await roostAsync(['submit', 'upper', `@${file}`, '--url', s.url]);
    expect(r.status).toBe(0);
    const accepted = JSON.parse(r.stdout) as { traceId: string; status: string };
    expect(accepted.status).toBe('running');
    expect((await s.runtime.getFlow('upper')!.fetch(accepted.traceId)) as string).toBe('FROM A FILE!');
    const piped = roost(['submit', 'upper', '-', '--url', 'http://127.0.0.1:9'], { input: '{"text":"x"}' });
    expect(piped.stderr).toContain('cannot reach the server at http://127.0.0.1:9'); // stdin was read, then the (absent) server tried
    expect(piped.status).toBe(1);
  });

  it('a failed trace exits 1 with its error', async () => {
    const s = await server();
    const r = await roostAsync(['submit', 'broken', '--wait', '--url', s.url]);
    expect(r.stderr).toMatch(/node_failed {2}boom {2}.*no luck/);
    expect(r.stderr).toContain('trace failed:');
    expect(r.status).toBe(1);
  });

  it('bad usage exits 2: no flow, input that is not JSON, an unknown flow', async () => {
    const s = await server();
    const none = roost(['submit']);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('expected a flow name');
    const notJson = roost(['submit', 'upper', '{text: hi}', '--url', s.url]);
    expect(notJson.status).toBe(2);
    expect(notJson.stderr).toContain('input: expected JSON in the argument');
    const unknown = await roostAsync(['submit', 'nope', '1', '--url', s.url]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('ROOST_ERR_NOT_FOUND');
  });
});

describe('roost config check', () => {
  it('prints every key with its value and source; a password in a URL is hidden', () => {
    const d = workDir('[http]\nport = 9999\n[store]\nurl = "postgres://roost:s3cret@db.internal:5432/roost"\n');
    dirs.push(d);
    const r = roost(['config', 'check'], { cwd: d.dir, env: { LOG_LEVEL: 'debug' } });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`http.port = 9999  # ${d.file}:2`);
    expect(r.stdout).toContain('log.level = "debug"  # LOG_LEVEL');
    expect(r.stdout).toContain('store.url = "postgres://roost:***@db.internal:5432/roost"');
    expect(r.stdout).toContain('shutdown.grace_ms = 30000  # the default');
    expect(r.stdout).not.toContain('s3cret');
  });

  it('stops quietly when its reader goes away (a pipe into head)', async () => {
    const child = spawn(process.execPath, ['--import', TSX, MAIN, 'config', 'check'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // closed before the first line is written: every write meets EPIPE
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
  });

  it('exits 2 on an invalid configuration, naming the key', () => {
    const d = workDir('[log]\nformat = "xml"\n');
    dirs.push(d);
    const r = roost(['config', 'check'], { cwd: d.dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${d.file}:2: log.format: expected one of json, text, got "xml"`);
  });
});

describe('roost doctor', () => {
  it('says everything is in place for a good deployment (exit 0)', () => {
    const d = workDir(`app = "${SERVE_APP}"\n[http]\nport = 0\n[store]\nurl = "sqlite:.roost/roost.db"\n`);
    dirs.push(d);
    const r = roost(['doctor'], { cwd: d.dir });
    expect(r.stdout).toMatch(/^ok {4}config .*valid$/m);
    expect(r.stdout).toMatch(/^ok {4}app {5}.*flows echo, slow, fail$/m);
    expect(r.stdout).toMatch(/^ok {4}store .*reachable and writable$/m);
    expect(r.stdout).toMatch(/^ok {4}tracing +off/m);
    expect(r.status).toBe(0);
  });

  it('names each problem and its fix: a port in use, a journal that cannot be opened, an app without flows (exit 1)', async () => {
    const busy = createServer();
    sockets.push(busy);
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    // The journal's directory would be inside a regular file: it cannot be made.
    const d = workDir(`app = "app.mjs"\n[http]\nport = ${port}\n[store]\nurl = "sqlite:not-a-directory/roost.db"\n`);
    dirs.push(d);
    writeFileSync(join(d.dir, 'app.mjs'), 'export default function setup() {}\n');
    writeFileSync(join(d.dir, 'not-a-directory'), '');
    const r = roost(['doctor'], { cwd: d.dir });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^FAIL {2}app .*ROOST_ERR_APP_INVALID.*added no flow/m);
    expect(r.stdout).toMatch(/^FAIL {2}store .*sqlite:not-a-directory\/roost\.db: .*cannot open the SQLite journal/m);
    expect(r.stdout).toMatch(new RegExp(`^FAIL {2}ports .*127\\.0\\.0\\.1:${port} \\(http\\.port\\) cannot be bound: EADDRINUSE\\n +fix: stop what listens there, or set http\\.port \\(ROOST_HTTP_PORT\\)`, 'm'));
    expect(r.stdout).toContain('3 problems to fix');
  });

  it('checks the fleet\'s broker: a broker that answers is ok, one that does not is a problem with its fix', () => {
    const good = workDir(`app = "${SERVE_APP}"\n[http]\nport = 0\n[store]\nurl = "memory:"\n[fleet]\ntransport = "${MQTT_URL}"\nremote = "echo/echo"\n`);
    const bad = workDir(`app = "${SERVE_APP}"\n[http]\nport = 0\n[store]\nurl = "memory:"\n[fleet]\ntransport = "nats://127.0.0.1:1"\n`);
    dirs.push(good, bad);
    const ok = roost(['doctor'], { cwd: good.dir });
    expect(ok.stdout).toMatch(/^ok {4}fleet +mqtt:\/\/127\.0\.0\.1:1883: connected \(namespace roost; remote: echo\/echo; host: none\)$/m);
    expect(ok.status).toBe(0);
    const down = roost(['doctor'], { cwd: bad.dir });
    expect(down.stdout).toMatch(/^FAIL {2}fleet +nats:\/\/127\.0\.0\.1:1: ROOST_ERR_TRANSPORT_UNAVAILABLE/m);
    expect(down.status).toBe(1);
  });

  it('checks the 2389 broker and that each [[agent2389]] runs a flow of the app', () => {
    const good = workDir(`app = "${SERVE_APP}"\n[http]\nport = 0\n[store]\nurl = "memory:"\n[protocol2389]\nbroker = "${MQTT_URL}"\n[[agent2389]]\nid = "doc-a"\nflow = "echo"\n`);
    const bad = workDir(`app = "${SERVE_APP}"\n[http]\nport = 0\n[store]\nurl = "memory:"\n[protocol2389]\nbroker = "mqtt://127.0.0.1:1"\n[[agent2389]]\nid = "doc-b"\nflow = "nope"\n`);
    dirs.push(good, bad);
    const ok = roost(['doctor'], { cwd: good.dir });
    expect(ok.stdout).toMatch(/^ok {4}2389 +mqtt:\/\/127\.0\.0\.1:1883: connected \(agents: doc-a\)$/m);
    expect(ok.status).toBe(0);
    const down = roost(['doctor'], { cwd: bad.dir });
    expect(down.stdout).toMatch(/^FAIL {2}2389 +mqtt:\/\/127\.0\.0\.1:1: ROOST_ERR_TRANSPORT_UNAVAILABLE/m);
    expect(down.stdout).toMatch(/^FAIL {2}2389 +agent2389\[0\] \(doc-b\): the app has no flow "nope" \(it has echo, slow, fail\)$/m);
    expect(down.status).toBe(1);
  });

  it('an invalid configuration is the one finding (exit 1)', () => {
    const d = workDir('[http]\nport = -1\n');
    dirs.push(d);
    const r = roost(['doctor'], { cwd: d.dir });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^FAIL {2}config .*http\.port: expected an integer from 0 to 65535, got -1/m);
  });
});

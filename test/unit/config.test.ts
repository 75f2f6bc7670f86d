import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { CONFIG_KEYS } from '../../src/config/schema.js';

const dir = mkdtempSync(join(tmpdir(), 'roost-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(text: string): string {
  const path = join(dir, `roost-${++n}.toml`);
  writeFileSync(path, text);
  return path;
}

describe('loadConfig', () => {
  it('has a default for everything, and reads no file when there is none', () => {
    const c = loadConfig({ env: {}, cwd: dir });
    expect(c.file).toBeNull();
    expect(c.http).toMatchObject({ host: '127.0.0.1', port: 8080, healthPort: null });
    expect(c.store.url).toBe('sqlite:.roost/roost.db');
    expect(c.log).toEqual({ level: 'info', format: 'json', payloads: false, correlate: true });
    expect([...c.values.keys()]).toEqual(CONFIG_KEYS.map((k) => k.path));
    expect(c.values.get('http.port')!.source).toEqual({ kind: 'default' });
  });

  it('reads the file, interpolates ${VAR} and ${VAR:-default}, and lets the environment override it', () => {
    const path = file(`app = "app.ts"\n[http]\nport = "\${PORT:-9090}"\nhost = "\${HOST}"\n\n[log]\nformat = "text"\n[store]\nurl = "postgres://u:pw@\${DB_HOST:-localhost}/roost"\n`);
    const c = loadConfig({ file: path, env: { HOST: '0.0.0.0', LOG_LEVEL: 'debug' }, cwd: '/' });
    expect(c.http.port).toBe(9090);
    expect(c.http.host).toBe('0.0.0.0');
    expect(c.log).toMatchObject({ level: 'debug', format: 'text' });
    expect(c.store.url).toBe('postgres://u:pw@localhost/roost');
    expect(c.dir).toBe(dir); // app is resolved against the file's directory
    expect(c.values.get('http.port')!.source).toEqual({ kind: 'file', file: path, line: 3 });
    expect(c.values.get('log.level')!.source).toEqual({ kind: 'env', name: 'LOG_LEVEL' });
    const over = loadConfig({ file: path, env: { HOST: 'h', PORT: '7000', ROOST_HTTP_PORT: '7001', LOG_FORMAT: '' }, cwd: '/' });
    expect(over.http.port).toBe(7001); // the variable beats the file
    expect(over.log.format).toBe('text'); // an empty variable counts as unset
  });

  it('finds the file in $ROOST_CONFIG, else ./roost.toml', () => {
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    writeFileSync(join(cwd, 'roost.toml'), '[http]\nport = 1234\n');
    expect(loadConfig({ env: {}, cwd }).http.port).toBe(1234);
    expect(loadConfig({ env: { ROOST_CONFIG: file('[http]\nport = 4321\n') }, cwd }).http.port).toBe(4321);
  });

  const refused: [string, Record<string, string>, RegExp, string][] = [
    ['[http]\nprot = 80\n', {}, /roost-\d+\.toml:2: http\.prot: unknown key \(known here: http\.host, http\.port/, 'http.prot'],
    ['\n\n[http]\nport = 70000\n', {}, /roost-\d+\.toml:4: http\.port: expected an integer from 0 to 65535, got 70000 \(number\)/, 'http.port'],
    ['[log]\nformat = "xml"\n', {}, /:2: log\.format: expected one of json, text, got "xml"/, 'log.format'],
    ['[http]\nport = "${NOPE}"\n', {}, /:2: http\.port: \$\{NOPE\} is not set/, 'http.port'],
    ['', { ROOST_HTTP_PORT: 'eighty' }, /^ROOST_HTTP_PORT: http\.port: expected an integer from 0 to 65535, got "eighty"/, 'http.port'],
    ['', { LOG_PAYLOADS: 'maybe' }, /^LOG_PAYLOADS: log\.payloads: expected true or false/, 'log.payloads'],
    ['[store]\nurl = 5\n', {}, /:2: store\.url: expected memory:, sqlite:<path> or postgres:\/\/…, got "\*\*\*"/, 'store.url'],
    ['[http\nport = 1\n', {}, /roost-\d+\.toml:1: not valid TOML/, 'config'],
  ];
  for (const [text, env, message, field] of refused) {
    it(`refuses ${JSON.stringify(text || env)} with ROOST_ERR_CONFIG_INVALID naming ${field}`, () => {
      const path = file(text);
      let thrown: unknown;
      try {
        loadConfig({ file: path, env, cwd: dir });
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toMatchObject({ code: 'ROOST_ERR_CONFIG_INVALID', field });
      expect((thrown as Error).message).toMatch(message);
    });
  }

  it('a file that cannot be read is refused too', () => {
    expect(() => loadConfig({ file: join(dir, 'missing.toml'), env: {} })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_CONFIG_INVALID', field: 'config' }));
  });
});

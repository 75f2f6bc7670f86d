/**
 * A private broker for failure tests (../shared/SERVICES.md): a Mosquitto or nats-server of the
 * test's own, on a free port, in a temporary directory, stopped by its PID — never the shared one.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Certs } from './certs.js';

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

async function answers(port: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`the private broker on port ${port} did not start within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface PrivateBroker {
  readonly url: string;
  readonly port: number;
  /** Starts it (again, on the same port). */
  start(): Promise<void>;
  /**
   * Stops it by its PID and waits for it to exit: killed (SIGKILL) by default; `graceful` sends
   * SIGTERM, and a broker with persistence saves its state first.
   */
  stop(options?: { graceful?: boolean }): Promise<void>;
  /** Stops it and removes its directory. */
  dispose(): Promise<void>;
}

/**
 * With `tls`, the broker speaks only TLS with that server certificate and requires a client
 * certificate signed by `tls.ca`. With `persistence`, Mosquitto keeps sessions and queued
 * messages in its directory (saved on a graceful stop). A nats-server has JetStream (stored in
 * its directory, so it outlives a restart) unless `jetstream` is false. With `auth`, the broker
 * admits only that user with that password. With `acl` (Mosquitto), those lines are its ACL file
 * (`topic [read|write|readwrite|deny] <topic>`; lines before any `user` line are for anonymous
 * clients).
 */
export async function privateBroker(
  kind: 'mosquitto' | 'nats',
  tls?: Certs,
  options: { persistence?: boolean; jetstream?: boolean; auth?: { user: string; password: string }; acl?: string } = {},
): Promise<PrivateBroker> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `roost-${kind}-`));
  chmodSync(dir, 0o777); // Mosquitto started as root runs as its own user: it must write its database here
  let child: ChildProcess | null = null;
  const command = (): [string, string[]] => {
    if (kind === 'nats') {
      const js = options.jetstream === false ? [] : ['-js', '-sd', dir];
      if (options.auth !== undefined) return ['/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), ...js, '--user', options.auth.user, '--pass', options.auth.password]];
      if (tls === undefined) return ['/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), ...js]];
      const conf = join(dir, 'nats.conf');
      writeFileSync(
        conf,
        `host: 127.0.0.1\nport: ${port}\ntls {\n  cert_file: "${tls.serverCert}"\n  key_file: "${tls.serverKey}"\n  ca_file: "${tls.ca}"\n  verify: true\n}\n`,
      );
      return ['/usr/sbin/nats-server', ['-c', conf]];
    }
    const conf = join(dir, 'mosquitto.conf');
    const tlsLines = tls === undefined ? '' : `cafile ${tls.ca}\ncertfile ${tls.serverCert}\nkeyfile ${tls.serverKey}\nrequire_certificate true\n`;
    let authLines = 'allow_anonymous true\n';
    if (options.auth !== undefined) {
      const passwords = join(dir, 'passwords');
      execFileSync('/usr/bin/mosquitto_passwd', ['-b', '-c', passwords, options.auth.user, options.auth.password], { stdio: 'ignore' });
      chmodSync(passwords, 0o644); // read by the broker's own user
      authLines = `allow_anonymous false\npassword_file ${passwords}\n`;
    }
    if (options.acl !== undefined) {
      const acl = join(dir, 'acl');
      writeFileSync(acl, options.acl);
      chmodSync(acl, 0o644); // read by the broker's own user
      authLines += `acl_file ${acl}\n`;
    }
    writeFileSync(conf, `listener ${port} 127.0.0.1\n${authLines}set_tcp_nodelay true\n${options.persistence === true ? `persistence true\npersistence_location ${dir}/\n` : 'persistence false\n'}${tlsLines}`);
    return ['/usr/sbin/mosquitto', ['-c', conf]];
  };
  const broker: PrivateBroker = {
    url: `${kind === 'nats' ? 'nats' : tls === undefined ? 'mqtt' : 'mqtts'}://127.0.0.1:${port}`,
    port,
    async start() {
      const [bin, args] = command();
      child = spawn(bin, args, { stdio: 'ignore' });
      await answers(port, 10_000);
    },
    async stop(how = {}) {
      const c = child;
      child = null;
      if (c === null || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill(how.graceful === true ? 'SIGTERM' : 'SIGKILL');
      await exited;
    },
    async dispose() {
      await broker.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await broker.start();
  return broker;
}

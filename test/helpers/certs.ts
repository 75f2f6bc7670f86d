/**
 * Certificates for TLS tests, made with openssl in a temporary directory: a CA, a server
 * certificate for 127.0.0.1 and localhost, a client certificate, and a second CA that signed
 * nothing of these (the wrong CA).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Certs {
  readonly dir: string;
  readonly ca: string;
  readonly otherCa: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  cleanup(): void;
}

export function makeCerts(): Certs {
  const dir = mkdtempSync(join(tmpdir(), 'roost-certs-'));
  const at = (name: string): string => join(dir, name);
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  for (const ca of ['ca', 'other-ca']) {
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=roost test ${ca}`, '-keyout', at(`${ca}.key`), '-out', at(`${ca}.pem`));
  }
  writeFileSync(at('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  writeFileSync(at('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=roost test ${who}`, '-keyout', at(`${who}.key`), '-out', at(`${who}.csr`));
    ssl('x509', '-req', '-in', at(`${who}.csr`), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', at(`${who}.ext`), '-out', at(`${who}.pem`));
  }
  // Mosquitto started as root drops to its own user: it must be able to read these (test files only).
  chmodSync(dir, 0o755);
  for (const f of readdirSync(dir)) chmodSync(at(f), 0o644);
  return {
    dir,
    ca: at('ca.pem'),
    otherCa: at('other-ca.pem'),
    serverCert: at('server.pem'),
    serverKey: at('server.key'),
    clientCert: at('client.pem'),
    clientKey: at('client.key'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

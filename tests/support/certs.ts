/**
 * Test certificates made with the `openssl` command: a throwaway CA and server certificates it signs, written
 * as PEM files into a temporary directory. Nothing here is meant to be secure; it is meant to be real, so the
 * clients under test (psql, postgres.js, node-postgres, PostgreSQL itself) verify actual X.509 chains.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A certificate authority: its self-signed certificate and key. */
export interface TestCa {
  name: string;
  certPath: string;
  keyPath: string;
  /** The CA certificate, PEM. */
  cert: string;
}

/** A server certificate signed by a {@link TestCa}. */
export interface TestCert {
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
}

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr.toString()}`);
}

/** A directory for certificate files, readable by every user (PostgreSQL runs as `postgres` in tests). */
export function certDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "pgroute-certs-"));
  chmodSync(dir, 0o755);
  return dir;
}

/** Removes a directory made by {@link certDir}. */
export function removeCertDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A new CA named `name` (files `<name>-ca.pem`, `<name>-ca.key` in `dir`). */
export function makeCa(dir: string, name: string): TestCa {
  const certPath = join(dir, `${name}-ca.pem`);
  const keyPath = join(dir, `${name}-ca.key`);
  openssl(
    [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
      "-subj", `/CN=pgroute test CA ${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout", keyPath, "-out", certPath,
    ],
    dir,
  );
  return { name, certPath, keyPath, cert: readFileSync(certPath, "utf8") };
}

/**
 * A server certificate for `names` (DNS names and IP addresses, all put in subjectAltName; the first is also
 * the CN), signed by `ca`, written as `<file>.pem` / `<file>.key` in `dir`. The key file is mode 0600.
 */
export function makeServerCert(dir: string, ca: TestCa, file: string, names: readonly string[] = ["localhost", "127.0.0.1"]): TestCert {
  const certPath = join(dir, `${file}.pem`);
  const keyPath = join(dir, `${file}.key`);
  const csrPath = join(dir, `${file}.csr`);
  const extPath = join(dir, `${file}.ext`);
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
  writeFileSync(extPath, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`);
  openssl(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${names[0] ?? "server"}`, "-keyout", keyPath, "-out", csrPath], dir);
  openssl(
    ["x509", "-req", "-in", csrPath, "-CA", ca.certPath, "-CAkey", ca.keyPath, "-CAcreateserial", "-days", "2", "-sha256", "-extfile", extPath, "-out", certPath],
    dir,
  );
  rmSync(csrPath);
  rmSync(extPath);
  chmodSync(keyPath, 0o600);
  chmodSync(certPath, 0o644);
  return { certPath, keyPath, cert: readFileSync(certPath, "utf8"), key: readFileSync(keyPath, "utf8") };
}

// Invariant: the TLS keys validate like every other key (errors with key paths, all at once, defaults from the
// table), and certificate files are checked before they are served: a failed load names the key and the file and
// leaves the previous certificate in place.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { configFrom } from "../../src/config/load.ts";
import { formatConfigError, validate } from "../../src/config/schema.ts";
import { ClientTls, TlsLoadError } from "../../src/net/tls.ts";
import { certDir, makeCa, makeServerCert, removeCertDir, type TestCert } from "../support/certs.ts";

const minimal = { nodes: [{ name: "p" }], users: [{ name: "u", password: "pw" }] };

function errorsOf(raw: unknown): string[] {
  const result = validate(raw);
  return "errors" in result ? result.errors.map(formatConfigError) : [];
}

describe("config", () => {
  test("defaults: no TLS to clients, sslmode prefer to servers", () => {
    const config = configFrom(minimal);
    expect(config.tls).toEqual({ mode: "disable" });
    expect(config.nodes[0]!.sslmode).toBe("prefer");
    expect(config.nodes[0]!.sslrootcert).toBeUndefined();
  });

  test("allow and require need cert and key", () => {
    expect(errorsOf({ ...minimal, tls: { mode: "require" } })).toEqual([
      `tls.cert: required when tls.mode is "require"`,
      `tls.key: required when tls.mode is "require"`,
    ]);
    expect(errorsOf({ ...minimal, tls: { mode: "allow", cert: "/c.pem" } })).toEqual([`tls.key: required when tls.mode is "allow"`]);
    expect(errorsOf({ ...minimal, tls: { mode: "disable", cert: "/c.pem" } })).toEqual([]);
    expect(errorsOf({ ...minimal, tls: { mode: "allow", cert: "/c.pem", key: "/k.pem" } })).toEqual([]);
  });

  test("bad values are reported with their key paths", () => {
    expect(errorsOf({ ...minimal, tls: { mode: "on", cert: 1 } })).toEqual([
      `tls.mode: expected one of "disable", "allow", "require", got "on"`,
      "tls.cert: expected a non-empty string, got 1",
    ]);
    expect(errorsOf({ ...minimal, nodes: [{ name: "p" }, { name: "q", sslmode: "verify", sslrootcert: "" }] })).toEqual([
      `nodes[1].sslmode: expected one of "disable", "prefer", "require", "verify-ca", "verify-full", got "verify"`,
      `nodes[1].sslrootcert: expected a non-empty string, got ""`,
    ]);
  });

  test("verify-ca needs sslrootcert; verify-full may use the public CAs", () => {
    expect(errorsOf({ ...minimal, nodes: [{ name: "p", sslmode: "verify-ca" }] })).toEqual([`nodes[0].sslrootcert: required for sslmode "verify-ca"`]);
    expect(errorsOf({ ...minimal, nodes: [{ name: "p", sslmode: "verify-full" }] })).toEqual([]);
    expect(configFrom({ ...minimal, nodes: [{ name: "p", sslmode: "verify-ca", sslrootcert: "/ca.pem" }] }).nodes[0]).toMatchObject({
      sslmode: "verify-ca",
      sslrootcert: "/ca.pem",
    });
  });
});

describe("ClientTls", () => {
  let dir: string;
  let a: TestCert;
  let b: TestCert;

  beforeAll(() => {
    dir = certDir();
    const ca = makeCa(dir, "unit");
    a = makeServerCert(dir, ca, "a", ["a.example"]);
    b = makeServerCert(dir, ca, "b", ["b.example", "127.0.0.1"]);
  });
  afterAll(() => removeCertDir(dir));

  test("disable offers nothing and reads nothing", () => {
    const t = new ClientTls();
    expect(t.load({ mode: "disable", cert: join(dir, "missing.pem") })).toBeNull();
    expect(t.options).toBeNull();
    expect(t.mode).toBe("disable");
  });

  test("load describes the certificate and offers it", () => {
    const t = new ClientTls();
    const served = t.load({ mode: "allow", cert: b.certPath, key: b.keyPath })!;
    expect(served.subject).toBe("CN=b.example");
    expect(served.altNames).toBe("DNS:b.example, IP Address:127.0.0.1");
    expect(t.options).toEqual({ cert: b.cert, key: b.key });
    expect(t.mode).toBe("allow");
  });

  test("prepare changes nothing until its result is called", () => {
    const t = new ClientTls();
    t.load({ mode: "allow", cert: a.certPath, key: a.keyPath });
    const commit = t.prepare({ mode: "require", cert: b.certPath, key: b.keyPath });
    expect(t.certificate!.subject).toBe("CN=a.example");
    expect(t.mode).toBe("allow");
    commit();
    expect(t.certificate!.subject).toBe("CN=b.example");
    expect(t.mode).toBe("require");
  });

  test("unusable files: TlsLoadError with the key path and the file, previous certificate kept", () => {
    const t = new ClientTls();
    t.load({ mode: "allow", cert: a.certPath, key: a.keyPath });
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "not a certificate\n");
    const cases: [Parameters<ClientTls["load"]>[0], RegExp][] = [
      [{ mode: "allow", cert: join(dir, "none.pem"), key: a.keyPath }, /^tls\.cert: cannot read .*none\.pem: no such file$/],
      [{ mode: "allow", cert: a.certPath, key: join(dir, "none.key") }, /^tls\.key: cannot read .*none\.key: no such file$/],
      [{ mode: "allow", cert: garbage, key: a.keyPath }, /^tls\.cert: .*garbage\.pem is not a PEM certificate/],
      [{ mode: "allow", cert: a.certPath, key: garbage }, /^tls\.key: .*garbage\.pem is not a usable PEM private key/],
      [{ mode: "allow", cert: a.certPath, key: b.keyPath }, /^tls\.key: .*b\.key is not the private key of the certificate in .*a\.pem$/],
      [{ mode: "require", cert: a.certPath }, /^tls\.key: required when tls\.mode is "require"$/],
    ];
    for (const [cfg, message] of cases) {
      let caught: unknown;
      try {
        t.load(cfg);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(TlsLoadError);
      expect((caught as Error).message).toMatch(message);
      expect(t.certificate!.subject).toBe("CN=a.example");
      expect(t.mode).toBe("allow");
    }
  });
});

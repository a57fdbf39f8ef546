// Invariant: a config is either a frozen snapshot with every default from SCHEMA applied, or the complete list of
// errors, each exactly `path: expected X, got Y`; and examples/pgroute.toml documents every key with its default.
import { describe, expect, test } from "bun:test";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "smol-toml";
import { ConfigLoadError, configFrom, loadConfig, parseConfig } from "../../src/config/load.ts";
import { formatConfigError, parseDuration, parseSize, SCHEMA, validate, type KeySpec } from "../../src/config/schema.ts";
import type { Config } from "../../src/config/types.ts";

const EXAMPLE = join(import.meta.dir, "../../examples/pgroute.toml");
const minimal = { nodes: [{ name: "p" }], users: [{ name: "u", password: "pw" }] };

/** The error lines `validate` reports for `raw`, or [] if it is valid. */
function errorsOf(raw: unknown): string[] {
  const result = validate(raw);
  return "errors" in result ? result.errors.map(formatConfigError) : [];
}

/** `raw` with `patch` merged one level deep into its sections. */
function withSection(section: string, patch: Record<string, unknown>): unknown {
  return { ...minimal, [section]: patch };
}

describe("validate: exact messages", () => {
  test("bad port type", () => {
    expect(errorsOf({ nodes: [{ name: "a" }, { name: "b", port: "abc" }] })).toEqual([
      `nodes[1].port: expected an integer 1-65535, got "abc"`,
    ]);
  });

  test("out-of-range port", () => {
    expect(errorsOf({ nodes: [{ name: "a", port: 70000 }] })).toEqual([
      "nodes[0].port: expected an integer 1-65535, got 70000",
    ]);
    expect(errorsOf(withSection("listen", { port: -1 }))).toEqual(["listen.port: expected an integer 0-65535, got -1"]);
  });

  test("bad enum", () => {
    expect(errorsOf(withSection("pool", { mode: "sesion" }))).toEqual([
      `pool.mode: expected one of "session", "transaction", got "sesion"`,
    ]);
  });

  test("bad duration", () => {
    expect(errorsOf(withSection("pool", { checkout_timeout: "abc" }))).toEqual([
      `pool.checkout_timeout: expected a duration like "5s" or "250ms", got "abc"`,
    ]);
    expect(errorsOf(withSection("pool", { idle_timeout: "0s" }))).toEqual([
      `pool.idle_timeout: expected a duration from 1ms to 596h, got "0s"`,
    ]);
  });

  test("bad size", () => {
    expect(errorsOf(withSection("limits", { max_message_size: "64MB" }))).toEqual([
      `limits.max_message_size: expected a size like "64MiB" or "512KiB", got "64MB"`,
    ]);
    expect(errorsOf(withSection("limits", { max_message_size: "2GiB" }))).toEqual([
      `limits.max_message_size: expected a size from 1KiB to 1GiB, got "2GiB"`,
    ]);
  });

  test("unknown key, with and without a suggestion", () => {
    expect(errorsOf(withSection("pool", { sise: 3 }))).toEqual([`pool.sise: unknown key (did you mean "size"?)`]);
    expect(errorsOf({ ...minimal, node: {} })).toEqual([`node: unknown key (did you mean "nodes"?)`]);
    expect(errorsOf({ nodes: [{ name: "a", hots: "x", colour: "red" }] })).toEqual([
      `nodes[0].hots: unknown key (did you mean "host"?)`,
      "nodes[0].colour: unknown key",
    ]);
  });

  test("missing required", () => {
    expect(errorsOf({ nodes: [{ host: "db" }] })).toEqual(["nodes[0].name: required"]);
    expect(errorsOf({ users: [] })).toEqual(["nodes: required (add at least one [[nodes]] table)"]);
    expect(errorsOf({ nodes: [] })).toEqual(["nodes: expected at least one node, got an empty array"]);
  });

  test("duplicate names", () => {
    expect(errorsOf({ nodes: [{ name: "x" }, { name: "y" }, { name: "x" }] })).toEqual([`nodes[2].name: duplicate name "x"`]);
    expect(errorsOf({ nodes: [{ name: "x" }], users: [{ name: "u", auth: "trust" }, { name: "u", auth: "trust" }] })).toEqual(
      [`users[1].name: duplicate name "u"`],
    );
  });

  test("at most one primary", () => {
    expect(errorsOf({ nodes: [{ name: "a", role: "primary" }, { name: "b", role: "primary" }] })).toEqual([
      `nodes[1].role: at most one node may be "primary" (nodes[0] is)`,
    ]);
  });

  test("credentials per auth method", () => {
    const users = (...u: object[]) => ({ nodes: [{ name: "a" }], users: u });
    expect(errorsOf(users({ name: "a" }))).toEqual([
      `users[0].password: required for auth "scram-sha-256" unless scram_verifier is given`,
    ]);
    expect(errorsOf(users({ name: "a", auth: "md5", scram_verifier: "x" }))[1]).toBe(
      `users[0].password: required for auth "md5" unless md5_hash is given`,
    );
    expect(errorsOf(users({ name: "t", auth: "trust" }, { name: "m", auth: "md5", md5_hash: `md5${"a".repeat(32)}` }))).toEqual([]);
  });

  test("hash formats are checked and never echoed", () => {
    const bad = "SCRAM-SHA-256$4096:c2FsdA==$notakey:notakey";
    expect(errorsOf({ nodes: [{ name: "a" }], users: [{ name: "u", scram_verifier: bad, md5_hash: "md5abc" }] })).toEqual([
      `users[0].scram_verifier: expected "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" as in pg_authid, got a ${bad.length}-character string`,
      `users[0].md5_hash: expected "md5" followed by 32 lowercase hex digits, got a 6-character string`,
    ]);
    expect(errorsOf({ nodes: [{ name: "a" }], users: [{ name: "u", password: 1234 }] })).toEqual([
      "users[0].password: expected a non-empty string, got a number",
    ]);
  });

  test("admin.listen is HOST:PORT; off when empty; a non-loopback listener needs a token", () => {
    expect(configFrom({ ...minimal, admin: { listen: "127.0.0.1:0" } }).admin.listen).toEqual({ host: "127.0.0.1", port: 0 });
    expect(configFrom({ ...minimal, admin: { listen: "[::1]:9930" } }).admin.listen).toEqual({ host: "::1", port: 9930 });
    expect(configFrom({ ...minimal, admin: { listen: "localhost:9930" } }).admin.token).toBeUndefined();
    expect(configFrom({ ...minimal, admin: { listen: "0.0.0.0:9930", token: "s3cret-token" } }).admin.listen).toEqual({ host: "0.0.0.0", port: 9930 });
    expect(errorsOf({ ...minimal, admin: { listen: "0.0.0.0:9930" } })).toEqual([`admin.token: required when admin.listen is not a loopback address (0.0.0.0)`]);
    expect(errorsOf({ ...minimal, admin: { listen: "10.1.2.3:9930" } })).toEqual([`admin.token: required when admin.listen is not a loopback address (10.1.2.3)`]);
    expect(errorsOf({ ...minimal, admin: { listen: "9930" } })).toEqual([`admin.listen: expected an address like "127.0.0.1:9930" (HOST:PORT, port 0-65535), got "9930"`]);
    expect(errorsOf({ ...minimal, admin: { listen: "127.0.0.1:70000" } })).toEqual([
      `admin.listen: expected an address like "127.0.0.1:9930" (HOST:PORT, port 0-65535), got "127.0.0.1:70000"`,
    ]);
    expect(errorsOf({ ...minimal, admin: { listen: 9930 } })).toEqual([`admin.listen: expected an address like "127.0.0.1:9930", got 9930`]);
    expect(errorsOf({ ...minimal, users: [{ name: "u", password: "pw", role: "root" }] })).toEqual([
      `users[0].role: expected one of "read-write", "read-only", "admin", got "root"`,
    ]);
  });

  test("values are described by kind", () => {
    expect(errorsOf({ nodes: [{ name: "a", port: [1], host: {}, weight: 0, zone: true }] })).toEqual([
      "nodes[0].port: expected an integer 1-65535, got an array",
      "nodes[0].host: expected a non-empty string, got a table",
      "nodes[0].weight: expected a number > 0, got 0",
      "nodes[0].zone: expected a string, got true",
    ]);
    expect(errorsOf({ nodes: { name: "a" } })).toEqual(["nodes: expected an array of tables ([[nodes]]), got a table"]);
    expect(errorsOf({ ...minimal, users: [{ name: "u", auth: "trust", databases: ["a", 2] }] })).toEqual([
      "users[0].databases[1]: expected a string, got 2",
    ]);
    expect(errorsOf("x")).toEqual([`expected a table, got "x"`]);
  });

  test("numbers, booleans and the health, breaker and monitor cross-checks", () => {
    expect(errorsOf(withSection("health", { error_rate_bad: 1.5, min_score: "high" }))).toEqual([
      "health.error_rate_bad: expected a number from 0 to 1, got 1.5",
      `health.min_score: expected a number from 0 to 100, got "high"`,
    ]);
    expect(errorsOf(withSection("monitor", { enabled: "yes" }))).toEqual([`monitor.enabled: expected true or false, got "yes"`]);
    expect(errorsOf(withSection("health", { lag_good: "1s", lag_bad: "500ms", load_good: 0.9, load_bad: 0.5 }))).toEqual([
      "health.lag_good: must be below health.lag_bad",
      "health.load_good: must be below health.load_bad",
    ]);
    const zero = Object.fromEntries(["lag", "latency", "errors", "load", "queue", "breaker"].map((k) => [`weight_${k}`, 0]));
    expect(errorsOf(withSection("health", zero))).toEqual(["health.weight_lag: at least one health weight must be above 0"]);
    expect(errorsOf(withSection("breaker", { cooldown: "10s", max_cooldown: "5s" }))).toEqual(["breaker.max_cooldown: must be at least breaker.cooldown"]);
    expect(errorsOf(withSection("monitor", { password: "x" }))).toEqual(["monitor.user: required when monitor.password is given"]);
    expect(errorsOf(withSection("balance", { strategy: "fastest" }))).toEqual([
      `balance.strategy: expected one of "weighted", "least_connections", "latency", "round_robin", "random", got "fastest"`,
    ]);
  });

  test("multiple errors are reported together, in document order", () => {
    const raw = {
      listen: { port: "6432" },
      nodes: [{ name: "a", port: 0 }, { name: "a", role: "leader" }, { host: "" }],
      users: [{ name: "u" }, { name: "v", auth: "md5", md5_hash: "nope" }],
      pool: { sise: 1, size: 0, checkout_timeout: "5 s" },
      limits: { max_message_size: 100 },
      log: { level: "verbose", colour: true },
      extra: 1,
    };
    expect(errorsOf(raw)).toEqual([
      "extra: unknown key",
      `listen.port: expected an integer 0-65535, got "6432"`,
      "nodes[0].port: expected an integer 1-65535, got 0",
      `nodes[1].role: expected one of "primary", "replica", "auto", got "leader"`,
      `nodes[1].name: duplicate name "a"`,
      `nodes[2].host: expected a non-empty string, got ""`,
      "nodes[2].name: required",
      `users[0].password: required for auth "scram-sha-256" unless scram_verifier is given`,
      `users[1].md5_hash: expected "md5" followed by 32 lowercase hex digits, got a 4-character string`,
      `pool.sise: unknown key (did you mean "size"?)`,
      "pool.size: expected an integer >= 1, got 0",
      `pool.checkout_timeout: expected a duration like "5s" or "250ms", got "5 s"`,
      "limits.max_message_size: expected a size from 1KiB to 1GiB, got 100",
      `log.level: expected one of "debug", "info", "warn", "error", got "verbose"`,
      "log.colour: unknown key",
    ]);
  });
});

describe("validate: values", () => {
  test("defaults are applied from the table", () => {
    const expected: Config = {
      listen: { host: "127.0.0.1", port: 6432 },
      nodes: [{ name: "p", host: "127.0.0.1", port: 5432, role: "auto", weight: 1, zone: "", sslmode: "prefer" }],
      users: [{ name: "u", password: "pw", auth: "scram-sha-256", databases: [], target: "auto", role: "read-write" }],
      pool: {
        mode: "transaction",
        size: 20,
        checkout_timeout_ms: 5_000,
        idle_timeout_ms: 600_000,
        max_lifetime_ms: 3_600_000,
        validate_after_ms: 30_000,
        connect_timeout_ms: 5_000,
        prepared_statements: 200,
      },
      limits: {
        max_client_connections: 10_000,
        max_message_size: 64 * 1024 * 1024,
        login_timeout_ms: 10_000,
        client_buffer: 16 * 1024 * 1024,
        shutdown_timeout_ms: 30_000,
      },
      routing: { transactions: "primary", write_functions: [], read_functions: [] },
      balance: { strategy: "weighted", prefer_zone: "", max_lag_ms: 1_000, latency_decay_ms: 5_000 },
      monitor: {
        enabled: true,
        database: "postgres",
        ping_interval_ms: 1_000,
        ping_timeout_ms: 1_000,
        probe_interval_ms: 5_000,
        probe_timeout_ms: 3_000,
        reconnect_max_ms: 10_000,
        heartbeat_interval_ms: 250,
      },
      health: {
        window_ms: 10_000,
        min_score: 0,
        weight_lag: 30,
        weight_latency: 20,
        weight_errors: 20,
        weight_load: 15,
        weight_queue: 10,
        weight_breaker: 5,
        lag_good_ms: 5,
        lag_bad_ms: 250,
        latency_good_ms: 20,
        latency_bad_ms: 1_000,
        error_rate_bad: 0.05,
        load_good: 0.3,
        load_bad: 0.9,
        queue_good: 10,
        queue_bad: 100,
      },
      breaker: { failures: 3, error_rate: 0.02, min_requests: 20, cooldown_ms: 5_000, max_cooldown_ms: 60_000, half_open_trials: 3 },
      tls: { mode: "disable" },
      policy: { statement_timeout_ms: 0, idle_in_transaction_timeout_ms: 0 },
      firewall: { stats_interval_ms: 60_000, rules: [] },
      ratelimit: {
        max_wait_ms: 1_000,
        user_queries_per_second: 0,
        user_queries_burst: 0,
        user_transactions_per_second: 0,
        user_transactions_burst: 0,
        address_queries_per_second: 0,
        address_queries_burst: 0,
        address_transactions_per_second: 0,
        address_transactions_burst: 0,
        fingerprint_queries_per_second: 0,
        fingerprint_queries_burst: 0,
        fingerprint_transactions_per_second: 0,
        fingerprint_transactions_burst: 0,
        connections_per_second: 0,
        connections_burst: 0,
      },
      mirror: { fraction: 0.1, writes: false, queue_size: 1000, concurrency: 4, timeout_ms: 5_000 },
      consistency: { mode: "none", sticky_ms: 1_000, wait_ms: 0, lsn_poll_interval_ms: 100 },
      failover: {
        failures: 3,
        primary_wait_timeout_ms: 10_000,
        search_interval_ms: 250,
        patroni: [],
        patroni_endpoint: "cluster",
        dns_name: "",
        dns_port: 0,
        discovery_interval_ms: 1_000,
        promote: false,
      },
      log: { level: "info", format: "text" },
      admin: { listen: null, top_queries: 100 },
    };
    expect(configFrom(minimal)).toStrictEqual(expected);
  });

  test("the result is deeply frozen", () => {
    const config = configFrom(minimal);
    for (const v of [config, config.listen, config.nodes, config.nodes[0], config.users[0]!.databases, config.pool]) {
      expect(Object.isFrozen(v)).toBe(true);
    }
    expect(() => {
      (config.pool as { size: number }).size = 1;
    }).toThrow();
  });

  test("durations and sizes are converted", () => {
    const config = configFrom({
      ...minimal,
      pool: { checkout_timeout: "250ms", idle_timeout: "1h30m", max_lifetime: 90_000, validate_after: "1m30s" },
      limits: { max_message_size: "512KiB", login_timeout: "2s" },
    });
    expect(config.pool.checkout_timeout_ms).toBe(250);
    expect(config.pool.idle_timeout_ms).toBe(5_400_000);
    expect(config.pool.max_lifetime_ms).toBe(90_000);
    expect(config.pool.validate_after_ms).toBe(90_000);
    expect(config.limits.max_message_size).toBe(512 * 1024);
    expect(configFrom({ ...minimal, limits: { max_message_size: 2048 } }).limits.max_message_size).toBe(2048);
    expect([parseDuration("1h"), parseDuration("10m"), parseDuration("1s500ms"), parseDuration(""), parseDuration("5")]).toEqual(
      [3_600_000, 600_000, 1_500, undefined, undefined],
    );
    expect([parseSize("100B"), parseSize("1GiB"), parseSize("1.5MiB")]).toEqual([100, 1024 ** 3, undefined]);
  });

  test("optional credentials are absent, not undefined, when not given", () => {
    const user = configFrom(minimal).users[0]!;
    expect(Object.keys(user).sort()).toEqual(["auth", "databases", "name", "password", "role", "target"]);
  });
});

describe("load", () => {
  test("parseConfig reads TOML", () => {
    const config = parseConfig(`[[nodes]]\nname = "p"\nport = 5433\n[pool]\nmode = "transaction"\n`);
    expect(config.nodes[0]!.port).toBe(5433);
    expect(config.pool.mode).toBe("transaction");
  });

  test("a TOML syntax error names its line and column", () => {
    const err = catchLoad(() => parseConfig(`[pool]\nsize = \n`, "x.toml"));
    expect(err.errors).toEqual(["invalid TOML at line 2, column 8: invalid value"]);
    expect(err.message).toBe("x.toml: invalid TOML at line 2, column 8: invalid value");
  });

  test("validation errors are all listed, each prefixed by the source", () => {
    const err = catchLoad(() => parseConfig(`[[nodes]]\nname = "p"\nport = "abc"\n[pool]\nsise = 1\n`, "x.toml"));
    expect(err.message).toBe(
      [`x.toml: nodes[0].port: expected an integer 1-65535, got "abc"`, `x.toml: pool.sise: unknown key (did you mean "size"?)`].join("\n"),
    );
  });

  test("a missing file", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "pgroute-config-")), "absent.toml");
    const err = await loadConfig(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigLoadError);
    expect((err as ConfigLoadError).message).toBe(`cannot read ${path}: no such file`);
    expect((err as ConfigLoadError).errors).toEqual([`cannot read ${path}: no such file`]);
  });

  test("loadConfig reads a file", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "pgroute-config-")), "ok.toml");
    await writeFile(path, `[listen]\nport = 0\n[[nodes]]\nname = "p"\n`);
    expect((await loadConfig(path)).listen.port).toBe(0);
  });
});

function catchLoad(fn: () => unknown): ConfigLoadError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigLoadError) return err;
    throw err;
  }
  throw new Error("expected a ConfigLoadError");
}

describe("examples/pgroute.toml", () => {
  /** The example with its commented-out TOML lines (`# key = value`, `# [[users]]`) switched on. */
  async function exampleUncommented(): Promise<string> {
    const text = await Bun.file(EXAMPLE).text();
    return text
      .split("\n")
      .map((line) => line.replace(/^# (?=\[\[?[a-z_.]+\]\]?\s*$|[a-z0-9_]+ = )/, ""))
      .join("\n");
  }

  test("loads with loadConfig, and still validates with its commented users switched on", async () => {
    await loadConfig(EXAMPLE);
    const config = parseConfig(await exampleUncommented(), "example (uncommented)");
    expect(config.users.map((u) => u.auth)).toEqual(["scram-sha-256", "scram-sha-256", "md5", "trust"]);
  });

  test("every key in the table appears, with a comment, and with the table's default where it has one", async () => {
    const text = await exampleUncommented();
    const raw = parse(text) as Record<string, unknown>;
    const lines = text.split("\n");
    const documents = (name: string, tables: Record<string, unknown>[], keys: readonly KeySpec[]) => {
      for (const spec of keys) {
        // The first occurrence documents a key; later ones (other users) show alternatives.
        const first = tables.find((t) => spec.key in t);
        expect(first, `${name}.${spec.key} is not in the example`).toBeDefined();
        if (spec.type.kind === "tables") {
          // An array of tables ([[firewall.rules]]): its keys are documented under its own header.
          documents(`${name}.${spec.key}`, first![spec.key] as Record<string, unknown>[], spec.type.keys);
          continue;
        }
        if (spec.default !== undefined) expect(first![spec.key], `${name}.${spec.key}`).toEqual(spec.default);
        const line = lines.find((l) => l.startsWith(`${spec.key} = `) && sectionOf(lines, l) === name);
        expect(line, `${name}.${spec.key} has no comment`).toMatch(/ # \S/);
      }
    };
    for (const section of SCHEMA) {
      const value = raw[section.name];
      documents(section.name, (section.many ? value : [value]) as Record<string, unknown>[], section.keys);
    }
  });

  test("every key in the example is in the table", async () => {
    const raw = parse(await exampleUncommented()) as Record<string, unknown>;
    expect(Object.keys(raw).sort()).toEqual(SCHEMA.map((s) => s.name).sort());
    const known = (tables: Record<string, unknown>[], keys: readonly KeySpec[]) => {
      for (const table of tables) {
        for (const k of Object.keys(table)) {
          const spec = keys.find((s) => s.key === k);
          expect(spec, k).toBeDefined();
          if (spec!.type.kind === "tables") known(table[k] as Record<string, unknown>[], spec!.type.keys);
        }
      }
    };
    for (const section of SCHEMA) {
      const value = raw[section.name];
      known((section.many ? value : [value]) as Record<string, unknown>[], section.keys);
    }
  });
});

/** The `[section]` or `[[section]]` header a line falls under. */
function sectionOf(lines: string[], line: string): string | undefined {
  const header = lines
    .slice(0, lines.indexOf(line))
    .reverse()
    .find((l) => /^\[\[?[a-z_.]+\]\]?/.test(l));
  return header?.replace(/[[\]]/g, "").trim();
}

/**
 * The configuration schema: one table (`SCHEMA`) listing every key with its type and default, and `validate`,
 * which turns the raw object a TOML parser produces into a frozen `Config`, or into every error at once, each
 * named by its key path (`nodes[1].port: expected an integer 1-65535, got "abc"`).
 *
 * Defaults are written in the table as raw TOML values ("5s", "64MiB") and go through the same conversion as
 * user input, so a default can never bypass validation, and `examples/pgroute.toml` is tested against this table.
 */
import { checkFirewall } from "./firewall.ts";
import type { BalanceStrategy, ClientAuthMethod, ConsistencyMode, ClientTlsMode, Config, FirewallAction, FirewallRuleKind, LogFormat, LogLevel, NodeRole, PoolMode, ServerSslMode, UserRole } from "./types.ts";
import { RATE_SCOPES, checkBursts, checkMirror, checkRateLimits } from "./policy.ts";

/** One validation problem. Rendered as `path: message` by `formatConfigError`. */
export interface ConfigError {
  /** Key path as the user would write it: `pool.size`, `nodes[1].port`; empty for the document itself. */
  readonly path: string;
  readonly message: string;
}

/** `path: message`, the one line a user sees for an error. */
export function formatConfigError(error: ConfigError): string {
  return error.path === "" ? error.message : `${error.path}: ${error.message}`;
}

/** The type of one key's value, which decides how raw input is checked and converted. */
export type ValueType =
  | { readonly kind: "string"; readonly nonEmpty: boolean }
  /** A credential: its value never appears in an error message (an md5 hash is as good as the password). */
  | { readonly kind: "secret"; readonly pattern?: RegExp; readonly expected?: string }
  | { readonly kind: "enum"; readonly values: readonly string[] }
  | { readonly kind: "int"; readonly min: number; readonly max?: number }
  | { readonly kind: "positive" }
  /** A number (integer or float) from `min` to `max` (no upper bound when absent): rates per second, fractions. */
  | { readonly kind: "number"; readonly min: number; readonly max?: number }
  | { readonly kind: "bool" }
  /** A string like "1h30m" or an integer of milliseconds; stored in milliseconds. `orZero`: 0 means "none". */
  | { readonly kind: "duration"; readonly orZero?: boolean }
  /** A string like "64MiB" or an integer of bytes; stored in bytes. */
  | { readonly kind: "size"; readonly min: number; readonly max: number }
  | { readonly kind: "strings" }
  /** "HOST:PORT" (IPv6 in brackets), stored as `{ host, port }`; "" is stored as null (turned off). */
  | { readonly kind: "address" }
  /** An array of tables (`[[firewall.rules]]`), each read with these keys. */
  | { readonly kind: "tables"; readonly keys: readonly KeySpec[] };

/** A default as it would be written in TOML. */
export type RawDefault = string | number | boolean | readonly string[];

/** One key of a section. */
export interface KeySpec {
  /** The TOML key (snake_case). */
  readonly key: string;
  /** The `Config` field it fills: the key itself, or `<key>_ms` for durations. */
  readonly field: string;
  readonly type: ValueType;
  /** Absent for keys that are either required or simply optional. */
  readonly default?: RawDefault;
  readonly required: boolean;
}

/** A top-level TOML table (`[pool]`) or array of tables (`[[nodes]]`). */
export interface SectionSpec {
  readonly name: keyof Config;
  /** True for `[[nodes]]`-style arrays of tables. */
  readonly many: boolean;
  readonly keys: readonly KeySpec[];
}

const ROLES = ["primary", "replica", "auto"] as const satisfies readonly NodeRole[];
const AUTH_METHODS = ["scram-sha-256", "md5", "trust"] as const satisfies readonly ClientAuthMethod[];
const POOL_MODES = ["session", "transaction"] as const satisfies readonly PoolMode[];
const TARGETS = ["primary", "replica", "auto"] as const;
const TRANSACTIONS = ["primary", "first-statement"] as const;
const LOG_LEVELS = ["debug", "info", "warn", "error"] as const satisfies readonly LogLevel[];
const LOG_FORMATS = ["text", "json"] as const satisfies readonly LogFormat[];
const TLS_MODES = ["disable", "allow", "require"] as const satisfies readonly ClientTlsMode[];
const SSL_MODES = ["disable", "prefer", "require", "verify-ca", "verify-full"] as const satisfies readonly ServerSslMode[];
const USER_ROLES = ["read-write", "read-only", "admin"] as const satisfies readonly UserRole[];
const RULE_KINDS = ["statement", "missing_where", "unbounded_select", "select_star", "tables", "functions"] as const satisfies readonly FirewallRuleKind[];
const RULE_ACTIONS = ["deny", "log"] as const satisfies readonly FirewallAction[];

const STRATEGIES = ["weighted", "least_connections", "latency", "round_robin", "random"] as const satisfies readonly BalanceStrategy[];
const CONSISTENCY = ["none", "sticky", "lsn"] as const satisfies readonly ConsistencyMode[];
const PATRONI_ENDPOINTS = ["cluster", "leader"] as const;

const KiB = 1024;
const GiB = 1024 * 1024 * 1024;

const str = (nonEmpty = true): ValueType => ({ kind: "string", nonEmpty });
const oneOf = (values: readonly string[]): ValueType => ({ kind: "enum", values });
const int = (min: number, max?: number): ValueType => (max === undefined ? { kind: "int", min } : { kind: "int", min, max });
const duration: ValueType = { kind: "duration" };
/** A duration where 0 switches the feature off. */
const durationOrZero: ValueType = { kind: "duration", orZero: true };
const strings: ValueType = { kind: "strings" };
const fraction: ValueType = { kind: "number", min: 0, max: 1 };
const weight: ValueType = { kind: "number", min: 0, max: 1000 };
/** Events per second; 0 turns the limit off. */
const rate: ValueType = { kind: "number", min: 0 };
const bool: ValueType = { kind: "bool" };

function key(name: string, type: ValueType, dflt?: RawDefault): KeySpec {
  const field = type.kind === "duration" ? `${name}_ms` : name;
  return dflt === undefined ? { key: name, field, type, required: false } : { key: name, field, type, default: dflt, required: false };
}
function required(name: string, type: ValueType): KeySpec {
  return { key: name, field: name, type, required: true };
}

/** `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, keys being base64 of 32 bytes, as Postgres stores it. */
const SCRAM_VERIFIER = /^SCRAM-SHA-256\$[1-9]\d*:(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/;
const MD5_HASH = /^md5[0-9a-f]{32}$/;
/** A plain table name, optionally schema-qualified (the heartbeat table), safe to quote as identifiers. */
export const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?$/;

/**
 * Every configuration key, its type and its default — the only place defaults are written.
 * Order matters only for documentation: it is the order of `examples/pgroute.toml`.
 */
export const SCHEMA: readonly SectionSpec[] = [
  {
    name: "listen",
    many: false,
    keys: [key("host", str(), "127.0.0.1"), key("port", int(0, 65535), 6432)], // 0: any free port (tests)
  },
  {
    name: "tls",
    many: false,
    keys: [key("mode", oneOf(TLS_MODES), "disable"), key("cert", str()), key("key", str())],
  },
  {
    name: "nodes",
    many: true,
    keys: [
      required("name", str()),
      key("host", str(), "127.0.0.1"),
      key("port", int(1, 65535), 5432),
      key("role", oneOf(ROLES), "auto"),
      key("weight", { kind: "positive" }, 1),
      key("zone", str(false), ""),
      key("sslmode", oneOf(SSL_MODES), "prefer"),
      key("sslrootcert", str()),
    ],
  },
  {
    name: "users",
    many: true,
    keys: [
      required("name", str()),
      key("password", { kind: "secret" }),
      key("scram_verifier", {
        kind: "secret",
        pattern: SCRAM_VERIFIER,
        expected: `"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" as in pg_authid`,
      }),
      key("md5_hash", { kind: "secret", pattern: MD5_HASH, expected: `"md5" followed by 32 lowercase hex digits` }),
      key("auth", oneOf(AUTH_METHODS), "scram-sha-256"),
      key("databases", { kind: "strings" }, []),
      key("server_user", str()),
      key("server_password", { kind: "secret" }),
      key("target", oneOf(TARGETS), "auto"),
      key("role", oneOf(USER_ROLES), "read-write"),
      key("zone", str()),
      key("statement_timeout", durationOrZero),
      key("idle_in_transaction_timeout", durationOrZero),
      // Per-user overrides of [ratelimit] user_*: no default, absent means the [ratelimit] value.
      key("queries_per_second", rate),
      key("queries_burst", rate),
      key("transactions_per_second", rate),
      key("transactions_burst", rate),
      key("consistency", oneOf(CONSISTENCY)),
    ],
  },
  {
    name: "pool",
    many: false,
    keys: [
      key("mode", oneOf(POOL_MODES), "transaction"),
      key("size", int(1), 20),
      key("checkout_timeout", duration, "5s"),
      key("idle_timeout", duration, "10m"),
      key("max_lifetime", duration, "1h"),
      key("validate_after", duration, "30s"),
      key("connect_timeout", duration, "5s"),
      key("prepared_statements", int(1, 100000), 200),
    ],
  },
  {
    name: "limits",
    many: false,
    keys: [
      key("max_client_connections", int(1), 10000),
      key("max_message_size", { kind: "size", min: KiB, max: GiB }, "64MiB"),
      key("login_timeout", duration, "10s"),
      key("client_buffer", { kind: "size", min: KiB, max: GiB }, "16MiB"),
      key("shutdown_timeout", duration, "30s"),
    ],
  },
  {
    name: "routing",
    many: false,
    keys: [
      key("transactions", oneOf(TRANSACTIONS), "primary"),
      key("write_functions", { kind: "strings" }, []),
      key("read_functions", { kind: "strings" }, []),
    ],
  },
  {
    name: "policy",
    many: false,
    keys: [key("statement_timeout", durationOrZero, 0), key("idle_in_transaction_timeout", durationOrZero, 0)],
  },
  {
    name: "firewall",
    many: false,
    keys: [
      key("stats_interval", duration, "1m"),
      key("stats_user", str()),
      key("rules", {
        kind: "tables",
        keys: [
          required("name", str()),
          required("kind", oneOf(RULE_KINDS)),
          key("action", oneOf(RULE_ACTIONS), "deny"),
          key("message", str(false), ""),
          key("users", strings, []),
          key("statements", strings),
          key("min_rows", int(0)),
          key("max_columns", int(0)),
          key("tables", strings),
          key("functions", strings),
        ],
      }, []),
    ],
  },
  {
    name: "balance",
    many: false,
    keys: [
      key("strategy", oneOf(STRATEGIES), "weighted"),
      key("prefer_zone", str(false), ""),
      key("max_lag", duration, "1s"),
      key("max_lag_bytes", { kind: "size", min: 1, max: 2 ** 52 }),
      key("max_lag_local", duration),
      key("max_lag_remote", duration),
      key("latency_decay", duration, "5s"),
    ],
  },
  {
    name: "monitor",
    many: false,
    keys: [
      key("enabled", { kind: "bool" }, true),
      key("user", str()),
      key("password", { kind: "secret" }),
      key("database", str(), "postgres"),
      key("ping_interval", duration, "1s"),
      key("ping_timeout", duration, "1s"),
      key("probe_interval", duration, "5s"),
      key("probe_timeout", duration, "3s"),
      key("reconnect_max", duration, "10s"),
      key("heartbeat_table", str()),
      key("heartbeat_interval", duration, "250ms"),
      key("cpu_query", str()),
    ],
  },
  {
    name: "health",
    many: false,
    keys: [
      key("window", duration, "10s"),
      key("min_score", { kind: "number", min: 0, max: 100 }, 0),
      key("weight_lag", weight, 30),
      key("weight_latency", weight, 20),
      key("weight_errors", weight, 20),
      key("weight_load", weight, 15),
      key("weight_queue", weight, 10),
      key("weight_breaker", weight, 5),
      key("lag_good", duration, "5ms"),
      key("lag_bad", duration, "250ms"),
      key("latency_good", duration, "20ms"),
      key("latency_bad", duration, "1s"),
      key("error_rate_bad", fraction, 0.05),
      key("load_good", fraction, 0.3),
      key("load_bad", fraction, 0.9),
      key("queue_good", int(0), 10),
      key("queue_bad", int(1), 100),
    ],
  },
  {
    name: "breaker",
    many: false,
    keys: [
      key("failures", int(1), 3),
      key("error_rate", fraction, 0.02),
      key("min_requests", int(1), 20),
      key("cooldown", duration, "5s"),
      key("max_cooldown", duration, "1m"),
      key("half_open_trials", int(1, 1000), 3),
    ],
  },
  {
    name: "ratelimit",
    many: false,
    keys: [
      key("max_wait", durationOrZero, "1s"),
      ...RATE_SCOPES.flatMap((scope) =>
        ["queries", "transactions"].flatMap((kind) => [key(`${scope}_${kind}_per_second`, rate, 0), key(`${scope}_${kind}_burst`, rate, 0)]),
      ),
      key("connections_per_second", rate, 0),
      key("connections_burst", rate, 0),
    ],
  },
  {
    name: "mirror",
    many: false,
    keys: [
      // The URL carries a password: never shown in an error message.
      key("url", { kind: "secret", pattern: /^postgres(?:ql)?:\/\/./, expected: `a URL like "postgres://user:password@host:5432/dbname"` }),
      key("fraction", { kind: "number", min: 0, max: 1 }, 0.1),
      key("writes", bool, false),
      key("queue_size", int(1, 1_000_000), 1000),
      key("concurrency", int(1, 1000), 4),
      key("timeout", duration, "5s"),
    ],
  },
  {
    name: "consistency",
    many: false,
    keys: [
      key("mode", oneOf(CONSISTENCY), "none"),
      key("sticky", duration, "1s"),
      key("wait", durationOrZero, 0),
      key("lsn_poll_interval", duration, "100ms"),
    ],
  },
  {
    name: "failover",
    many: false,
    keys: [
      key("failures", int(1, 1000), 3),
      key("primary_wait_timeout", durationOrZero, "10s"),
      key("search_interval", duration, "250ms"),
      key("patroni", strings, []),
      key("patroni_endpoint", oneOf(PATRONI_ENDPOINTS), "cluster"),
      key("dns_name", str(false), ""),
      key("dns_port", int(0, 65535), 0),
      key("discovery_interval", duration, "1s"),
      key("promote", { kind: "bool" }, false),
    ],
  },
  {
    name: "log",
    many: false,
    keys: [key("level", oneOf(LOG_LEVELS), "info"), key("format", oneOf(LOG_FORMATS), "text")],
  },
  {
    name: "admin",
    many: false,
    keys: [key("listen", { kind: "address" }, ""), key("token", { kind: "secret" }), key("top_queries", int(1, 10000), 100)],
  },
];

/** The raw (TOML) default of `section.key`, for prompts and docs; throws on a key the schema lacks. */
export function defaultOf(section: keyof Config, name: string): RawDefault | undefined {
  const spec = SCHEMA.find((s) => s.name === section)?.keys.find((k) => k.key === name);
  if (!spec) throw new Error(`no such config key: ${section}.${name}`);
  return spec.default;
}

// ---- units ----

/** setTimeout fires at once for delays above 2^31-1 ms, so no duration may exceed it. */
const MAX_DURATION_MS = 2 ** 31 - 1;
const DURATION = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/;
const SIZE = /^(\d+)(B|KiB|MiB|GiB)$/;
const SIZE_UNITS: Record<string, number> = { B: 1, KiB: KiB, MiB: KiB * KiB, GiB: GiB };

/** Milliseconds in a duration string like "1h30m" or "250ms", or undefined if it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text);
  if (!m || text === "") return undefined;
  const [h, min, s, ms] = m.slice(1).map((part) => Number(part ?? 0)) as [number, number, number, number];
  return ((h * 60 + min) * 60 + s) * 1000 + ms;
}

/** Bytes in a size string like "64MiB", or undefined if it is not one. */
export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text);
  return m ? Number(m[1]) * SIZE_UNITS[m[2]!]! : undefined;
}

/** The shortest exact spelling of a byte count: 1073741824 → "1GiB". */
export function formatSize(bytes: number): string {
  for (const unit of ["GiB", "MiB", "KiB"]) {
    const n = SIZE_UNITS[unit]!;
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return `${bytes}B`;
}

/** `HOST:PORT` (`[::1]:9930` for IPv6) → `{ host, port }`, or null when it is not one. */
export function parseAddress(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) return null;
  return { host: m[1] ?? m[2]!, port };
}

/** Whether `host` can only be reached from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

// ---- describing values in messages ----

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** How a value is shown after "got": strings JSON-quoted, numbers bare, containers by kind. */
function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : Number.isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";
  if (typeof v === "boolean" || typeof v === "bigint") return String(v);
  if (v instanceof Date) return "a date";
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  return "nothing";
}

/** Like `describe`, without revealing a credential. */
function describeSecret(v: unknown): string {
  if (typeof v === "string") return v === "" ? `""` : `a ${v.length}-character string`;
  if (typeof v === "number" || typeof v === "bigint") return "a number";
  return describe(v);
}

// ---- converting one value ----

type Converted = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly errors: ConfigError[] };

const mismatch = (path: string, expected: string, got: string): ConfigError => ({
  path,
  message: `expected ${expected}, got ${got}`,
});
const fail = (path: string, expected: string, got: string): Converted => ({ ok: false, errors: [mismatch(path, expected, got)] });

function convert(type: ValueType, v: unknown, path: string): Converted {
  switch (type.kind) {
    case "string":
      if (typeof v !== "string" || (type.nonEmpty && v === "")) {
        return fail(path, type.nonEmpty ? "a non-empty string" : "a string", describe(v));
      }
      return { ok: true, value: v };
    case "secret":
      if (typeof v !== "string" || v === "") return fail(path, "a non-empty string", describeSecret(v));
      if (type.pattern && !type.pattern.test(v)) return fail(path, type.expected ?? "a valid value", describeSecret(v));
      return { ok: true, value: v };
    case "enum":
      if (typeof v !== "string" || !type.values.includes(v)) {
        return fail(path, `one of ${type.values.map((x) => JSON.stringify(x)).join(", ")}`, describe(v));
      }
      return { ok: true, value: v };
    case "int": {
      const expected = type.max === undefined ? `an integer >= ${type.min}` : `an integer ${type.min}-${type.max}`;
      if (typeof v !== "number" || !Number.isInteger(v) || v < type.min || (type.max !== undefined && v > type.max)) {
        return fail(path, expected, describe(v));
      }
      return { ok: true, value: v };
    }
    case "positive":
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) return fail(path, "a number > 0", describe(v));
      return { ok: true, value: v };
    case "number": {
      const expected = type.max === undefined ? `a number >= ${type.min}` : `a number from ${type.min} to ${type.max}`;
      if (typeof v !== "number" || !Number.isFinite(v) || v < type.min || (type.max !== undefined && v > type.max)) return fail(path, expected, describe(v));
      return { ok: true, value: v };
    }
    case "bool":
      if (typeof v !== "boolean") return fail(path, "true or false", describe(v));
      return { ok: true, value: v };
    case "duration": {
      const ms = typeof v === "string" ? parseDuration(v) : typeof v === "number" && Number.isInteger(v) ? v : undefined;
      if (ms === undefined) return fail(path, type.orZero ? `a duration like "5s" or "250ms", or 0 for none` : `a duration like "5s" or "250ms"`, describe(v));
      if (type.orZero && ms === 0) return { ok: true, value: 0 };
      if (ms < 1 || ms > MAX_DURATION_MS) return fail(path, type.orZero ? "a duration from 1ms to 596h, or 0 for none" : "a duration from 1ms to 596h", describe(v));
      return { ok: true, value: ms };
    }
    case "size": {
      const bytes = typeof v === "string" ? parseSize(v) : typeof v === "number" && Number.isInteger(v) ? v : undefined;
      if (bytes === undefined) return fail(path, `a size like "64MiB" or "512KiB"`, describe(v));
      if (bytes < type.min || bytes > type.max) {
        return fail(path, `a size from ${formatSize(type.min)} to ${formatSize(type.max)}`, describe(v));
      }
      return { ok: true, value: bytes };
    }
    case "strings": {
      if (!Array.isArray(v)) return fail(path, "an array of strings", describe(v));
      const errors = v.flatMap((item, i) => (typeof item === "string" ? [] : [mismatch(`${path}[${i}]`, "a string", describe(item))]));
      return errors.length ? { ok: false, errors } : { ok: true, value: Object.freeze([...v]) };
    }
    case "address": {
      if (typeof v !== "string") return fail(path, `an address like "127.0.0.1:9930"`, describe(v));
      if (v === "") return { ok: true, value: null };
      const address = parseAddress(v);
      if (!address) return fail(path, `an address like "127.0.0.1:9930" (HOST:PORT, port 0-65535)`, describe(v));
      return { ok: true, value: address };
    }
    case "tables": {
      if (!Array.isArray(v)) return fail(path, "an array of tables", describe(v));
      const errors: ConfigError[] = [];
      const tables = v.flatMap((item, i) => {
        if (isTable(item)) return [readTable(type.keys, item, `${path}[${i}]`, errors).values];
        errors.push(mismatch(`${path}[${i}]`, "a table", describe(item)));
        return [];
      });
      return errors.length ? { ok: false, errors } : { ok: true, value: tables };
    }
    default: {
      // ValueType is a closed union: a new kind without a case here is a type error.
      const unreachable: never = type;
      throw new Error(`unknown value type ${JSON.stringify(unreachable)}`);
    }
  }
}

// ---- unknown-key suggestions ----

/** Optimal-string-alignment distance, so a swapped pair ("hots") counts as one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

function unknownKey(path: string, name: string, known: readonly string[]): ConfigError {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const distance = editDistance(name.toLowerCase(), candidate);
    const allowed = Math.max(1, Math.min(2, Math.floor(candidate.length / 3)));
    if (distance <= allowed && distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return { path, message: best ? `unknown key (did you mean ${JSON.stringify(best)}?)` : "unknown key" };
}

// ---- tables and sections ----

export interface Table {
  /** Converted values keyed by Config field, defaults filled in. */
  readonly values: Record<string, unknown>;
  /** TOML keys that had an error, so cross-field checks do not pile a second error on them. */
  readonly bad: ReadonlySet<string>;
}

/** Converted defaults, computed once; a default that fails its own type is a bug caught at import. */
const DEFAULTS = new Map<KeySpec, unknown>();
function fillDefaults(keys: readonly KeySpec[], path: string): void {
  for (const spec of keys) {
    if (spec.type.kind === "tables") fillDefaults(spec.type.keys, `${path}.${spec.key}[]`);
    if (spec.default === undefined) continue;
    const result = convert(spec.type, spec.default, `${path}.${spec.key}`);
    if (!result.ok) throw new Error(`bad default: ${result.errors.map(formatConfigError).join("; ")}`);
    DEFAULTS.set(spec, result.value);
  }
}
for (const section of SCHEMA) fillDefaults(section.keys, section.name);

function readTable(keys: readonly KeySpec[], raw: Record<string, unknown>, path: string, errors: ConfigError[]): Table {
  const values: Record<string, unknown> = {};
  const bad = new Set<string>();
  const names = keys.map((k) => k.key);
  // Raw key order is document order, so errors come out in the order a reader meets them in the file.
  for (const [name, v] of Object.entries(raw)) {
    const spec = keys.find((k) => k.key === name);
    if (!spec) {
      errors.push(unknownKey(`${path}.${name}`, name, names));
      continue;
    }
    const result = convert(spec.type, v, `${path}.${name}`);
    if (result.ok) values[spec.field] = result.value;
    else {
      errors.push(...result.errors);
      bad.add(name);
    }
  }
  for (const spec of keys) {
    if (spec.key in raw) continue;
    if (spec.required) {
      errors.push({ path: `${path}.${spec.key}`, message: "required" });
      bad.add(spec.key);
    } else if (DEFAULTS.has(spec)) values[spec.field] = DEFAULTS.get(spec);
  }
  return { values, bad };
}

function readSection(section: SectionSpec, raw: unknown, errors: ConfigError[]): Table | Table[] | undefined {
  const path = section.name;
  if (!section.many) {
    if (raw === undefined) return readTable(section.keys, {}, path, errors);
    if (isTable(raw)) return readTable(section.keys, raw, path, errors);
    errors.push({ path, message: `expected a table, got ${describe(raw)}` });
    return undefined;
  }
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    errors.push({ path, message: `expected an array of tables ([[${path}]]), got ${describe(raw)}` });
    return undefined;
  }
  const tables: Table[] = [];
  raw.forEach((item, i) => {
    if (isTable(item)) tables.push(readTable(section.keys, item, `${path}[${i}]`, errors));
    else errors.push({ path: `${path}[${i}]`, message: `expected a table, got ${describe(item)}` });
  });
  return tables;
}

// ---- cross-field checks ----

function checkUniqueNames(section: string, tables: readonly Table[], errors: ConfigError[]): void {
  const seen = new Set<string>();
  tables.forEach((t, i) => {
    const name = t.values.name;
    if (typeof name !== "string") return;
    if (seen.has(name)) errors.push({ path: `${section}[${i}].name`, message: `duplicate name ${JSON.stringify(name)}` });
    seen.add(name);
  });
}

function checkNodes(nodes: readonly Table[], present: boolean, errors: ConfigError[]): void {
  if (!present) errors.push({ path: "nodes", message: "required (add at least one [[nodes]] table)" });
  else if (nodes.length === 0) errors.push({ path: "nodes", message: "expected at least one node, got an empty array" });
  checkUniqueNames("nodes", nodes, errors);
  let primary: number | undefined;
  nodes.forEach((t, i) => {
    if (t.values.role !== "primary") return;
    if (primary === undefined) primary = i;
    else errors.push({ path: `nodes[${i}].role`, message: `at most one node may be "primary" (nodes[${primary}] is)` });
  });
  // verify-ca against the public CAs would accept any publicly issued certificate: name the CA (libpq does too).
  nodes.forEach((t, i) => {
    if (t.values.sslmode === "verify-ca" && t.values.sslrootcert === undefined && !t.bad.has("sslrootcert")) {
      errors.push({ path: `nodes[${i}].sslrootcert`, message: `required for sslmode "verify-ca"` });
    }
  });
}

/** TLS towards clients needs a certificate and its key. */
function checkTls(tls: Table, errors: ConfigError[]): void {
  const mode = tls.values.mode;
  if (mode === "disable" || tls.bad.has("mode")) return;
  for (const name of ["cert", "key"]) {
    if (tls.values[name] === undefined && !tls.bad.has(name)) errors.push({ path: `tls.${name}`, message: `required when tls.mode is "${mode}"` });
  }
}

/** Each client auth method needs something to verify the client against. */
const CREDENTIAL_FOR: Partial<Record<ClientAuthMethod, string>> = { "scram-sha-256": "scram_verifier", md5: "md5_hash" };

function checkUsers(users: readonly Table[], errors: ConfigError[]): void {
  checkUniqueNames("users", users, errors);
  users.forEach((t, i) => {
    checkBursts(t, `users[${i}]`, errors);
    const auth = t.values.auth as ClientAuthMethod;
    const alternative = CREDENTIAL_FOR[auth];
    if (t.bad.has("auth") || alternative === undefined || t.bad.has("password") || t.bad.has(alternative)) return;
    if (t.values.password === undefined && t.values[alternative] === undefined) {
      errors.push({ path: `users[${i}].password`, message: `required for auth "${auth}" unless ${alternative} is given` });
    }
  });
}

/** An admin listener anyone on the network can reach must ask for a token. */
function checkAdmin(admin: Table, errors: ConfigError[]): void {
  const listen = admin.values.listen as { host: string; port: number } | null | undefined;
  if (!listen || admin.bad.has("token") || admin.values.token !== undefined || isLoopback(listen.host)) return;
  errors.push({ path: "admin.token", message: `required when admin.listen is not a loopback address (${listen.host})` });
}

/** Each score signal's good threshold must be below its bad one, and the weights may not all be 0. */
function checkHealth(health: Table, errors: ConfigError[]): void {
  const v = health.values;
  for (const [good, bad] of [
    ["lag_good", "lag_bad"],
    ["latency_good", "latency_bad"],
    ["load_good", "load_bad"],
    ["queue_good", "queue_bad"],
  ] as const) {
    if (health.bad.has(good) || health.bad.has(bad)) continue;
    // Durations are stored under `<key>_ms`.
    const value = (k: string) => (v[k] ?? v[`${k}_ms`]) as number;
    if (value(good) >= value(bad)) errors.push({ path: `health.${good}`, message: `must be below health.${bad}` });
  }
  const weights = Object.entries(v).filter(([k]) => k.startsWith("weight_"));
  if (weights.every(([, w]) => w === 0) && !weights.some(([k]) => health.bad.has(k))) {
    errors.push({ path: "health.weight_lag", message: "at least one health weight must be above 0" });
  }
}

/** The breaker's cooldown cap cannot be below the cooldown it doubles from. */
function checkBreaker(breaker: Table, errors: ConfigError[]): void {
  const v = breaker.values;
  if (breaker.bad.has("cooldown") || breaker.bad.has("max_cooldown")) return;
  if ((v.max_cooldown_ms as number) < (v.cooldown_ms as number)) errors.push({ path: "breaker.max_cooldown", message: "must be at least breaker.cooldown" });
}

/** A monitor user needs no password only when the servers trust it; a password without a user means nothing. */
function checkMonitor(monitor: Table, errors: ConfigError[]): void {
  const v = monitor.values;
  const table = v.heartbeat_table as string | undefined;
  if (table !== undefined && !TABLE_NAME.test(table)) errors.push({ path: "monitor.heartbeat_table", message: `expected a table name like "pgroute_heartbeat" or "schema.table", got ${describe(table)}` });
  if (v.password !== undefined && v.user === undefined && !monitor.bad.has("user")) errors.push({ path: "monitor.user", message: "required when monitor.password is given" });
}

/** Patroni endpoints are http(s) base URLs (the REST API's paths are appended). */
function checkFailover(failover: Table, errors: ConfigError[]): void {
  if (failover.bad.has("patroni")) return;
  (failover.values.patroni as readonly string[]).forEach((u, i) => {
    let ok = false;
    try {
      const url = new URL(u);
      ok = (url.protocol === "http:" || url.protocol === "https:") && url.search === "" && url.hash === "";
    } catch {
      ok = false;
    }
    if (!ok) errors.push(mismatch(`failover.patroni[${i}]`, `a Patroni REST API address like "http://10.0.0.1:8008"`, describe(u)));
  });
}

// ---- validate ----

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** The outcome of `validate`: a config, or every error found. */
export type ValidateResult = { readonly config: Config } | { readonly errors: ConfigError[] };

/**
 * Checks a raw configuration object (as parsed from TOML) against `SCHEMA`, fills in defaults and converts units.
 * Reports every problem at once rather than the first, so one edit fixes a file. The config is deeply frozen.
 */
export function validate(raw: unknown): ValidateResult {
  if (!isTable(raw)) return { errors: [{ path: "", message: `expected a table, got ${describe(raw)}` }] };
  const errors: ConfigError[] = [];
  const read = new Map<string, Table | Table[] | undefined>();
  const sectionNames = SCHEMA.map((s) => s.name);
  for (const name of Object.keys(raw)) {
    if (!SCHEMA.some((s) => s.name === name)) errors.push(unknownKey(name, name, sectionNames));
  }
  // Sections in document order, then the absent ones (which only fill defaults or report "required").
  const order = [...SCHEMA].sort((a, b) => rank(raw, a.name) - rank(raw, b.name));
  for (const section of order) {
    const found: ConfigError[] = [];
    const table = readSection(section, raw[section.name], found);
    read.set(section.name, table);
    // A nodes value of the wrong type was reported already; "at least one" only applies to an array or nothing.
    if (section.name === "nodes" && (Array.isArray(table) || raw.nodes === undefined)) {
      checkNodes(Array.isArray(table) ? table : [], raw.nodes !== undefined, found);
    }
    if (section.name === "users" && Array.isArray(table)) checkUsers(table, found);
    if (section.name === "tls" && table !== undefined && !Array.isArray(table)) checkTls(table, found);
    if (section.name === "admin" && table !== undefined && !Array.isArray(table)) checkAdmin(table, found);
    if (section.name === "health" && table !== undefined && !Array.isArray(table)) checkHealth(table, found);
    if (section.name === "breaker" && table !== undefined && !Array.isArray(table)) checkBreaker(table, found);
    if (section.name === "monitor" && table !== undefined && !Array.isArray(table)) checkMonitor(table, found);
    if (section.name === "ratelimit" && table !== undefined && !Array.isArray(table)) checkRateLimits(table, found);
    if (section.name === "mirror" && table !== undefined && !Array.isArray(table)) checkMirror(table, found);
    if (section.name === "failover" && table !== undefined && !Array.isArray(table)) checkFailover(table, found);
    // Cross-field errors are found after a whole array is read; regroup them under their element.
    errors.push(...found.sort((a, b) => elementIndex(a.path) - elementIndex(b.path)));
  }
  // Rules name users, so they are checked once every section is read.
  const firewall = read.get("firewall");
  const users = read.get("users");
  if (firewall !== undefined && !Array.isArray(firewall)) {
    const found: ConfigError[] = [];
    checkFirewall(firewall, Array.isArray(users) ? users : [], found);
    errors.push(...found.sort((a, b) => ruleIndex(a.path) - ruleIndex(b.path)));
  }
  if (errors.length > 0) return { errors };
  const config: Record<string, unknown> = {};
  for (const section of SCHEMA) {
    const table = read.get(section.name);
    config[section.name] = Array.isArray(table) ? table.map((t) => t.values) : table!.values;
  }
  return { config: deepFreeze(config as unknown as Config) };
}

function rank(raw: Record<string, unknown>, name: string): number {
  const i = Object.keys(raw).indexOf(name);
  return i === -1 ? Number.MAX_SAFE_INTEGER : i;
}

/** `n` in `firewall.rules[n]...`; -1 for other paths, which sort first. */
function ruleIndex(path: string): number {
  const m = /^firewall\.rules\[(\d+)\]/.exec(path);
  return m ? Number(m[1]) : -1;
}

/** `n` in `users[n]...`; -1 for a path about the whole section, which sorts first. */
function elementIndex(path: string): number {
  const m = /^[a-z_]+\[(\d+)\]/.exec(path);
  return m ? Number(m[1]) : -1;
}

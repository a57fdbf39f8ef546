/**
 * Validation of the policy sections — `[ratelimit]`, the per-user rate keys and `[mirror]` — beyond what a single
 * key's type says: bursts that could never admit a statement, a shadow URL that cannot be used, and mirroring in
 * a pool mode that cannot observe replies. Also the one parser of the shadow URL, shared with src/policy/mirror.ts.
 */
import type { ConfigError, Table } from "./schema.ts";
import type { ServerSslMode } from "./types.ts";

/** Who a rate limit is counted for: `[ratelimit] <scope>_<kind>_per_second`. */
export const RATE_SCOPES = ["user", "address", "fingerprint"] as const;
export type RateScope = (typeof RATE_SCOPES)[number];

/**
 * A burst below 1 with a rate set would never hold a whole token: every statement would be refused. 0 means "the
 * rate, rounded up", so only values strictly between 0 and 1 are wrong.
 */
export function checkBursts(t: Table, path: string, errors: ConfigError[]): void {
  for (const [field, v] of Object.entries(t.values)) {
    if (!field.endsWith("_burst") || typeof v !== "number" || t.bad.has(field)) continue;
    if (v > 0 && v < 1) errors.push({ path: `${path}.${field}`, message: `expected 0 (the rate, rounded up) or a number >= 1, got ${v}` });
  }
}

export function checkRateLimits(t: Table, errors: ConfigError[]): void {
  checkBursts(t, "ratelimit", errors);
}

const SSL_MODES: readonly ServerSslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

/** Where mirrored requests go, from `[mirror] url`. */
export interface ShadowTarget {
  host: string;
  port: number;
  user: string;
  password?: string;
  /** Absent: each request goes to the database of the same name as its client's. */
  database?: string;
  sslmode: ServerSslMode;
  sslrootcert?: string;
}

/**
 * Parses `postgres://user:password@host:port/dbname?sslmode=…&sslrootcert=…` (libpq's URI form, percent-encoding
 * included). Errors never repeat the URL, which holds a password.
 */
export function parseShadowUrl(text: string): { ok: true; target: ShadowTarget } | { ok: false; error: string } {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return { ok: false, error: "is not a valid URL" };
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") return { ok: false, error: `expected the postgres:// scheme, got "${u.protocol}//"` };
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") return { ok: false, error: "needs a host (postgres://user@host:5432/dbname)" };
  if (u.username === "") return { ok: false, error: "needs a user name (postgres://user@host:5432/dbname)" };
  const port = u.port === "" ? 5432 : Number(u.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { ok: false, error: "has an invalid port" };
  const target: ShadowTarget = { host, port, user: decodeURIComponent(u.username), sslmode: "prefer" };
  if (u.password !== "") target.password = decodeURIComponent(u.password);
  const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (database !== "") target.database = database;
  for (const [k, v] of u.searchParams) {
    if (k === "sslmode") {
      if (!SSL_MODES.includes(v as ServerSslMode)) return { ok: false, error: `sslmode must be one of ${SSL_MODES.join(", ")}, got "${v}"` };
      target.sslmode = v as ServerSslMode;
    } else if (k === "sslrootcert") target.sslrootcert = v;
    else return { ok: false, error: `unknown parameter "${k}" (sslmode and sslrootcert are understood)` };
  }
  if (target.sslmode === "verify-ca" && !target.sslrootcert) return { ok: false, error: `sslmode "verify-ca" needs sslrootcert` };
  return { ok: true, target };
}

/** The shadow URL must be usable. */
export function checkMirror(mirror: Table, errors: ConfigError[]): void {
  const url = mirror.values.url;
  if (typeof url !== "string" || mirror.bad.has("url")) return;
  const parsed = parseShadowUrl(url);
  if (!parsed.ok) errors.push({ path: "mirror.url", message: parsed.error });
}

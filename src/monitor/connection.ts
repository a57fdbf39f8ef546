/**
 * The monitor's own connection to one node: postgres.js with a single connection, used for nothing but checks
 * (application_name `pgroute-monitor`, so it is easy to tell apart in pg_stat_activity). Every statement has a
 * time limit; a node that does not answer in time, refuses the connection or drops it has its connection closed,
 * and the next check opens a new one (when is the scheduler's business: monitor.ts backs off).
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import postgres from "postgres";
import type { NodeConfig } from "../config/types.ts";
import { CheckError, type Queryable, type Row } from "./probe.ts";

/** Who the monitor logs in as. */
export interface Credentials {
  readonly user: string;
  readonly password?: string;
  readonly database: string;
}

/** A {@link Queryable} that can be dropped and closed. */
export interface CheckConnection extends Queryable {
  /** How many times it has opened a connection: a check that opened one timed the login too. */
  readonly connects: number;
  /** Closes the connection now; the next query opens another. */
  reset(): void;
  close(): Promise<void>;
}

/** Opens the check connection to a node (tests inject fakes). */
export type Connect = (node: NodeConfig, creds: Credentials, timeoutMs: number) => CheckConnection;

/** TLS for postgres.js with libpq's meaning of the node's `sslmode` (as src/pool/tls.ts does for the pools). */
export function sslOption(node: NodeConfig): postgres.Options<Record<string, never>>["ssl"] {
  const ca = () => readFileSync(node.sslrootcert!, "utf8");
  switch (node.sslmode) {
    case "disable":
      return false;
    case "prefer":
      return "prefer";
    case "require":
      return node.sslrootcert === undefined ? "require" : { ca: ca(), checkServerIdentity: () => undefined };
    case "verify-ca":
      return { ca: ca(), checkServerIdentity: () => undefined };
    case "verify-full": {
      // The name is checked against the node's host as configured, an IP address included (which SNI may not carry).
      const full = { checkServerIdentity: (_: string, cert: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(node.host, cert) };
      const sni = isIP(node.host) ? {} : { servername: node.host };
      return node.sslrootcert === undefined ? { ...full, ...sni } : { ...full, ...sni, ca: ca() };
    }
  }
}

/** Errors a node gives when it is going away, cannot take a connection, or is out of resources. */
function downCode(code: string): boolean {
  return code.startsWith("08") || code.startsWith("53") || code.startsWith("58") || code === "57P01" || code === "57P02" || code === "57P03" || code === "57014";
}

/** A postgres.js error as a {@link CheckError}. */
function checkErrorOf(err: unknown): CheckError {
  if (err instanceof CheckError) return err;
  if (err instanceof postgres.PostgresError) {
    return new CheckError(`${err.message} (${err.code})`, downCode(err.code) ? "down" : "blind", err.code);
  }
  const e = err as Error & { code?: string };
  // Connection-level failures (ECONNREFUSED, CONNECT_TIMEOUT, CONNECTION_CLOSED, TLS errors, …) carry no SQLSTATE.
  return new CheckError(e.message || String(e.code ?? err), "down");
}

class PostgresConnection implements CheckConnection {
  private sql: postgres.Sql | null = null;
  connects = 0;

  constructor(
    private readonly node: NodeConfig,
    private readonly creds: Credentials,
    private readonly timeoutMs: number,
  ) {}

  private open(): postgres.Sql {
    return postgres({
      host: this.node.host,
      port: this.node.port,
      user: this.creds.user,
      ...(this.creds.password === undefined ? {} : { password: this.creds.password }),
      database: this.creds.database,
      max: 1,
      prepare: false,
      fetch_types: false,
      idle_timeout: 0,
      max_lifetime: null,
      connect_timeout: Math.max(1, Math.ceil(this.timeoutMs / 1000)),
      ssl: sslOption(this.node),
      onnotice: () => {},
      // The server gives up on a check pgroute has given up on.
      connection: { application_name: "pgroute-monitor", statement_timeout: this.timeoutMs },
    });
  }

  async query(text: string, timeoutMs: number): Promise<Row[]> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CheckError(`no answer within ${timeoutMs} ms`, "down")), timeoutMs);
    });
    try {
      if (!this.sql) {
        this.sql = this.open();
        this.connects++;
      }
      return [...(await Promise.race([this.sql.unsafe<Row[]>(text), late]))];
    } catch (err) {
      const e = checkErrorOf(err);
      const fatal = err instanceof postgres.PostgresError && (err.severity === "FATAL" || err.severity === "PANIC");
      if (e.kind === "down" || fatal) this.reset();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  reset(): void {
    const sql = this.sql;
    this.sql = null;
    sql?.end({ timeout: 0 }).catch(() => {});
  }

  async close(): Promise<void> {
    const sql = this.sql;
    this.sql = null;
    await sql?.end({ timeout: 1 }).catch(() => {});
  }
}

/** The production {@link Connect}: postgres.js. */
export const connectPostgres: Connect = (node, creds, timeoutMs) => new PostgresConnection(node, creds, timeoutMs);

/**
 * A client's session settings in transaction pooling: what the client set (startup parameters, SET, RESET,
 * set_config(…, false)) follows it from one server connection to the next. Settings made inside a transaction
 * count only once it commits — a rollback (or a ROLLBACK TO SAVEPOINT) undoes them, as in Postgres.
 */
import type { PinReason, SessionOp } from "../router/effects.ts";
import { capSql, withinCap } from "../policy/timeout.ts";

export interface Setting {
  /** Lower-case parameter name (`search_path`, `role`, `session characteristics`). */
  name: string;
  /** The statement that establishes it on a server connection. */
  sql: string;
  /** The value, when known (startup parameters), to skip a SET the server already matches. */
  value?: string;
}

/** What a server connection carries: the settings pgroute applied and the values it reports. */
export interface SettingsCarrier {
  applied: Map<string, string>;
  params: Map<string, string>;
  /** The signature of the settings `applied` matches, when known. */
  appliedSignature: string | null;
}

const TIMEOUT = "statement_timeout";

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(["user", "database", "replication", "options"]);

export const quoteLiteral = (s: string) => `'${s.replaceAll("'", "''")}'`;

/** A parameter name as SET/RESET take it: each dotted part quoted when it is not a plain lower-case word. */
export function quoteName(name: string): string {
  return name
    .split(".")
    .map((p) => (/^[a-z_][a-z0-9_$]*$/.test(p) ? p : `"${p.replaceAll('"', '""')}"`))
    .join(".");
}

function resetSql(name: string): string {
  switch (name) {
    case "role":
      return "RESET ROLE";
    case "session_authorization":
      return "RESET SESSION AUTHORIZATION";
    case "session characteristics":
      return "RESET default_transaction_isolation; RESET default_transaction_read_only; RESET default_transaction_deferrable";
    default:
      return `RESET ${quoteName(name)}`;
  }
}

/** `-c name=value` and `--name=value` settings from a libpq `options` string (backslash escapes a space). */
export function parseOptions(options: string): [string, string][] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === "\\" && i + 1 < options.length) {
      cur += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  const out: [string, string][] = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i]!;
    if (w === "-c" && i + 1 < words.length) w = words[++i]!;
    else if (w.startsWith("-c")) w = w.slice(2);
    else if (w.startsWith("--")) w = w.slice(2);
    else continue;
    const eq = w.indexOf("=");
    if (eq > 0) out.push([w.slice(0, eq).replaceAll("-", "_"), w.slice(eq + 1)]);
  }
  return out;
}

/** What the user's policies impose on its settings (src/policy). */
export interface SettingsPolicy {
  /** The statement_timeout cap (ms): the client's own value holds only when it is lower and not 0. 0: no cap. */
  statementTimeoutMs?: number;
  /** Read-only users' server connections run with default_transaction_read_only on, whatever the client says. */
  readOnly?: boolean;
}

export class SessionSettings {
  /** Settings from the startup packet: what RESET ALL / DISCARD ALL return to. */
  private readonly startup = new Map<string, Setting>();
  /** Committed settings, in the order they were made. */
  private desired = new Map<string, Setting>();
  /** Bumped on every change, so an unchanged client costs no comparison. */
  version = 0;
  private sigVersion = -1;
  private sig = "";
  /** Operations of the open transaction, applied when it commits. */
  private txn: SessionOp[] = [];
  /** Why the client must keep its server connection; empty when it need not. */
  readonly pins = new Map<PinReason, number>();

  /** The statement_timeout cap in ms (0: none). */
  private readonly cap: number;

  constructor(params: ReadonlyMap<string, string>, policy: SettingsPolicy = {}) {
    const add = (name: string, value: string) => {
      const n = name.toLowerCase();
      this.startup.set(n, { name: n, sql: `SET ${quoteName(n)} TO ${quoteLiteral(value)}`, value });
    };
    for (const [k, v] of params) if (!NOT_SETTINGS.has(k) && !k.startsWith("_pq_")) add(k, v);
    for (const [k, v] of parseOptions(params.get("options") ?? "")) add(k, v);
    if (policy.readOnly) add("default_transaction_read_only", "on");
    this.cap = policy.statementTimeoutMs ?? 0;
    if (this.cap > 0) this.startup.set(TIMEOUT, this.capped(this.startup.get(TIMEOUT)));
    this.desired = new Map(this.startup);
  }

  /** The client's statement_timeout setting when the cap allows it, else the cap's. */
  private capped(s: Setting | undefined): Setting {
    return s && withinCap(s.value, this.cap) ? s : { name: TIMEOUT, sql: capSql(this.cap) };
  }

  /**
   * The committed settings as one string: two clients with equal signatures need nothing applied when a server
   * connection passes from one to the other.
   */
  get signature(): string {
    if (this.sigVersion !== this.version) {
      let s = "";
      for (const d of this.desired.values()) s += `${d.sql}\0`;
      this.sig = s;
      this.sigVersion = this.version;
    }
    return this.sig;
  }

  get pinned(): boolean {
    return this.pins.size > 0;
  }

  pin(reason: PinReason): void {
    this.pins.set(reason, (this.pins.get(reason) ?? 0) + 1);
  }

  /**
   * ParameterStatus values for a client logging in without a server connection: what a server reported,
   * with this client's own startup values where it set a reported parameter.
   */
  reported(server: ReadonlyMap<string, string>): Map<string, string> {
    const out = new Map(server);
    for (const name of server.keys()) {
      const mine = this.startup.get(name.toLowerCase());
      if (mine?.value !== undefined) out.set(name, mine.value);
    }
    return out;
  }

  /**
   * The statements that bring `conn` to this client's settings, or null when it already has them. Call
   * {@link SessionSettings.markApplied} once they succeeded.
   */
  diff(conn: SettingsCarrier): string | null {
    const parts: string[] = [];
    for (const name of conn.applied.keys()) if (!this.desired.has(name)) parts.push(resetSql(name));
    let reported: Map<string, string> | null = null;
    for (const s of this.desired.values()) {
      if (conn.applied.get(s.name) === s.sql) continue;
      if (s.value !== undefined && !conn.applied.has(s.name)) {
        // A startup parameter the server already has (client_encoding=UTF8, say) needs no SET.
        reported ??= new Map([...conn.params].map(([k, v]) => [k.toLowerCase(), v]));
        if (reported.get(s.name) === s.value) continue;
      }
      parts.push(s.sql);
    }
    return parts.length > 0 ? parts.join("; ") : null;
  }

  /** Records that `conn` now carries exactly this client's committed settings (after `diff` ran there). */
  markApplied(conn: SettingsCarrier): void {
    conn.applied = new Map([...this.desired.values()].map((s) => [s.name, s.sql]));
    conn.appliedSignature = this.signature;
  }

  /**
   * A request's ReadyForQuery on `conn`. `ops` are the session operations of the statements it ran. At the end
   * of a transaction (status 'I') they take effect — on the client's settings and on what `conn` carries — unless
   * it failed or rolled back. Reports what else the caller must forget.
   */
  ready(status: number, failed: boolean, ops: readonly SessionOp[] | undefined, conn: SettingsCarrier): boolean {
    if (ops && ops.length > 0) this.txn.push(...ops);
    let deallocated = false;
    if (status !== 0x49 /* 'I' */) return deallocated;
    const txn = this.txn;
    this.txn = [];
    if (failed || txn.length === 0) return deallocated;
    const before = this.version;
    for (const op of effective(txn)) {
      switch (op.op) {
        case "set": {
          this.desired.delete(op.name); // re-inserted last: replay order follows the order of SETs
          // Above the cap, the client's SET ran but the cap is what the session keeps (and restores next).
          const capped = this.cap > 0 && op.name === TIMEOUT;
          this.desired.set(op.name, capped ? this.capped({ name: op.name, sql: op.sql, value: op.value }) : { name: op.name, sql: op.sql });
          conn.applied.delete(op.name);
          conn.applied.set(op.name, op.sql);
          this.version++;
          break;
        }
        case "reset": {
          // The server went back to its own default; a startup value is re-applied before the next request.
          this.desired.delete(op.name);
          const s = this.startup.get(op.name);
          if (s) this.desired.set(op.name, s);
          conn.applied.delete(op.name);
          this.version++;
          break;
        }
        case "discard_all":
          this.pins.clear();
          deallocated = true;
          this.desired = new Map(this.startup); // DISCARD ALL includes RESET ALL
          conn.applied.clear();
          this.version++;
          break;
        case "reset_all":
          this.desired = new Map(this.startup);
          conn.applied.clear();
          this.version++;
          break;
        case "deallocate_all":
          deallocated = true;
          break;
        case "unlisten_all":
          this.pins.delete("listen");
          break;
        default:
          break;
      }
    }
    if (this.version !== before) this.version++;
    return deallocated;
  }
}

/** Resolves savepoints: operations undone by a ROLLBACK TO SAVEPOINT are dropped. */
function effective(ops: readonly SessionOp[]): SessionOp[] {
  const out: SessionOp[] = [];
  for (const op of ops) {
    if (op.op === "rollback_to") {
      const at = findSavepoint(out, op.name);
      if (at >= 0) out.length = at + 1; // the savepoint itself survives ROLLBACK TO
    } else if (op.op === "release") {
      const at = findSavepoint(out, op.name);
      if (at >= 0) out.splice(at, 1);
    } else out.push(op);
  }
  return out.filter((o) => o.op !== "savepoint");
}

function findSavepoint(ops: SessionOp[], name: string): number {
  for (let i = ops.length - 1; i >= 0; i--) {
    const o = ops[i]!;
    if (o.op === "savepoint" && o.name === name) return i;
  }
  return -1;
}

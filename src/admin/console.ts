/**
 * The admin console: a client that logs in to the virtual database `pgroute` (`psql "… dbname=pgroute"`) runs
 * commands instead of SQL, as with PgBouncer's console. Every configured user may look (SHOW …); only users with
 * `role = "admin"` may change anything (RELOAD, PAUSE, RESUME, DRAIN, ENABLE, ROLE) — others get 42501.
 *
 *   SHOW NODES | POOLS | CLIENTS | QUERIES | STATS | COUNTERS | STATUS | VERSION | HELP
 *   RELOAD | PAUSE | RESUME | DRAIN node | ENABLE node | ROLE node primary|replica|auto
 *
 * Several commands may be sent in one query string, separated by semicolons; each gets its own result.
 */
import type { UserConfig } from "../config/types.ts";
import type { Proxy } from "../server.ts";
import type { ConsoleHandler } from "../session/console-relay.ts";
import type { Session } from "../session/session.ts";
import { MessageWriter, writeError } from "../wire/encode.ts";
import { commandComplete, emptyQueryResponse, writeResult, type Cell, type Column } from "../wire/results.ts";
import * as actions from "./actions.ts";
import { clientsView, counterRows, nodesView, poolsView, queriesView, statusView, VERSION } from "./view.ts";

interface Table {
  readonly columns: readonly Column[];
  readonly rows: readonly (readonly Cell[])[];
}

const col = (name: string, type: Column["type"] = "text"): Column => ({ name, type });
const ms = (v: number | null) => (v === null ? null : Math.round(v * 1000) / 1000);

/** What each SHOW prints. */
const SHOW: Record<string, (proxy: Proxy) => Table> = {
  nodes: (proxy) => ({
    columns: [
      col("name"), col("host"), col("port", "int8"), col("zone"), col("role"), col("configured_role"), col("override_role"),
      col("drained", "bool"), col("reachable", "bool"), col("readable", "bool"), col("excluded_because"), col("lag_bytes", "int8"),
      col("lag_seconds", "float8"), col("score", "float8"), col("breaker"), col("breaker_reason"), col("requests", "int8"),
      col("errors", "int8"), col("p50_ms", "float8"), col("p95_ms", "float8"), col("p99_ms", "float8"),
    ],
    rows: nodesView(proxy).map((n) => [
      n.name, n.host, n.port, n.zone, n.role, n.configuredRole, n.override.role, n.override.drained, n.reachable, n.readable,
      n.excludedBecause, n.lagBytes, n.lagSeconds, n.score, n.breaker.state, n.breaker.reason,
      n.queries.read + n.queries.write + n.queries.other + n.queries.unclassified, n.errors, ms(n.p50Ms), ms(n.p95Ms), ms(n.p99Ms),
    ]),
  }),
  pools: (proxy) => ({
    columns: [col("node"), col("user"), col("database"), col("active", "int8"), col("idle", "int8"), col("opening", "int8"), col("waiting", "int8"), col("max", "int8"), col("mode")],
    rows: poolsView(proxy).map((p) => [p.node, p.user, p.database, p.active, p.idle, p.opening, p.waiting, p.max, proxy.config.pool.mode]),
  }),
  clients: (proxy) => ({
    columns: [col("pid", "int8"), col("user"), col("database"), col("address"), col("state"), col("application_name"), col("tls", "bool"), col("node"), col("pinned_by"), col("connected_at")],
    rows: clientsView(proxy).map((c) => [c.pid, c.user, c.database, c.address, c.state, c.applicationName, c.tls, c.node, c.pinnedBy, c.connectedAt]),
  }),
  queries: (proxy) => ({
    columns: [
      col("fingerprint"), col("count", "int8"), col("errors", "int8"), col("mean_ms", "float8"), col("p50_ms", "float8"), col("p95_ms", "float8"),
      col("p99_ms", "float8"), col("max_ms", "float8"), col("reads", "int8"), col("writes", "int8"), col("other", "int8"), col("id"),
    ],
    rows: queriesView(proxy).map((q) => [q.fingerprint, q.count, q.errors, ms(q.meanMs), ms(q.p50Ms), ms(q.p95Ms), ms(q.p99Ms), ms(q.maxMs), q.kinds.read, q.kinds.write, q.kinds.other, q.id]),
  }),
  stats: (proxy) => ({
    columns: [
      col("node"), col("role"), col("reads", "int8"), col("writes", "int8"), col("other", "int8"), col("unclassified", "int8"), col("transactions", "int8"),
      col("errors", "int8"), col("connect_errors", "int8"), col("server_opened", "int8"), col("server_closed", "int8"), col("checkouts", "int8"),
      col("checkout_waits", "int8"), col("p50_ms", "float8"), col("p95_ms", "float8"), col("p99_ms", "float8"),
    ],
    rows: nodesView(proxy).map((n) => [
      n.name, n.role, n.queries.read, n.queries.write, n.queries.other, n.queries.unclassified, n.transactions, n.errors, n.connectErrors,
      n.serverConnections.opened, n.serverConnections.closed, n.checkouts, n.checkoutWaits, ms(n.p50Ms), ms(n.p95Ms), ms(n.p99Ms),
    ]),
  }),
  counters: (proxy) => ({ columns: [col("name"), col("value", "int8")], rows: counterRows(proxy) }),
  status: (proxy) => {
    const s = statusView(proxy);
    const rows: [string, Cell][] = [
      ["version", s.version], ["mode", s.mode], ["paused", s.paused], ["paused_since", s.pausedSince], ["started_at", s.startedAt],
      ["uptime_seconds", s.uptimeSeconds], ["config_version", s.config.version], ["config_loaded_at", s.config.loadedAt],
      ["primary", s.cluster.primary], ["clients", s.clients.total], ["clients_active", s.clients.active], ["clients_idle", s.clients.idle],
      ["clients_waiting", s.clients.waiting],
    ];
    return { columns: [col("name"), col("value")], rows: rows.map(([k, v]) => [k, v === null ? null : typeof v === "boolean" ? (v ? "on" : "off") : String(v)]) };
  },
  version: () => ({ columns: [col("version")], rows: [[`pgroute ${VERSION}`]] }),
  help: () => ({
    columns: [col("command"), col("description")],
    rows: [
      ["SHOW NODES", "nodes: role, override, reachability, lag, score, breaker, latency"],
      ["SHOW POOLS", "server connection pools: active, idle, opening, waiting, max"],
      ["SHOW CLIENTS", "client connections and what they are doing"],
      ["SHOW QUERIES", "busiest query fingerprints with counts and latency quantiles"],
      ["SHOW STATS", "traffic per node: requests by kind, transactions, errors, connections"],
      ["SHOW COUNTERS", "routing decisions, pins, cache hits and misses, clients"],
      ["SHOW STATUS", "version, pool mode, paused, config version, client counts"],
      ["SHOW VERSION", "pgroute's version"],
      ["RELOAD", "re-read the configuration file (admin)"],
      ["PAUSE", "new transactions wait until RESUME; running ones finish (admin)"],
      ["RESUME", "let waiting transactions go on (admin)"],
      ["DRAIN node", "no new transactions on the node; running ones finish (admin)"],
      ["ENABLE node", "undo DRAIN (admin)"],
      ["ROLE node primary|replica|auto", "set the role routing uses for the node; auto undoes it (admin)"],
    ],
  }),
};

/** Commands that change pgroute: admin users only. */
type Change = (proxy: Proxy, args: string[], by: string) => actions.Outcome | Promise<actions.Outcome>;

const CHANGE: Record<string, { args: string; run: Change }> = {
  reload: { args: "", run: (p, _a, by) => actions.reload(p, by) },
  pause: { args: "", run: (p, _a, by) => actions.pause(p, by) },
  resume: { args: "", run: (p, _a, by) => actions.resume(p, by) },
  drain: { args: "node", run: (p, a, by) => actions.drain(p, nodeName(p, a[0]!), by) },
  enable: { args: "node", run: (p, a, by) => actions.enable(p, nodeName(p, a[0]!), by) },
  role: { args: "node primary|replica|auto", run: (p, a, by) => actions.setRole(p, nodeName(p, a[0]!), a[1]!.toLowerCase(), by) },
};

export class AdminConsole implements ConsoleHandler {
  readonly params: ReadonlyMap<string, string>;

  constructor(
    private readonly proxy: Proxy,
    private readonly session: Session,
    private readonly user: UserConfig,
  ) {
    // As PgBouncer's console: pgroute's own version, so nobody mistakes it for a server.
    this.params = new Map([
      ["server_version", `${VERSION}/pgroute`],
      ["server_encoding", "UTF8"],
      ["client_encoding", "UTF8"],
      ["DateStyle", "ISO, MDY"],
      ["integer_datetimes", "on"],
      ["standard_conforming_strings", "on"],
      ["application_name", session.params.get("application_name") ?? ""],
    ]);
  }

  async query(sql: string): Promise<Uint8Array> {
    const statements = splitStatements(sql);
    const w = new MessageWriter(512);
    if (statements.length === 0) return w.bytes(emptyQueryResponse()).done();
    for (const text of statements) {
      // After an error the rest of the string is not run, as in Postgres.
      if (!(await this.run(text, w))) break;
    }
    return w.done();
  }

  /** Runs one command into `w`; false when it failed. */
  private async run(text: string, w: MessageWriter): Promise<boolean> {
    const words = tokens(text);
    const verb = words[0]!.toLowerCase();
    const fail = (code: string, message: string, hint?: string) => {
      writeError(w, { severity: "ERROR", code, message, hint });
      return false;
    };
    if (verb === "show") {
      const what = (words[1] ?? "").toLowerCase();
      const show = SHOW[what];
      if (!show || words.length > 2) return fail("42601", `unknown admin command "${text}"`, "SHOW HELP lists the commands.");
      const t = show(this.proxy);
      writeResult(w, t.columns, t.rows, "SHOW");
      return true;
    }
    // Drivers set session parameters on connect (JDBC, …): accepted, as they mean nothing here.
    if (verb === "set" || verb === "reset") {
      w.bytes(commandComplete(verb.toUpperCase()));
      return true;
    }
    const change = CHANGE[verb];
    if (!change) return fail("42601", `unknown admin command "${text}"`, "SHOW HELP lists the commands.");
    const wanted = change.args === "" ? 0 : change.args.split(" ").length;
    if (words.length - 1 !== wanted) return fail("42601", `usage: ${verb.toUpperCase()}${change.args ? ` ${change.args}` : ""}`);
    if (this.user.role !== "admin") {
      return fail("42501", `permission denied: ${verb.toUpperCase()} needs an admin user`, `Only users with role = "admin" in [[users]] may change pgroute; "${this.user.name}" may run SHOW commands.`);
    }
    const outcome = await change.run(this.proxy, words.slice(1), `console:${this.user.name}@${this.session.remote}`);
    if (!outcome.ok) return fail(outcome.code, outcome.message);
    w.bytes(noticeOf(outcome.message)).bytes(commandComplete(verb.toUpperCase()));
    return true;
  }
}

/** A NoticeResponse carrying what a command did, which psql prints. */
function noticeOf(message: string): Uint8Array {
  return writeError(new MessageWriter(128), { severity: "NOTICE", code: "00000", message }, true).done();
}

/** The node a command names: as written, else the one configured node that matches regardless of case. */
function nodeName(proxy: Proxy, word: string): string {
  if (proxy.config.nodes.some((n) => n.name === word)) return word;
  const folded = proxy.config.nodes.filter((n) => n.name.toLowerCase() === word.toLowerCase());
  return folded.length === 1 ? folded[0]!.name : word;
}

/** The statements of a query string, split at semicolons outside quotes, trimmed, empty ones dropped. */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i]!;
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === ";") {
      out.push(sql.slice(start, i));
      start = i + 1;
    }
  }
  out.push(sql.slice(start));
  return out.map((s) => s.trim()).filter((s) => s !== "");
}

/** Words of a command: bare words, "quoted identifiers" and 'strings' (quotes removed, doubled quotes undone). */
export function tokens(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"]|"")*)"|'((?:[^']|'')*)'|([^\s"']+)/g;
  for (const m of text.matchAll(re)) out.push(m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2] !== undefined ? m[2].replaceAll("''", "'") : m[3]!);
  return out;
}

/**
 * Table sizes for the firewall's size rules: per database, the planner's row estimate (`pg_class.reltuples`, the
 * sum of the leaf partitions' for a partitioned table) and the column count of every table, materialized view,
 * foreign table and view, loaded from the primary over a dedicated postgres.js connection and reloaded every
 * `[firewall] stats_interval`. Each load publishes a new immutable {@link TableSnapshot}; the firewall caches its
 * verdicts per snapshot, so a reload re-judges statements against the new sizes.
 *
 * Databases are loaded once someone logs in to them ({@link TableStatsMonitor.track}). A table never analyzed or
 * vacuumed (reltuples -1) counts as empty until autovacuum — or an ANALYZE — gives it statistics.
 */
import { sslOption } from "./connection.ts";
import postgres from "postgres";
import type { Config, NodeConfig, UserConfig } from "../config/types.ts";
import { hasPassword } from "../config/firewall.ts";
import type { Logger } from "../log.ts";

export interface TableInfo {
  /** Estimated rows (reltuples; 0 when unknown). */
  readonly rows: number;
  /** Columns, dropped ones excluded. */
  readonly columns: number;
}

/** What the firewall reads: a table's size by the name a statement uses. */
export interface TableSizes {
  /**
   * The table `schema.name`; for an unqualified name, the largest table of that name in any schema (pgroute does not
   * know the session's search_path, so it assumes the worst). Undefined when no such table is known.
   */
  lookup(schema: string | null, name: string): TableInfo | undefined;
}

export interface TableRow {
  readonly schema: string;
  readonly name: string;
  readonly rows: number;
  readonly columns: number;
}

/** One load of one database's sizes. Immutable. */
export class TableSnapshot implements TableSizes {
  private readonly qualified = new Map<string, TableInfo>();
  private readonly byName = new Map<string, TableInfo>();

  constructor(rows: readonly TableRow[], readonly loadedAt: number) {
    for (const r of rows) {
      const info: TableInfo = Object.freeze({ rows: r.rows, columns: r.columns });
      this.qualified.set(`${r.schema}\0${r.name}`, info);
      const seen = this.byName.get(r.name);
      this.byName.set(r.name, seen ? { rows: Math.max(seen.rows, r.rows), columns: Math.max(seen.columns, r.columns) } : info);
    }
  }

  get size(): number {
    return this.qualified.size;
  }

  lookup(schema: string | null, name: string): TableInfo | undefined {
    return schema === null ? this.byName.get(name) : this.qualified.get(`${schema}\0${name}`);
  }
}

/** No sizes known (before the first load): size rules match nothing. */
export const NO_SIZES = new TableSnapshot([], 0);

/** Relations of every schema but TOAST and temporary ones, with their estimated rows and columns. */
const SIZES_QUERY = `
select n.nspname as schema, c.relname as name,
       case when c.relkind = 'p'
            then coalesce((select sum(greatest(l.reltuples, 0)) from pg_partition_tree(c.oid) t
                           join pg_class l on l.oid = t.relid where t.isleaf), 0)
            else greatest(c.reltuples, 0) end::float8 as rows,
       (select count(*) from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)::int as columns
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm', 'f', 'v') and c.relpersistence <> 't'
  and n.nspname <> 'pg_toast' and n.nspname not like 'pg_temp%' and n.nspname not like 'pg_toast_temp%'`;

export interface TableStatsOptions {
  /** The running config (re-read on every load: a reload may change the interval, users or nodes). */
  config: () => Config;
  /** The node to load from: the primary when known. */
  node: () => NodeConfig | null;
  log: () => Logger;
}

interface Tracked {
  snapshot: TableSnapshot;
  /** Resolves once the first load finished (or failed). */
  first: Promise<void>;
  settle: () => void;
  client: { sql: postgres.Sql; key: string } | null;
  failing: boolean;
}

export class TableStatsMonitor {
  private readonly databases = new Map<string, Tracked>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  /** Loads since start, for tests and logs. */
  loads = 0;

  constructor(private readonly opts: TableStatsOptions) {}

  /** The current sizes of `database` ({@link NO_SIZES} until loaded). */
  sizes(database: string): TableSizes {
    return this.databases.get(database)?.snapshot ?? NO_SIZES;
  }

  /** Starts keeping `database`'s sizes; the first load begins at once. */
  track(database: string): void {
    if (this.stopped || this.databases.has(database)) return;
    let settle!: () => void;
    const first = new Promise<void>((resolve) => (settle = resolve));
    this.databases.set(database, { snapshot: NO_SIZES, first, settle, client: null, failing: false });
    void this.load(database);
    this.schedule();
  }

  /** Resolves once `database`'s first load is done (or failed), or after `timeoutMs`. */
  async ready(database: string, timeoutMs: number): Promise<void> {
    this.track(database);
    const t = this.databases.get(database);
    if (!t) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([t.first, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** Reloads every tracked database now (the timer does this every `stats_interval`). */
  async refresh(): Promise<void> {
    await Promise.all([...this.databases.keys()].map((d) => this.load(d)));
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.refresh().finally(() => this.schedule());
    }, this.opts.config().firewall.stats_interval_ms);
    this.timer.unref?.();
  }

  private async load(database: string): Promise<void> {
    const t = this.databases.get(database);
    if (!t) return;
    const log = this.opts.log();
    try {
      const sql = this.client(database, t);
      const rows = await sql.unsafe<{ schema: string; name: string; rows: number; columns: number }[]>(SIZES_QUERY);
      if (this.stopped) return;
      t.snapshot = new TableSnapshot(rows.map((r) => ({ schema: r.schema, name: r.name, rows: Number(r.rows), columns: Number(r.columns) })), Date.now());
      this.loads++;
      if (t.failing) log.info("table_stats_recovered", { database });
      t.failing = false;
      log.debug("table_stats_loaded", { database, tables: t.snapshot.size });
    } catch (err) {
      // The previous sizes stay; one warning per failing streak.
      if (!t.failing) log.warn("table_stats_failed", { database, error: err instanceof Error ? err.message : String(err) });
      t.failing = true;
      const c = t.client;
      t.client = null;
      void c?.sql.end({ timeout: 0 }).catch(() => {});
    } finally {
      t.settle();
    }
  }

  /** The connection for `database`, opened again when the node or the login changed. */
  private client(database: string, t: Tracked): postgres.Sql {
    const config = this.opts.config();
    const node = this.opts.node();
    if (!node) throw new Error("no primary node is known");
    const user = statsUser(config, database);
    if (!user) throw new Error(`no configured user with a password may connect to database "${database}"`);
    const username = user.server_user ?? user.name;
    const password = user.server_password ?? user.password!;
    const key = JSON.stringify([node.host, node.port, node.sslmode, node.sslrootcert, username, password]);
    if (t.client?.key === key) return t.client.sql;
    void t.client?.sql.end({ timeout: 0 }).catch(() => {});
    const sql = postgres({
      host: node.host,
      port: node.port,
      database,
      username,
      password,
      ssl: sslOption(node),
      max: 1,
      idle_timeout: 0,
      connect_timeout: Math.ceil(config.pool.connect_timeout_ms / 1000),
      onnotice: () => {},
      connection: { application_name: "pgroute table sizes" },
    });
    t.client = { sql, key };
    return sql;
  }

  /** Stops the timer and closes every connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const clients = [...this.databases.values()].flatMap((t) => (t.client ? [t.client.sql] : []));
    for (const t of this.databases.values()) t.settle();
    this.databases.clear();
    await Promise.all(clients.map((sql) => sql.end({ timeout: 1 }).catch(() => {})));
  }
}

/** `[firewall] stats_user`, else the first user with a password that may connect to `database`. */
export function statsUser(config: Config, database: string): UserConfig | undefined {
  const named = config.firewall.stats_user;
  if (named !== undefined) return config.users.find((u) => u.name === named);
  return config.users.find((u) => hasPassword(u as unknown as Record<string, unknown>) && (u.databases.length === 0 || u.databases.includes(database)));
}


/**
 * `pgroute check lag`: probes the cluster with the monitor pgroute itself runs (one detailed probe of every node,
 * then a short burst of pings for a p99) and prints what the balancer would make of it. `--watch` keeps the
 * monitor running and redraws; the exit code says whether the cluster can serve (a health check).
 */
import { configFrom } from "../config/load.ts";
import type { Config } from "../config/types.ts";
import { ConfigLoadError } from "../config/load.ts";
import { LiveNodes } from "../cluster/live.ts";
import { SnapshotHolder, type ClusterSnapshot } from "../cluster/state.ts";
import { silentLogger } from "../log.ts";
import { Monitor } from "../monitor/monitor.ts";
import { parseDuration } from "../config/schema.ts";
import { UsageError, parseFlags, type Command } from "./command.ts";
import { renderReport, reportJson, verdict } from "./lag-report.ts";
import { loadOrReport, onSignals } from "./serve.ts";

const help = `Usage: pgroute check lag [-c FILE | --nodes HOST:PORT,...] [options]

Probes every node of the cluster as pgroute's monitor does and prints, per node: role, whether it answers,
replication lag in bytes and time, active/total connections, p99 of a short burst of pings, health score with its
breakdown, circuit breaker state, and whether it would receive reads (and if not, why).

Options:
  -c, --config FILE     nodes, monitor credentials and limits from a config (default: $PGROUTE_CONFIG or
                        ./pgroute.toml)
      --nodes LIST      probe these nodes instead (HOST:PORT,...; roles found with pg_is_in_recovery())
      --user NAME       log in as NAME (default: [monitor] user, the config's first user with a password, else
                        $PGUSER or postgres)
      --password PW     its password (default: from the config, else $PGPASSWORD)
      --database DB     database to connect to (default: [monitor] database, else $PGDATABASE or postgres)
      --max-lag DUR     replicas further behind take no reads (default: balance.max_lag, 1s)
      --burst N         pings per node for the p99 (default 20)
      --json            print JSON (with --watch: one line per refresh)
      --watch           keep probing and redraw every --interval until Ctrl-C
      --interval DUR    --watch: ping and redraw this often (default: monitor.ping_interval, 1s)
      --count N         --watch: stop after N refreshes

Exit codes: 0 healthy; 1 the primary is unreachable, or there are replicas and none would take reads
(with --watch: as of the last refresh); 2 usage or configuration error.`;

const FLAGS = {
  config: { type: "string", short: "c" },
  nodes: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  database: { type: "string" },
  "max-lag": { type: "string" },
  burst: { type: "string" },
  json: { type: "boolean" },
  watch: { type: "boolean" },
  interval: { type: "string" },
  count: { type: "string" },
} as const;

type Flags = ReturnType<typeof parseFlags<typeof FLAGS>>["values"];

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`--${name}: expected a whole number >= 1, got "${value}"`);
  return Number(value);
}

function duration(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (ms === undefined || ms < 1) throw new UsageError(`--${name}: expected a duration like "500ms" or "2s", got "${value}"`);
  return ms;
}

/** `host:port,…` as `[[nodes]]` tables (roles found by the monitor). */
function nodesFrom(list: string): Record<string, unknown>[] {
  return list.split(",").map((item) => {
    const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(item.trim());
    if (!m || !m[1] || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`--nodes: expected HOST:PORT,..., got "${item}"`);
    return { name: item.trim(), host: m[1], port: Number(m[2]), role: "auto" };
  });
}

/** The config the check runs with: the file's (or one made of --nodes), monitoring on, flags applied. */
export async function checkConfig(v: Flags): Promise<Config | null> {
  if (v.nodes !== undefined && v.config !== undefined) throw new UsageError("give either --config or --nodes, not both");
  let base: Config;
  if (v.nodes !== undefined) {
    try {
      base = configFrom({ nodes: nodesFrom(v.nodes), users: [] });
    } catch (err) {
      if (err instanceof ConfigLoadError) throw new UsageError(err.message);
      throw err;
    }
  } else {
    const loaded = await loadOrReport(v.config ?? process.env.PGROUTE_CONFIG ?? "pgroute.toml");
    if (!loaded) return null;
    base = loaded;
  }
  const fromFile = v.nodes === undefined;
  const user = v.user ?? (fromFile ? undefined : (process.env.PGUSER ?? "postgres"));
  const password = v.password ?? (fromFile ? undefined : process.env.PGPASSWORD);
  const database = v.database ?? (fromFile ? base.monitor.database : (process.env.PGDATABASE ?? base.monitor.database));
  const monitor = { ...base.monitor, enabled: true, database, ...(user === undefined ? {} : { user, password }) };
  if (user !== undefined && password === undefined) delete (monitor as { password?: string }).password;
  const maxLag = duration("max-lag", v["max-lag"]);
  const balance = maxLag === undefined ? base.balance : { ...base.balance, max_lag_ms: maxLag };
  return Object.freeze({ ...base, monitor: Object.freeze(monitor), balance: Object.freeze(balance) });
}

/** A monitor of its own (nothing else reads its snapshots). */
function monitorFor(config: Config): Monitor {
  return new Monitor({ config, holder: new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null }), lives: new LiveNodes(config), log: silentLogger });
}

function print(s: ClusterSnapshot, json: boolean, redraw: boolean): void {
  if (json) {
    console.log(reportJson(s));
    return;
  }
  const tty = Boolean(process.stdout.isTTY);
  // A redraw on a terminal replaces the previous table; elsewhere the tables follow each other.
  if (redraw && tty) process.stdout.write("\x1b[2J\x1b[H");
  else if (redraw) console.log("");
  console.log(renderReport(s, tty));
}

export const check: Command = {
  name: "check",
  summary: "probe the cluster: roles, replication lag, health, where reads would go (check lag)",
  help,
  async run(argv) {
    const { values, positionals } = parseFlags(argv, FLAGS, true);
    if (positionals.length !== 1 || positionals[0] !== "lag") throw new UsageError(positionals.length === 0 ? "expected what to check: lag" : `unknown check "${positionals.join(" ")}" (expected: lag)`);
    const burst = positiveInt("burst", values.burst, 20);
    const count = values.count === undefined ? Infinity : positiveInt("count", values.count, 1);
    if (values.count !== undefined && !values.watch) throw new UsageError("--count needs --watch");
    const loaded = await checkConfig(values);
    if (!loaded) return 2;
    // Watching: nodes are pinged as often as the table is redrawn.
    const every = duration("interval", values.interval);
    const config = every === undefined ? loaded : Object.freeze({ ...loaded, monitor: Object.freeze({ ...loaded.monitor, ping_interval_ms: every }) });
    const monitor = monitorFor(config);
    if (monitor.passive) throw new UsageError("no credentials to log in with: give --user (and --password), or [monitor] user in the config");
    const json = Boolean(values.json);
    try {
      if (!values.watch) {
        await monitor.round();
        const s = await monitor.burst(burst);
        print(s, json, false);
        return verdict(s).ok ? 0 : 1;
      }
      const interval = config.monitor.ping_interval_ms;
      await monitor.start();
      let last = await monitor.burst(burst);
      // Ctrl-C (or SIGTERM) ends the watch: the last refresh decides the exit code.
      let wake: (() => void) | null = null;
      let stopped = false;
      const off = onSignals(["SIGINT", "SIGTERM"], () => {
        stopped = true;
        wake?.();
      });
      try {
        for (let n = 0; n < count && !stopped; n++) {
          if (n > 0) await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, interval);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          if (stopped) break;
          last = monitor.current;
          print(last, json, n > 0);
        }
      } finally {
        off();
      }
      return verdict(last).ok ? 0 : 1;
    } finally {
      await monitor.stop();
    }
  },
};

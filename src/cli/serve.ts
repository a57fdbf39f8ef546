import pc from "picocolors";
import { ConfigLoadError, loadConfig } from "../config/load.ts";
import type { Config, LogFormat, LogLevel } from "../config/types.ts";
import { createLogger, type Logger } from "../log.ts";
import { AdminServer } from "../admin/http.ts";
import { Proxy } from "../server.ts";
import { UsageError, parseFlags, type Command } from "./command.ts";

const help = `Usage: pgroute serve [-c FILE] [--listen HOST:PORT] [--log-level LEVEL] [--log-format text|json]

Runs the proxy: clients connect to it as if it were PostgreSQL.

Options:
  -c, --config FILE       configuration file (default: $PGROUTE_CONFIG or ./pgroute.toml)
      --listen HOST:PORT  override listen.host / listen.port
      --log-level LEVEL   debug | info | warn | error (overrides log.level)
      --log-format FMT    text | json (overrides log.format)

With [admin] listen set, an HTTP listener serves /metrics (Prometheus), the admin API and a live dashboard;
its address is logged (admin_listening). The admin console needs no listener: psql … dbname=pgroute.

Signals:
  SIGTERM  stop accepting, let running transactions finish (limits.shutdown_timeout), then FATAL 57P01
  SIGINT   the same without waiting for transactions (a second SIGTERM/SIGINT also stops at once)
  SIGHUP   reload the config file; a bad one keeps the old running and logs every error with its key path

Exit codes: 0 stopped, 1 runtime error, 2 bad configuration or usage.`;

/** Overrides from flags, applied on top of the file's snapshot. */
export interface ServeOverrides {
  listen?: string;
  logLevel?: string;
  logFormat?: string;
}

/** A new frozen snapshot with command-line overrides applied. */
export function applyOverrides(config: Config, o: ServeOverrides): Config {
  let listen = config.listen;
  if (o.listen !== undefined) {
    const m = /^(.*):(\d+)$/.exec(o.listen);
    const port = m ? Number(m[2]) : Number.NaN;
    if (!m || port > 65535) throw new UsageError(`--listen: expected HOST:PORT, got "${o.listen}"`);
    listen = Object.freeze({ host: m[1]!.replace(/^\[(.*)\]$/, "$1") || config.listen.host, port });
  }
  const level = (o.logLevel ?? config.log.level) as LogLevel;
  const format = (o.logFormat ?? config.log.format) as LogFormat;
  if (!["debug", "info", "warn", "error"].includes(level)) throw new UsageError(`--log-level: expected debug|info|warn|error, got "${level}"`);
  if (!["text", "json"].includes(format)) throw new UsageError(`--log-format: expected text|json, got "${format}"`);
  return Object.freeze({ ...config, listen, log: Object.freeze({ level, format }) });
}

/** Loads a config, printing every error with its key path; null when it is invalid. */
export async function loadOrReport(path: string): Promise<Config | null> {
  try {
    return await loadConfig(path);
  } catch (err) {
    if (!(err instanceof ConfigLoadError)) throw err;
    console.error(pc.red(err.message));
    return null;
  }
}

/** Resolves when the process gets SIGINT or SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(sig);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

/** Calls `handler` on each of `signals` until the returned function is called. */
export function onSignals(signals: readonly NodeJS.Signals[], handler: (sig: NodeJS.Signals) => void): () => void {
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}

/**
 * Reloads the config file into a running proxy (SIGHUP), with the command line's overrides applied again.
 * A config that does not load is logged line by line, each with its key path, and the old one keeps running.
 * Returns whether the new config is in effect.
 */
export async function reloadConfig(proxy: Proxy, path: string, overrides: ServeOverrides, log: Logger = proxy.log): Promise<boolean> {
  return (await proxy.reloadFrom(configSource(path, overrides), log, path)).ok;
}

/** Reads the config file and applies the command line's overrides: what every reload of `serve` loads. */
function configSource(path: string, overrides: ServeOverrides): () => Promise<Config> {
  return async () => applyOverrides(await loadConfig(path), overrides);
}

/** A running proxy and its admin listener (null when `admin.listen` is off). */
export interface Started {
  proxy: Proxy;
  admin: AdminServer | null;
  /** The dashboard's address, when there is an admin listener. */
  adminUrl: string | null;
}

/** Starts a proxy for `config` and its admin listener, printing (logging) where they listen. */
export async function startProxy(config: Config): Promise<Started> {
  const log = createLogger(config.log);
  const proxy = new Proxy({ config, log });
  try {
    await proxy.listen();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const where = `${config.listen.host}:${config.listen.port}`;
    throw new Error(e.code === "EADDRINUSE" ? `${where} is already in use (choose another listen port)` : `cannot listen on ${where}: ${e.message}`);
  }
  const at = config.admin.listen;
  if (!at) return { proxy, admin: null, adminUrl: null };
  const admin = new AdminServer(proxy);
  try {
    return { proxy, admin, adminUrl: admin.listen().url };
  } catch (err) {
    await proxy.stop();
    const e = err as NodeJS.ErrnoException;
    const where = `${at.host}:${at.port}`;
    throw new Error(e.code === "EADDRINUSE" ? `admin.listen: ${where} is already in use` : `admin.listen: cannot listen on ${where}: ${e.message}`);
  }
}

export const serve: Command = {
  name: "serve",
  summary: "run the proxy",
  help,
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: "string", short: "c" },
      listen: { type: "string" },
      "log-level": { type: "string" },
      "log-format": { type: "string" },
    });
    const path = values.config ?? process.env.PGROUTE_CONFIG ?? "pgroute.toml";
    const loaded = await loadOrReport(path);
    if (!loaded) return 2;
    const config = applyOverrides(loaded, {
      listen: values.listen,
      logLevel: values["log-level"],
      logFormat: values["log-format"],
    });
    const overrides: ServeOverrides = { listen: values.listen, logLevel: values["log-level"], logFormat: values["log-format"] };
    const { proxy, admin } = await startProxy(config);
    // RELOAD from the admin API and console reads the same file as SIGHUP.
    proxy.reloadSource = configSource(path, overrides);
    // Reloads run one at a time, in the order the signals came.
    let reloading = Promise.resolve();
    const offHup = onSignals(["SIGHUP"], () => {
      reloading = reloading.then(() => reloadConfig(proxy, path, overrides)).then(
        () => {},
        (err) => proxy.log.error("config_reload_failed", { file: path, error: String(err) }),
      );
    });
    const sig = await untilSignal();
    offHup();
    // SIGTERM drains (running transactions may finish within limits.shutdown_timeout); SIGINT does not wait. A
    // second SIGINT or SIGTERM during the drain stops at once.
    const offAgain = onSignals(["SIGINT", "SIGTERM"], () => void proxy.shutdown({ graceful: false }));
    await proxy.shutdown({ graceful: sig === "SIGTERM" });
    admin?.stop();
    offAgain();
    console.error(`pgroute: stopped (${sig})`);
    return 0;
  },
};

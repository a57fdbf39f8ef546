/** The text of the files the dev cluster writes: postgresql.conf additions, pg_hba.conf and pgroute.toml. */
import { DevClusterError } from "./errors.ts";
import type { DevNode } from "./types.ts";

/** Per-node settings file, included from the shared postgresql.conf; pg_basebackup copies it, so we rewrite it. */
export const NODE_CONF = "pgroute-node.conf";

/** Settings every node gets; replicas inherit them from the primary through pg_basebackup. */
export const BASE_SETTINGS: Readonly<Record<string, string | number>> = {
  listen_addresses: "127.0.0.1",
  max_connections: 300,
  wal_level: "replica",
  max_wal_senders: 10,
  max_replication_slots: 10,
  hot_standby: "on",
  hot_standby_feedback: "on",
  // Timestamps and pids make a node's log tail readable in an error message.
  log_line_prefix: "%m [%p] %q%u@%d ",
};

function quote(value: string | number): string {
  return typeof value === "number" ? String(value) : `'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/** `name = value` lines; names are checked because they are spliced into a config file. */
export function settingLines(settings: Readonly<Record<string, string | number>>): string[] {
  return Object.entries(settings).map(([name, value]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new DevClusterError(`invalid setting name "${name}"`);
    return `${name} = ${quote(value)}`;
  });
}

/** The block appended to the primary's postgresql.conf (and so to every replica's). */
export function sharedConf(extra: Readonly<Record<string, string | number>> = {}): string {
  return [
    "",
    "# --- pgroute dev cluster ---",
    ...settingLines({ ...BASE_SETTINGS, ...extra }),
    `include '${NODE_CONF}'`,
    "",
  ].join("\n");
}

/** The node's own settings: its port and a Unix socket inside its data dir (not the shared /var/run one). */
export function nodeConf(node: DevNode): string {
  return `${settingLines({ port: node.port, unix_socket_directories: node.dataDir }).join("\n")}\n`;
}

/** pg_hba.conf: caller lines first (first match wins), then local trust and SCRAM over loopback TCP. */
export function hbaConf(extra: readonly string[] = []): string {
  return [
    "# pgroute dev cluster; the first matching line wins.",
    ...extra,
    "local   all          all                       trust",
    "local   replication  all                       trust",
    "host    replication  all          127.0.0.1/32 scram-sha-256",
    "host    all          all          127.0.0.1/32 scram-sha-256",
    "host    all          all          ::1/128      scram-sha-256",
    "",
  ].join("\n");
}

/** A pgroute.toml pointing at every node, with the superuser as the one pgroute user. */
export function pgrouteToml(nodes: readonly DevNode[], proxyPort: number, superuser: string, password: string): string {
  const s = (v: string) => JSON.stringify(v); // a JSON string is a valid TOML basic string
  const lines = [
    "# Written by `pgroute cluster up` for the local dev cluster in this directory.",
    "# Run: pgroute serve -c <this file>",
    "",
    "[listen]",
    `host = ${s("127.0.0.1")}`,
    `port = ${proxyPort}`,
  ];
  for (const node of nodes) {
    lines.push("", "[[nodes]]", `name = ${s(node.name)}`, `host = ${s(node.host)}`, `port = ${node.port}`, `role = ${s(node.role)}`);
  }
  lines.push(
    "",
    "[[users]]",
    `name = ${s(superuser)}`,
    `password = ${s(password)}`,
    `auth = ${s("scram-sha-256")}`,
    `role = ${s("admin")}`,
    "",
    "[pool]",
    `mode = ${s("transaction")}`,
    "",
    "# Metrics, admin API and dashboard on a free loopback port (pgroute serve logs which).",
    "[admin]",
    `listen = ${s("127.0.0.1:0")}`,
    "",
  );
  return lines.join("\n");
}

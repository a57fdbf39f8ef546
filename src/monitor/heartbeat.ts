/**
 * The opt-in heartbeat (`monitor.heartbeat_table`): the monitor writes the time into one row on the primary every
 * `heartbeat_interval` and reads its age on each replica, for lag in time finer than the ping interval while WAL
 * is flowing. The age uses the replica's clock against the primary's, so the nodes' clocks must agree (NTP).
 * The table is created when missing (the monitor's role needs CREATE there, or create it yourself with the
 * statement below).
 */
import { TABLE_NAME } from "../config/schema.ts";
import type { Queryable } from "./probe.ts";

/** `schema.table` or `table` quoted as identifiers; null when it is not one of those. */
export function quoteTable(name: string): string | null {
  return TABLE_NAME.test(name) ? name.split(".").map((p) => `"${p}"`).join(".") : null;
}

export function createSql(table: string): string {
  return `create table if not exists ${table} (id int primary key, at timestamptz not null)`;
}

export function writeSql(table: string): string {
  return `insert into ${table} (id, at) values (1, clock_timestamp()) on conflict (id) do update set at = excluded.at`;
}

export function readSql(table: string): string {
  return `select extract(epoch from clock_timestamp() - at)::float8 as age from ${table} where id = 1`;
}

/** Writes the heartbeat on the primary, creating the table the first time it is missing. */
export async function writeHeartbeat(conn: Queryable, table: string, timeoutMs: number): Promise<void> {
  try {
    await conn.query(writeSql(table), timeoutMs);
  } catch (err) {
    if ((err as { code?: string | null }).code !== "42P01") throw err;
    await conn.query(createSql(table), timeoutMs);
    await conn.query(writeSql(table), timeoutMs);
  }
}

/** The heartbeat's age on a replica, seconds; null before the first heartbeat arrived. */
export async function readHeartbeat(conn: Queryable, table: string, timeoutMs: number): Promise<number | null> {
  try {
    const rows = await conn.query(readSql(table), timeoutMs);
    return rows[0] ? Math.max(0, Number(rows[0].age)) : null;
  } catch (err) {
    if ((err as { code?: string | null }).code === "42P01") return null;
    throw err;
  }
}

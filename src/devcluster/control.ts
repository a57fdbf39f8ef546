/**
 * Queries that set up and watch the cluster over SQL: replication slots, replicas streaming from the primary,
 * replicas having replayed everything the primary wrote. Waits poll (bounded): PostgreSQL offers nothing to
 * subscribe to.
 */
import postgres from "postgres";
import { DevClusterError } from "./errors.ts";
import { logTail } from "./node.ts";
import type { DevCluster, DevNode } from "./types.ts";

/** Delay between polls: short, since each poll is one cheap query on loopback. */
const POLL_MS = 50;

/** A one-connection postgres.js client for control queries, silent about notices. */
export function controlClient(url: string): postgres.Sql {
  return postgres(url, { max: 1, connect_timeout: 5, idle_timeout: 0, onnotice: () => {}, prepare: false });
}

/**
 * Create a physical replication slot per replica, reserving WAL from now on. Created up front (not by
 * `pg_basebackup -C`, which does it only after its backup has started) so that the checkpoint of one replica's
 * base backup cannot recycle WAL another replica's backup still needs.
 */
export async function createSlots(primaryUrl: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const sql = controlClient(primaryUrl);
  try {
    for (const name of names) await sql`select pg_create_physical_replication_slot(${name}, true)`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Retry `check` until it returns true or `timeoutMs` passes; errors count as "not yet". */
async function until(
  timeoutMs: number,
  check: () => Promise<boolean>,
  signal?: AbortSignal,
): Promise<{ ok: boolean; lastError?: unknown }> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      if (await check()) return { ok: true };
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) return { ok: false, lastError };
    await Bun.sleep(POLL_MS);
  }
}

/**
 * Resolve once every replica shows `state = 'streaming'` in the primary's pg_stat_replication (under its
 * application_name). @throws DevClusterError naming the laggards, with the tails of their logs.
 */
export async function waitForStreaming(
  primaryUrl: string,
  primary: DevNode,
  replicas: readonly DevNode[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  if (replicas.length === 0) return;
  const sql = controlClient(primaryUrl);
  let states = new Map<string, string>();
  try {
    const result = await until(
      timeoutMs,
      async () => {
        const rows = await sql<{ name: string; state: string }[]>`
          select application_name as name, state from pg_stat_replication`;
        states = new Map(rows.map((r) => [r.name, r.state]));
        return replicas.every((r) => states.get(r.name) === "streaming");
      },
      signal,
    );
    if (result.ok) return;
    const late = replicas.filter((r) => states.get(r.name) !== "streaming");
    const what = late.map((r) => `${r.name} (${states.get(r.name) ?? "not connected"})`).join(", ");
    const cause = result.lastError ? `; last error: ${(result.lastError as Error).message}` : "";
    throw new DevClusterError(
      `replicas did not start streaming within ${timeoutMs} ms: ${what}${cause}\n` +
        [...late, primary].map((n) => logTail(n)).join("\n"),
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * Resolve once every replica has replayed all WAL the primary had written when this was called — after it,
 * anything committed on the primary before the call is visible on every replica.
 */
export async function waitForReplay(cluster: DevCluster, opts: { timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const primary = controlClient(cluster.url(cluster.primary));
  let lsn: string;
  try {
    // The insert position, not pg_current_wal_lsn() (the write position): with synchronous_commit = off (the test
    // cluster's setting) a commit just made may sit in WAL buffers past the write position for up to
    // wal_writer_delay, and waiting for the write position would return before the replicas have it.
    const [row] = await primary<{ lsn: string }[]>`select pg_current_wal_insert_lsn()::text as lsn`;
    lsn = row!.lsn;
  } finally {
    await primary.end({ timeout: 1 });
  }
  await Promise.all(
    cluster.replicas.map(async (node) => {
      const sql = controlClient(cluster.url(node));
      try {
        const result = await until(timeoutMs, async () => {
          const [row] = await sql<{ done: boolean }[]>`
            select coalesce(pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn, false) as done`;
          return row?.done === true;
        });
        if (!result.ok) {
          throw new DevClusterError(`${node.name} did not replay up to ${lsn} within ${timeoutMs} ms\n${logTail(node)}`);
        }
      } finally {
        await sql.end({ timeout: 1 });
      }
    }),
  );
}

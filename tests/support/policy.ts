/**
 * Helpers for policy tests: pgroute users that log in by trust and reach the servers as the superuser (so anything a
 * policy lets through would run — a refusal is pgroute's, never the database's), what a failed statement reports,
 * and raw-protocol exchanges that show the transaction status each request leaves.
 */
import type postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { RawClient, errorOf, type BackendMessage } from "./raw-client.ts";

/** A `[[users]]` entry logging in by trust and running as the cluster's superuser on the servers. */
export function policyUser(cluster: DevCluster, name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, auth: "trust", server_user: cluster.superuser, server_password: cluster.password, ...extra };
}

/** What a statement's failure looks like to a client: SQLSTATE and message ("ok" when it succeeded). */
export interface Outcome {
  code: string;
  message: string;
}

/** Runs `run` and reports its error's SQLSTATE and message, or `{ code: "ok" }`. */
export async function outcome(run: () => Promise<unknown>): Promise<Outcome> {
  try {
    await run();
    return { code: "ok", message: "" };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return { code: String(e.code ?? "no code"), message: String(e.message ?? err) };
  }
}

/** A raw client logged in (trust) as `user` to `database` through pgroute on `port`. */
export async function rawAs(port: number, user: string, database: string): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  await raw.loginTrust({ user, database });
  return raw;
}

/** One request's replies in brief: errors as `E:<code>`, ReadyForQuery as `Z:<status>`, others by type letter. */
export function brief(messages: readonly BackendMessage[]): string[] {
  return messages.map((m) => (m.type === "E" ? `E:${errorOf(m).code}` : m.type === "Z" ? `Z:${String.fromCharCode(m.body[0]!)}` : m.type));
}

/** Sends bytes and returns the replies up to the next ReadyForQuery, in brief, with the first error's message. */
export async function request(raw: RawClient, bytes: Uint8Array | Buffer, timeoutMs = 5000): Promise<{ replies: string[]; error: string | null }> {
  raw.send(new Uint8Array(bytes));
  const ms = await raw.readUntil("Z", timeoutMs);
  const e = ms.find((m) => m.type === "E");
  return { replies: brief(ms), error: e ? errorOf(e).message : null };
}

/** Rows of a single-column query as strings. */
export async function column(sql: postgres.Sql | postgres.TransactionSql, query: string): Promise<string[]> {
  const rows = await sql.unsafe(query);
  return rows.map((r) => String(Object.values(r)[0]));
}

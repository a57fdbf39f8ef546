/**
 * Raw-protocol helpers for pool tests: log in as the trust role (no password exchange), send a batch of frontend
 * messages and read the replies up to a given number of ReadyForQuery, and view replies in a form that is stable
 * across connections, so pgroute's answers can be compared message by message with Postgres's own.
 */
import { AUTH_USERS } from "./cluster.ts";
import { RawClient, cstrings, dataRow, errorOf, type BackendMessage } from "./raw-client.ts";
import { concat, serialize } from "./wire-frames.ts";

/** A logged-in raw connection to `port` as the trust role. */
export async function rawLogin(port: number, database: string, extra: Record<string, string> = {}): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  await raw.loginTrust({ user: AUTH_USERS.trust.user, database, ...extra });
  return raw;
}

/** Sends `frames` at once and reads every reply up to the `readyCount`-th ReadyForQuery. */
export async function exchange(raw: RawClient, frames: (Uint8Array | Buffer)[], readyCount = 1, timeoutMs = 5000): Promise<BackendMessage[]> {
  raw.send(concat(...frames.map((f) => new Uint8Array(f))));
  const out: BackendMessage[] = [];
  for (let i = 0; i < readyCount; i++) out.push(...(await raw.readUntil("Z", timeoutMs)));
  return out;
}

/** A message as compared: its type letter, plus the parts of its body that do not vary between connections. */
export type View = unknown[];

export function view(m: BackendMessage): View {
  switch (m.type) {
    case "D":
      return ["D", dataRow(m)];
    case "C":
      return ["C", cstrings(m.body)[0]];
    case "Z":
      return ["Z", String.fromCharCode(m.body[0]!)];
    case "E":
    case "N": {
      const e = errorOf(m);
      return [m.type, e.severity, e.code, e.message];
    }
    default:
      return [m.type];
  }
}

export const views = (ms: BackendMessage[]): View[] => ms.map(view);

/** Parse/Bind/Execute of one statement (unnamed unless `name` is given), no Sync. */
export function pbe(text: string, values: (string | null)[] = [], name = ""): Buffer[] {
  return [serialize.parse({ name, text }), serialize.bind({ statement: name, values }), serialize.execute({})];
}

export const sync = () => serialize.sync();

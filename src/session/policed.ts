/**
 * The policies' verdict on an extended-protocol batch (src/policy): each Parse is judged, and each statement the
 * batch executes is judged again (a cache hit) — so a statement prepared earlier meets rules added by a reload and
 * table sizes reloaded since. A refused message is marked (Message.refusal): the server gets a Parse it rejects in
 * its place, so what precedes it runs, what follows is skipped to Sync, and the client sees the refusal where its
 * statement failed (the Bind of a refused Execute). The batch may also raise statement_timeout above the cap.
 */
import type { SessionPolicy } from "../policy/check.ts";
import { refusals, type Refusal } from "../policy/refusal.ts";
import type { Shape } from "../router/lexer.ts";
import { F } from "../wire/codes.ts";
import { errorResponse } from "../wire/encode.ts";
import { decodeParse } from "../wire/frontend.ts";
import type { Message } from "./prepared.ts";

export type BatchVerdict =
  /** Refused as a whole, its first message failing with `error` (an ErrorResponse). */
  | { kind: "refuse"; error: Uint8Array }
  /** It runs (some messages maybe marked); `capAfter`: restore the statement_timeout cap after it. */
  | { kind: "run"; capAfter: boolean };

const errorOf = (r: Refusal) => errorResponse({ severity: "ERROR", ...r });

/**
 * Judges `messages`; `executed`/`executedAt` are the statements they execute and the message binding each
 * (PreparedStatements.peek), `shapeOf` the relay's shape memo.
 */
export function judgeBatch(policy: SessionPolicy, messages: Message[], executed: readonly string[], executedAt: readonly number[], shapeOf: (sql: string) => Shape): BatchVerdict {
  let first = messages.length;
  let refusedParses: Set<string> | null = null;
  const mark = (at: number, refusal: Refusal) => {
    if (messages[at]!.refusal) return;
    messages[at]!.refusal = errorOf(refusal);
    if (at < first) first = at;
  };
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    if (m.type !== F.Parse) continue;
    let query: string;
    try {
      query = decodeParse(m.frame, 5, m.frame.length).query;
    } catch {
      continue; // malformed: the server rejects it
    }
    // Logged when it runs (below), so a statement parsed and executed in one batch is one log line.
    const verdict = policy.judge(query, shapeOf(query).key);
    if (verdict.refusal) {
      policy.report(query, verdict);
      mark(i, verdict.refusal);
      (refusedParses ??= new Set()).add(query);
    }
  }
  let capAfter = false;
  for (let i = 0; i < executed.length; i++) {
    const sql = executed[i]!;
    if (refusedParses?.has(sql)) continue; // refused at its Parse already
    const verdict = policy.check(sql, shapeOf(sql).key);
    if (verdict.refusal) {
      mark(executedAt[i]!, verdict.refusal);
      continue;
    }
    const change = policy.timeoutChange(sql, verdict);
    if (change === "none") continue;
    // Statements executed after it in this batch would run before the cap is restored.
    if (change === "refuse" || i < executed.length - 1) return { kind: "refuse", error: errorOf(refusals.timeoutNotLast(policy.user, policy.capMs)) };
    capAfter = true;
  }
  if (first === 0) {
    const error = messages[0]!.refusal!;
    messages[0]!.refusal = undefined;
    return { kind: "refuse", error };
  }
  return { kind: "run", capAfter };
}

/**
 * What the relay reports about each request it completed, for the consumers that learn from live traffic: node
 * health (observed latency and errors per node), metrics (per destination and per query fingerprint) and
 * policies. The relay calls {@link RequestObserver.request} once per request — a Query, a FunctionCall, or
 * extended-protocol messages up to Sync — when its ReadyForQuery arrives; observers must be cheap and must not
 * throw (the relay does not catch).
 */
import type { NodeConfig } from "../config/types.ts";
import type { Target } from "../pool/group.ts";
import type { RouteReason } from "../router/route.ts";

/** What a request did: `read` (every statement read-only), `write` (any may write), `other` (transaction control). */
export type RequestKind = "read" | "write" | "other";

/** One completed request. The relay fills one object per request; observers may keep it (it is not reused). */
export interface RequestSample {
  /** The kind of node it was routed to. */
  readonly target: Target;
  readonly kind: RequestKind;
  /** The normalized text of its first statement (literals replaced, comments stripped); "" when it ran none. */
  readonly fingerprint: string;
  /** Why the router sent it there; null for requests the router did not place (inside a pinned batch, COPY data). */
  readonly reason: RouteReason["code"] | null;
  /** `performance.now()` when it was sent to the server. */
  readonly startedAt: number;
  /** Milliseconds from sending it to its ReadyForQuery. */
  ms: number;
  /** Whether it ended in an error (or a rolled-back transaction). */
  failed: boolean;
  /**
   * Whether its ReadyForQuery left the session outside a transaction: one transaction completed (an autocommit
   * request, or the one that ran COMMIT or ROLLBACK). Transactions per second are counted from this.
   */
  txEnd: boolean;
  /**
   * The SQLSTATE of its first error, null when none; `08006` when the server connection was lost while it ran
   * (reported then, with `failed` set). Health tracking counts only the node's own failures (see
   * src/cluster/faults.ts), not errors of the SQL.
   */
  errorCode: string | null;
}

export interface RequestObserver {
  /** `node` answered `sample`. */
  request(node: NodeConfig, sample: RequestSample): void;
}

/** Fans one report out to several observers (in order of registration). */
export class Observers implements RequestObserver {
  private list: RequestObserver[] = [];

  add(o: RequestObserver): () => void {
    this.list = [...this.list, o];
    return () => {
      this.list = this.list.filter((x) => x !== o);
    };
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  request(node: NodeConfig, sample: RequestSample): void {
    for (const o of this.list) o.request(node, sample);
  }
}

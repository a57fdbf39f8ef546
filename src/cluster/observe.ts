/**
 * What the relay reports about each request it completed, for the consumers that learn from live traffic: node
 * health (observed latency and errors per node), metrics (per destination and per query fingerprint) and
 * policies. The relay calls {@link RequestObserver.request} once per request — a Query, a FunctionCall, or
 * extended-protocol messages up to Sync — when its ReadyForQuery arrives; observers must be cheap. One that
 * throws loses the rest of that batch (its error goes to {@link Observers}' `onError`); the others, the relay and
 * later batches are unaffected.
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

/**
 * Fans reports out to several observers (in order of registration), in batches. Each report is queued and the
 * queue goes to the observers when it holds {@link BATCH} reports, {@link DELAY_MS} after its first one, when a
 * request failed (a node's own failure may open its breaker: it is not held back), or when {@link flush} is
 * called — which readers of what the observers learn do first (the metrics' Traffic does). Between two
 * queries a busy server's caches fill with the clients' and PostgreSQL's data, not the observers' tables and
 * code: taken one request at a time, the metrics and health bookkeeping cost two to three times what they cost in
 * a batch (bench/profile.ts: 0.6–0.8 µs of JavaScript per query against 0.2–0.3).
 */
export class Observers implements RequestObserver {
  private list: RequestObserver[] = [];
  private nodes: NodeConfig[] = [];
  private samples: RequestSample[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;

  /**
   * `batch`, `delayMs`: see {@link BATCH} and {@link DELAY_MS} (tests use others). `onError` is told of an
   * observer that threw (the server logs it).
   */
  constructor(
    private readonly batch = BATCH,
    private readonly delayMs = DELAY_MS,
    private readonly onError: (err: unknown) => void = (err) => console.error("pgroute: a request observer failed:", err),
  ) {}

  add(o: RequestObserver): () => void {
    this.flush(); // what was reported before it is not its
    this.list = [...this.list, o];
    return () => {
      this.flush();
      this.list = this.list.filter((x) => x !== o);
    };
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  /** Reports waiting to be handed on. */
  get queued(): number {
    return this.nodes.length;
  }

  request(node: NodeConfig, sample: RequestSample): void {
    this.nodes.push(node);
    this.samples.push(sample);
    if (sample.failed || this.nodes.length >= this.batch) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(this.flush, this.delayMs);
      this.timer.unref?.();
    }
  }

  /** Hands every queued report to the observers now. */
  readonly flush = (): void => {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const n = this.nodes.length;
    if (n === 0) return;
    // The batch is taken off the queue first: whatever an observer does (throw, or report again), it is handed
    // on once.
    const nodes = this.nodes;
    const samples = this.samples;
    this.nodes = [];
    this.samples = [];
    // One observer at a time over the whole batch: its code and tables stay in cache.
    for (const o of this.list) {
      try {
        for (let i = 0; i < n; i++) o.request(nodes[i]!, samples[i]!);
      } catch (err) {
        this.onError(err);
      }
    }
  };
}

/** Reports handed on together at most (a busy server fills a batch in about 10 ms at 20,000 requests a second). */
export const BATCH = 256;
/** The longest a report waits in the queue, in ms (latency averages and request counts lag by at most this). */
export const DELAY_MS = 25;

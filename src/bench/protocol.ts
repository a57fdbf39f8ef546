/**
 * The messages between `pgroute bench`'s coordinator and its load-generator threads. Plain data only (structured
 * clone); latencies travel as a transferred Uint32Array, never copied.
 *
 *   coordinator → worker: prepare (connect every client) → start (run for durationMs) … exit
 *   worker → coordinator: ready | failed, then progress… and done
 */
import type { ServerSslMode } from "../config/types.ts";
import type { Script } from "./script.ts";
import type { Protocol } from "./workloads.ts";

/** How to reach one server or endpoint. */
export interface ConnSpec {
  /** A node name (`primary`, `replica1`) or the target's name, for messages. */
  name: string;
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  sslmode: ServerSslMode;
  sslrootcert?: string;
}

/** Where one client sends its transactions: everything to `writer`, or read-only scripts to `reader` when set. */
export interface ClientRoute {
  /** Global client number, 1-based (pgbench's `:client_id` is 0-based: it gets id − 1). */
  id: number;
  writer: ConnSpec;
  reader: ConnSpec | null;
}

/** What one worker runs in one round. */
export interface RoundTask {
  scripts: Script[];
  protocol: Protocol;
  churn: boolean;
  clients: ClientRoute[];
  scale: number;
  seed: number;
  applicationName: string;
  /** Keep every latency (measured rounds) or only count (warm-up). */
  recordLatencies: boolean;
}

export type ToWorker = { type: "prepare"; task: RoundTask } | { type: "start"; durationMs: number };

/** What clients count while a round runs: per worker, per round and per target. */
export interface Counts {
  /** Script runs that completed without error (one run = one transaction, as in pgbench). */
  transactions: number;
  /** SQL statements that completed without error (probes and rollbacks not included). */
  statements: number;
  /** Script runs that failed, and by what: SQLSTATE or the client's error code. */
  errors: number;
  errorCodes: Record<string, number>;
  /** ROLLBACKs sent to clear a transaction a failed statement left open. */
  rollbacks: number;
  /** `select 1` sent once per connection before the round starts, so connecting is not timed. */
  probes: number;
}

/** What one worker measured in one round. */
export interface WorkerResult extends Counts {
  /** From the start message to the last transaction's end. */
  elapsedMs: number;
  /** Latency of each completed transaction in µs (empty when not recorded). */
  latencies: Uint32Array;
}

export type FromWorker =
  | { type: "ready" }
  | { type: "failed"; message: string }
  | { type: "progress"; transactions: number; errors: number }
  | { type: "done"; result: WorkerResult };

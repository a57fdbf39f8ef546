/**
 * A load-generator thread of `pgroute bench` (a Bun Worker): runs its share of the clients for one round at a
 * time, posting progress and then its counts and latencies. Several run side by side so the generator is not
 * what limits a small machine; pgroute itself, when started in-process, stays on the main thread.
 *
 * `bun build --compile` must list this file as an extra entry point (see package.json "build").
 */
import { BenchClient, newTally, type Tally } from "./client.ts";
import type { FromWorker, RoundTask, ToWorker } from "./protocol.ts";

declare const self: Worker;

const PROGRESS_EVERY_MS = 250;

let task: RoundTask | null = null;
let clients: BenchClient[] = [];
let tally: Tally = newTally(false);

function post(msg: FromWorker, transfer?: ArrayBuffer[]): void {
  self.postMessage(msg, transfer ?? []);
}

async function prepare(t: RoundTask): Promise<void> {
  task = t;
  tally = newTally(t.recordLatencies);
  clients = t.clients.map((route) => new BenchClient(route, t, tally));
  const opened = await Promise.allSettled(clients.map((c) => c.open()));
  const failed = opened.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.all(clients.map((c) => c.close()));
    post({ type: "failed", message: String((failed.reason as Error)?.message ?? failed.reason) });
    return;
  }
  post({ type: "ready" });
}

async function start(durationMs: number): Promise<void> {
  const t0 = performance.now();
  const ticker = setInterval(() => post({ type: "progress", transactions: tally.transactions, errors: tally.errors }), PROGRESS_EVERY_MS);
  try {
    await Promise.all(clients.map((c) => c.run(t0 + durationMs)));
  } finally {
    clearInterval(ticker);
  }
  const elapsedMs = performance.now() - t0;
  // Closing before reporting: a server backend that exits publishes its statistics at once.
  await Promise.all(clients.map((c) => c.close()));
  const latencies = tally.latencies?.take() ?? new Uint32Array(0);
  const { transactions, statements, errors, errorCodes, rollbacks, probes } = tally;
  post({ type: "done", result: { transactions, statements, errors, errorCodes, rollbacks, probes, elapsedMs, latencies } }, [latencies.buffer as ArrayBuffer]);
  clients = [];
  task = null;
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  const run = msg.type === "prepare" ? prepare(msg.task) : task ? start(msg.durationMs) : Promise.reject(new Error("start before prepare"));
  run.catch((err: unknown) => post({ type: "failed", message: String((err as Error)?.stack ?? err) }));
};

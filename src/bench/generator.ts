/**
 * The coordinator's side of the load generator: a fixed set of worker threads, each given a share of the clients,
 * prepared together (every client connected) and started together for one round.
 */
import { BenchError } from "./errors.ts";
import type { FromWorker, RoundTask, ToWorker, WorkerResult } from "./protocol.ts";

type Settled = Extract<FromWorker, { type: "ready" } | { type: "done" }>;

/** One worker thread and the reply it is waiting for. */
class Thread {
  private waiting: { resolve: (m: Settled) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  onProgress: ((m: Extract<FromWorker, { type: "progress" }>) => void) | null = null;

  constructor(readonly worker: Worker) {
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.receive(e.data);
    worker.onerror = (e: ErrorEvent) => this.fail(new BenchError(`load generator thread crashed: ${e.message}`));
  }

  private receive(m: FromWorker): void {
    switch (m.type) {
      case "progress":
        this.onProgress?.(m);
        return;
      case "failed":
        this.fail(new BenchError(m.message));
        return;
      case "ready":
      case "done": {
        const w = this.waiting;
        this.waiting = null;
        w?.resolve(m);
        return;
      }
    }
  }

  private fail(err: Error): void {
    this.failure = err;
    const w = this.waiting;
    this.waiting = null;
    w?.reject(err);
  }

  /** The next `ready` or `done`; rejects if the thread reports a failure first. */
  next(): Promise<Settled> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  send(m: ToWorker): void {
    this.worker.postMessage(m);
  }
}

/** Progress of a running round, summed over threads. */
export interface RoundProgress {
  transactions: number;
  errors: number;
}

export interface RunOptions {
  durationMs: number;
  /** Runs once every client is connected, just before the clock starts (server counters are read here). */
  beforeStart?: () => Promise<void>;
  onProgress?: (p: RoundProgress) => void;
}

/** Splits clients over `threads` tasks, round robin, so every thread gets a similar mix. */
export function splitTasks(task: RoundTask, threads: number): RoundTask[] {
  const tasks = Array.from({ length: threads }, () => ({ ...task, clients: [] as RoundTask["clients"] }));
  task.clients.forEach((c, i) => tasks[i % threads]!.clients.push(c));
  return tasks.filter((t) => t.clients.length > 0);
}

/**
 * The worker's entry point. From source it sits next to this module. In a `bun build --compile` binary (package.json
 * "build" names src/bench/worker.ts as a second entry point) it is embedded under the entry points' common root,
 * src/, and is named by that relative path.
 */
export function workerEntry(modulePath = import.meta.path): string | URL {
  return /\$bunfs|~BUN/.test(modulePath) ? "./bench/worker.ts" : new URL("./worker.ts", import.meta.url);
}

export class LoadGenerator {
  private constructor(private readonly threads: Thread[]) {}

  /** Starts `count` worker threads. */
  static start(count: number): LoadGenerator {
    const threads = Array.from({ length: count }, () => new Thread(new Worker(workerEntry())));
    return new LoadGenerator(threads);
  }

  get size(): number {
    return this.threads.length;
  }

  /** Runs one round of `task`, its clients spread over the threads; resolves with each thread's result. */
  async run(task: RoundTask, o: RunOptions): Promise<WorkerResult[]> {
    const parts = splitTasks(task, this.threads.length);
    const active = this.threads.slice(0, parts.length);
    const ready = active.map((t) => t.next());
    active.forEach((t, i) => t.send({ type: "prepare", task: parts[i]! }));
    const prepared = await Promise.allSettled(ready);
    const failed = prepared.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    await o.beforeStart?.();
    const seen = active.map(() => ({ transactions: 0, errors: 0 }));
    active.forEach((t, i) => {
      t.onProgress = (m) => {
        seen[i] = { transactions: m.transactions, errors: m.errors };
        o.onProgress?.(seen.reduce((a, b) => ({ transactions: a.transactions + b.transactions, errors: a.errors + b.errors })));
      };
    });
    const done = active.map((t) => t.next());
    for (const t of active) t.send({ type: "start", durationMs: o.durationMs });
    try {
      const results = await Promise.all(done);
      return results.map((m) => (m as Extract<Settled, { type: "done" }>).result);
    } finally {
      for (const t of active) t.onProgress = null;
    }
  }

  /** Stops every thread (their connections close with them). */
  terminate(): void {
    for (const t of this.threads) t.worker.terminate();
  }
}

/**
 * Tear-down that runs exactly once, whatever ends the benchmark: normal completion, a thrown error, Ctrl-C
 * (SIGINT), SIGTERM or SIGHUP. Steps run in reverse order of registration (last started, first stopped).
 *
 * Each step has an asynchronous `run` (graceful) and an optional synchronous `sync` (immediate, for a second
 * Ctrl-C or `process.on("exit")`, where nothing asynchronous can run any more).
 */
import { rmSync } from "node:fs";

export interface CleanupStep {
  name: string;
  /** Run before every other step (e.g. stopping the load generator before the servers it talks to). */
  first?: boolean;
  run: () => Promise<void> | void;
  sync?: () => void;
}

const steps: CleanupStep[] = [];
let running: Promise<void> | undefined;
let installed = false;
let signalled = false;

/** Whether a signal has started the tear-down (the main flow should stop reporting). */
export function interrupted(): boolean {
  return signalled;
}

/** The next step to run: a `first` one if any, else the most recently registered. */
function nextStep(): CleanupStep | undefined {
  const i = steps.findIndex((s) => s.first);
  return i >= 0 ? steps.splice(i, 1)[0] : steps.pop();
}

/** Register a step; the returned function removes it again (after the thing was stopped by other means). */
export function onCleanup(step: CleanupStep): () => void {
  steps.push(step);
  return () => {
    const i = steps.indexOf(step);
    if (i >= 0) steps.splice(i, 1);
  };
}

/** Registers the removal of `path` (a temporary file or directory) and returns the path. */
export function removeOnCleanup(name: string, path: string): string {
  const rm = () => rmSync(path, { recursive: true, force: true });
  onCleanup({ name, run: rm, sync: rm });
  return path;
}

/** Run every registered step (`first` ones, then newest first), each one guarded so one failure does not skip the rest. */
export function cleanupAll(log: (line: string) => void = () => {}): Promise<void> {
  running ??= (async () => {
    for (let step = nextStep(); step; step = nextStep()) {
      try {
        await step.run();
      } catch (err) {
        log(`cleanup: ${step.name} failed: ${(err as Error).message}; forcing`);
        try {
          step.sync?.();
        } catch {
          // nothing more we can do
        }
      }
    }
  })();
  return running;
}

/** Immediate, synchronous tear-down of whatever is still registered. Never throws. */
export function cleanupAllSync(): void {
  for (let step = nextStep(); step; step = nextStep()) {
    try {
      step.sync?.();
    } catch {
      // An exit handler has nobody to report to.
    }
  }
}

/**
 * On the first SIGINT/SIGTERM/SIGHUP: graceful cleanup, then exit (130/143/129). On a second one while that is
 * under way: immediate cleanup and exit. On process exit: immediate cleanup of anything left.
 */
export function installSignalHandlers(log: (line: string) => void): void {
  if (installed) return;
  installed = true;
  const codes: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  for (const sig of Object.keys(codes) as NodeJS.Signals[]) {
    process.on(sig, () => {
      const code = codes[sig]!;
      if (signalled) {
        log(`\n${sig} again: stopping everything immediately`);
        cleanupAllSync();
        process.exit(code);
      }
      signalled = true;
      log(`\n${sig}: stopping pgbench, the proxies and the cluster… (again to force)`);
      void cleanupAll(log).finally(() => process.exit(code));
    });
  }
  process.on("exit", () => cleanupAllSync());
}

/**
 * A guard process that stops a dev cluster once the process that started it is gone, however it went: a crash,
 * SIGKILL, Ctrl-C, or a test runner that exits without emitting "exit" (`bun test` 1.4.5 runs no exit handlers).
 *
 * It learns of the death without polling: its stdin is a pipe whose only writer is the owner, so EOF on it means
 * the owner has exited. It runs in its own session, so the terminal's Ctrl-C reaches the owner but not it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

/** A running guard; `dismiss` it after stopping the cluster yourself. */
export interface Watchdog {
  dismiss(): void;
}

const MAIN = join(import.meta.dir, "watchdog-main.ts");

// Strong references: if a guard's Subprocess were collected, its stdin pipe would close and the guard would
// take that for its owner's death and stop a cluster still in use.
const live = new Set<Bun.Subprocess>();

/**
 * Start a guard that runs `stopCluster(dir)` when this process exits. Needs the TypeScript sources on disk
 * (tests, benchmarks, `bun src/cli/main.ts`); in a `bun build --compile` binary it returns a no-op guard.
 */
export function guardCluster(dir: string): Watchdog {
  if (!existsSync(MAIN)) return { dismiss: () => {} };
  const proc = Bun.spawn([process.execPath, MAIN, dir], {
    stdin: "pipe",
    stdout: "ignore",
    stderr: "ignore",
    detached: true,
  });
  proc.unref(); // the guard must never keep its owner alive
  live.add(proc);
  return {
    dismiss() {
      live.delete(proc);
      proc.kill();
    },
  };
}

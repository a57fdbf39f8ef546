/**
 * The frame every benchmark script runs in: signal handlers and tear-down, and on failure the tails of the
 * logs registered as diagnostics, so a failed run says why.
 */
import { cleanupAll, installSignalHandlers, interrupted } from "./cleanup.ts";
import { err } from "./env.ts";
import { tail } from "./proc.ts";

/** Log tails worth showing if the run fails (read before the cleanup removes the files). */
const diagnostics: { name: string; file: string }[] = [];

export function addDiagnostic(name: string, file: string): void {
  diagnostics.push({ name, file });
}

/** Install the signal handlers (a script calls this once its prerequisites are checked). */
export function guard(): void {
  installSignalHandlers(err);
}

/**
 * Runs `main`, then the registered tear-down whatever happened, and exits with main's status (1 if it threw,
 * after printing the error and the diagnostics' log tails).
 */
export async function runMain(main: () => Promise<number>): Promise<never> {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    if (!interrupted()) {
      console.error(`\nbenchmark failed: ${e instanceof Error ? e.message : String(e)}`);
      for (const d of diagnostics) console.error(`--- last lines of the ${d.name} (${d.file}) ---\n${tail(d.file, 20)}`);
    }
    code = 1;
  } finally {
    await cleanupAll(err);
  }
  process.exit(code);
}

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

/**
 * A script's options from its command line, or the exit code when there are none to run with: 2 after a usage error
 * (printed with the usage), 0 after `--help` (`parse` returns undefined; the usage is printed).
 */
export function parseCommandLine<O>(usage: string, parse: (argv: string[]) => O | undefined): O | number {
  let opts: O | undefined;
  try {
    opts = parse(process.argv.slice(2));
  } catch (e) {
    err(`${(e as Error).message}\n\n${usage}`);
    return 2;
  }
  if (opts === undefined) {
    console.log(usage);
    return 0;
  }
  return opts;
}

/**
 * The start every pgbench script shares: parse the options (usage errors exit 2, `--help` prints the usage),
 * check that pgbench, psql and PgBouncer are installed and that this is Linux (for /proc), and install the
 * signal handlers and pgbench's tear-down. Returns the options and PgBouncer's version, or an exit code.
 */
export function startPgbenchScript<O>(
  usage: string,
  parse: (argv: string[]) => O | undefined,
  deps: { which: (cmd: string) => boolean; pgbouncerVersion: () => string | undefined; onPgbenchCleanup: () => void },
): { opts: O; bouncerVersion: string } | number {
  const opts = parseCommandLine(usage, parse);
  if (typeof opts === "number") return opts;
  const missing: string[] = [];
  if (!deps.which("pgbench") || !deps.which("psql")) missing.push("pgbench/psql not found: apt-get install postgresql-client");
  const bouncerVersion = deps.which("pgbouncer") ? deps.pgbouncerVersion() : undefined;
  if (!bouncerVersion) missing.push("pgbouncer not found: apt-get install pgbouncer");
  if (process.platform !== "linux") missing.push("this benchmark reads /proc and needs Linux");
  if (missing.length > 0) {
    for (const m of missing) err(m);
    return 2;
  }
  guard();
  deps.onPgbenchCleanup();
  return { opts, bouncerVersion: bouncerVersion! };
}

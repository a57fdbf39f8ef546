import { parseArgs, type ParseArgsConfig } from "node:util";

/** One `pgroute` subcommand. `run` returns the process exit code; only `main.ts` calls `process.exit`. */
export interface Command {
  readonly name: string;
  /** One line for `pgroute --help`. */
  readonly summary: string;
  /** Full text for `pgroute <name> --help`. */
  readonly help: string;
  run(argv: string[]): Promise<number>;
}

/** A usage error: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** `util.parseArgs` with strict checking, turning its errors into a `UsageError`. */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * Reading a configuration: file → TOML → `validate` → frozen `Config`. Every failure, whether unreadable file,
 * TOML syntax or schema, surfaces as one `ConfigLoadError` carrying every message, so `serve`, `check` and a
 * reload report problems the same way (a bad reload keeps the old snapshot and prints these).
 */
import { readFile } from "node:fs/promises";
import { parse, TomlError } from "smol-toml";
import { formatConfigError, validate } from "./schema.ts";
import type { Config } from "./types.ts";

/** A configuration that could not be loaded. `errors` has one line per problem, without the source prefix. */
export class ConfigLoadError extends Error {
  override readonly name = "ConfigLoadError";
  /**
   * @param errors one line per problem, e.g. `pool.size: expected an integer >= 1, got 0`
   * @param source file path (or label) to prefix each line of `message` with; omitted when a line names it already
   */
  constructor(
    readonly errors: string[],
    readonly source?: string,
  ) {
    super(source === undefined ? errors.join("\n") : errors.map((e) => `${source}: ${e}`).join("\n"));
  }
}

/** Why a file could not be read, in words rather than an errno name. */
function readFailure(code: string | undefined): string {
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return code ?? "unknown error";
  }
}

/**
 * Reads and validates the TOML configuration at `path`.
 * @throws ConfigLoadError for an unreadable file, a TOML syntax error or any schema errors (all of them).
 */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigLoadError([`cannot read ${path}: ${readFailure(code)}`]);
  }
  return parseConfig(text, path);
}

/**
 * Parses and validates TOML text; `source` labels the error lines (a path, or "<config>" by default).
 * @throws ConfigLoadError on a TOML syntax error (with its line and column) or any schema errors.
 */
export function parseConfig(text: string, source = "<config>"): Config {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // smol-toml's message is "Invalid TOML document: <what>\n\n<code block>"; keep the one-line part.
    const what = err.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
    throw new ConfigLoadError([`invalid TOML at line ${err.line}, column ${err.column}: ${what}`], source);
  }
  return fromRaw(raw, source);
}

/**
 * Validates a raw object shaped like parsed TOML (snake_case keys, "5s" durations), for tests and for code
 * that builds configs: `configFrom({ nodes: [{ name: "p", port: 5432 }], users: [{ name: "u", password: "p" }] })`.
 * @throws ConfigLoadError listing every error.
 */
export function configFrom(raw: unknown): Config {
  return fromRaw(raw, "<object>");
}

function fromRaw(raw: unknown, source: string): Config {
  const result = validate(raw);
  if ("errors" in result) throw new ConfigLoadError(result.errors.map(formatConfigError), source);
  return result.config;
}

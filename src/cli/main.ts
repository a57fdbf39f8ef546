#!/usr/bin/env bun
/**
 * The `pgroute` entry point: the only place that reads argv for dispatch and calls `process.exit`.
 */
import pc from "picocolors";
import pkg from "../../package.json" with { type: "json" };
import { UsageError, type Command } from "./command.ts";
import { commands } from "./commands.ts";

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    `pgroute ${pkg.version} — a PostgreSQL wire-protocol proxy and load balancer`,
    "",
    "Usage: pgroute <command> [options]",
    "",
    "Commands:",
    ...lines,
    "",
    "Options:",
    "  -h, --help     show help (also: pgroute <command> --help)",
    "  -V, --version  print the version",
  ].join("\n");
}

function find(name: string): Command | undefined {
  return commands.find((c) => c.name === name);
}

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === "-h" || first === "--help" || first === "help") {
    const sub = first === "help" && rest[0] ? find(rest[0]) : undefined;
    console.log(sub ? sub.help : topHelp());
    return first === undefined ? 2 : 0;
  }
  if (first === "-V" || first === "--version" || first === "version") {
    console.log(`pgroute ${pkg.version}`);
    return 0;
  }
  const command = find(first);
  if (!command) {
    console.error(`pgroute: unknown command "${first}"\n\n${topHelp()}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(command.help);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`pgroute ${command.name}: ${err.message}\n\n${command.help}`);
      return 2;
    }
    console.error(pc.red(`pgroute ${command.name}: ${(err as Error).message ?? err}`));
    if (process.env.PGROUTE_DEBUG) console.error(err);
    return 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}

/** The machine and tool versions for a report header, the load average, and the script's output helpers. */
import { readFileSync } from "node:fs";
import { release, totalmem } from "node:os";
import { interrupted } from "./cleanup.ts";

/** Report lines on stdout; silent once a signal has started the tear-down (results from then on are meaningless). */
export const out = (line = ""): void => {
  if (!interrupted()) console.log(line);
};

/** Progress and errors on stderr. */
export const err = (line: string): void => console.error(line);

export function which(cmd: string): boolean {
  return Bun.which(cmd) !== null;
}

/** The first line of a command's stdout, or "?". */
export function firstLine(argv: string[]): string {
  try {
    const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
    return r.stdout.toString().split("\n")[0]?.trim() ?? "?";
  } catch {
    return "?";
  }
}

export interface Machine {
  nproc: number;
  cpuModel: string;
  kernel: string;
  memGiB: number;
}

export function machine(): Machine {
  const nproc = Number(firstLine(["nproc"])) || navigator.hardwareConcurrency;
  let cpuModel = "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // no /proc/cpuinfo
  }
  return { nproc, cpuModel, kernel: release(), memGiB: Math.round(totalmem() / 2 ** 30) };
}

/** `machine : 2 CPUs (nproc), <model>, 24 GiB RAM, Linux <kernel>` */
export function machineLine(m: Machine): string {
  return `machine : ${m.nproc} CPUs (nproc), ${m.cpuModel}, ${m.memGiB} GiB RAM, Linux ${m.kernel}`;
}

/** The 1, 5 and 15 minute load averages from /proc/loadavg. */
export function loadavg(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

/** `Bun 1.4.5 (a7733435c)` style version of the running Bun. */
export function bunVersion(): string {
  return `${Bun.version} (${Bun.revision.slice(0, 9)})`;
}

/** pgbench's version without the `pgbench (PostgreSQL) ` prefix. */
export function pgbenchVersion(): string {
  return firstLine(["pgbench", "--version"]).replace(/^pgbench \(PostgreSQL\)\s+/, "");
}

/** The soft and hard limit on open files of `pid` (default: this process), from /proc/<pid>/limits. */
export function openFilesLimit(pid: number | "self" = "self"): { soft: number; hard: number } | undefined {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    if (!m) return undefined;
    const n = (s: string) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s));
    return { soft: n(m[1]!), hard: n(m[2]!) };
  } catch {
    return undefined;
  }
}

/**
 * Which pgroute is measured: the commit and the files under src/ that differ from it (the benchmark runs the
 * working tree), e.g. `1863906 + uncommitted changes in src/pool/demux.ts, src/session/prepared.ts`.
 */
export function gitState(root: string): { commit: string; dirty: string[]; diffHash: string | undefined; text: string } {
  const git = (...args: string[]) => {
    try {
      const r = Bun.spawnSync(["git", "-C", root, ...args], { stdout: "pipe", stderr: "ignore" });
      return r.exitCode === 0 ? r.stdout.toString() : undefined;
    } catch {
      return undefined;
    }
  };
  const commit = git("rev-parse", "--short", "HEAD")?.trim() ?? "unknown";
  const dirty = (git("status", "--porcelain", "--", "src") ?? "")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.slice(3));
  // A fingerprint of the uncommitted changes, so two runs can be told apart (or matched) later.
  const diff = dirty.length === 0 ? "" : (git("diff", "HEAD", "--", "src") ?? "");
  const diffHash = diff === "" ? undefined : new Bun.CryptoHasher("sha1").update(diff).digest("hex").slice(0, 10);
  const text =
    dirty.length === 0
      ? `git ${commit} (src/ clean)`
      : `git ${commit} + uncommitted changes in ${dirty.join(", ")}${diffHash ? ` (git diff HEAD -- src: sha1 ${diffHash}…)` : ""}`;
  return { commit, dirty, diffHash, text };
}

/** An integer option of at least `lo`, `def` when absent; a usage error (thrown) otherwise. */
export function intOption(name: string, v: string | undefined, def: number, lo: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo) throw new Error(`--${name}: expected an integer ≥ ${lo}, got "${v}"`);
  return n;
}

/** An option that must be one of `choices`, `def` when absent; a usage error (thrown) otherwise. */
export function choiceOption<C extends string>(name: string, v: string | undefined, choices: readonly C[], def: C): C {
  if (v === undefined) return def;
  if (!(choices as readonly string[]).includes(v)) throw new Error(`--${name}: expected one of ${choices.join(", ")}, got "${v}"`);
  return v as C;
}

/** The options the pgbench scripts share (`parseArgs` tables; numbers come as strings, see {@link intOption}). */
export const PGBENCH_OPTIONS = {
  rounds: { type: "string" },
  duration: { type: "string" },
  clients: { type: "string" },
  scale: { type: "string" },
  json: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

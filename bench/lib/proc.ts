/** Process helpers for the benchmark: CPU time from /proc, waiting for a port, stopping a child for sure. */
import { isAlive } from "../../src/devcluster/node.ts";
import { readFileSync, readdirSync } from "node:fs";
import { connect } from "node:net";
import type { Subprocess } from "bun";

let clkTck: number | undefined;

/** Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat (almost always 100). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    const out = Bun.spawnSync(["getconf", "CLK_TCK"], { stdout: "pipe", stderr: "ignore" });
    const n = Number.parseInt(out.stdout.toString().trim(), 10);
    clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

/**
 * CPU seconds (user + system) a process has used so far, over all its threads: fields 14 and 15 of
 * /proc/<pid>/stat. The command name (field 2) may contain spaces, so fields are counted after the last ')'.
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return (utime + stime) / clockTicks();
}

/** The command name of `pid` (/proc/<pid>/comm), or undefined if it is gone. */
export function commOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` (/proc/<pid>/task/<pid>/children). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter((s) => s !== "")
      .map(Number);
  } catch {
    return [];
  }
}

/** Whether `pid` is a live, non-zombie process: the dev cluster's own check. */
export { isAlive };

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether a TCP connection to host:port is accepted right now. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

/**
 * Poll until host:port accepts connections, failing early if `alive()` turns false (the server died) and after
 * `timeoutMs` at the latest.
 */
export async function waitForPort(
  what: string,
  host: string,
  port: number,
  alive: () => boolean,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`${what} exited before accepting connections on ${host}:${port}`);
    if (await canConnect(host, port, 500)) return;
    await sleep(100);
  }
  throw new Error(`${what} did not accept connections on ${host}:${port} within ${timeoutMs} ms`);
}

/** SIGTERM `pid`, wait up to `graceMs`, then SIGKILL. Resolves once it is gone. */
export async function terminate(pid: number, graceMs: number, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return;
    await sleep(50);
  }
  killNow(pid);
  for (let i = 0; i < 40 && isAlive(pid); i++) await sleep(50);
}

/** SIGKILL, ignoring a process that is already gone. */
export function killNow(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Stop a Bun child: SIGTERM, grace period, SIGKILL; then reap it. */
export async function stopChild(proc: Subprocess, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  await terminate(proc.pid, graceMs);
  await Promise.race([proc.exited, sleep(2000)]);
}

/** uid/gid of the `postgres` system user, from /etc/passwd. */
export function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
      const [name, , uid, gid] = line.split(":");
      if (name === "postgres" && uid && gid) return { uid: Number(uid), gid: Number(gid) };
    }
  } catch {
    // no /etc/passwd
  }
  return undefined;
}

/** Our environment minus libpq variables that would point client tools somewhere else. */
export function clientEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^PG[A-Z]+$/.test(k)) continue;
    env[k] = v;
  }
  env.LC_ALL = "C";
  return { ...env, ...extra };
}

/** The last `n` lines of a text file, for error messages. */
export function tail(path: string, n = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-n).join("\n");
  } catch {
    return `(no output at ${path})`;
  }
}

/** VmRSS (resident set) and VmHWM (its peak) of `pid` in bytes, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rssBytes: number; hwmBytes: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kB = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rssBytes: kB("VmRSS"), hwmBytes: kB("VmHWM") };
}

/** How many file descriptors `pid` has open (sockets included), from /proc/<pid>/fd. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

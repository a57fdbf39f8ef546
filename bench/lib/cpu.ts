/**
 * How busy the machine was with things other than the benchmark: CPU time the whole machine spent busy
 * (/proc/stat) minus what the benchmark's own processes used (the proxy, pgbench, the PostgreSQL
 * server and its backends, and this script). On a shared machine this tells a clean run from a noisy one.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { childrenOf, clockTicks } from "./proc.ts";

/**
 * CPU seconds the machine has spent busy (user, nice, system, irq, softirq), summed over all CPUs. Interrupt
 * and softirq time counts because without CONFIG_IRQ_TIME_ACCOUNTING (the common case) the
 * kernel charges a softirq tick both to the interrupted process's stime and to the softirq column, never to the
 * system column; loopback networking does much of its work in softirq. With precise IRQ accounting the same
 * time goes to no process, so our own softirq load then shows up as "others" (a few hundredths of a core).
 */
export function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const [, user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) / clockTicks();
}

/** utime, stime, cutime, cstime of `pid` in seconds (children's times count once they are reaped). */
function ownAndReaped(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const f = (n: number) => Number(rest[n - 3] ?? 0);
    return (f(14) + f(15) + f(16) + f(17)) / clockTicks();
  } catch {
    return 0;
  }
}

/**
 * CPU seconds used by `pid` and all its descendants so far, live or reaped. A child that exits between two
 * readings moves from the live sum into its parent's cutime/cstime, so differences stay right — provided one
 * reading is a consistent snapshot: a child reaped while we read would be counted twice or not at all (ten
 * backends exiting together after a pgbench run make that likely). So the children are listed before and
 * after the parent's own counters are read, and the reading is repeated if that list changed in between.
 */
export function treeCpuSeconds(pid: number): number {
  let total = 0;
  for (let attempt = 0; attempt < 20; attempt++) {
    const before = childrenOf(pid);
    total = 0;
    for (const child of before) total += treeCpuSeconds(child);
    total += ownAndReaped(pid);
    const after = childrenOf(pid);
    // A reap removes a child from the list; a new child (a fork) has used next to nothing and is harmless.
    if (before.every((c) => after.includes(c))) return total;
  }
  return total;
}

/** The postmaster's pid from `dataDir/postmaster.pid`, or undefined. */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n", 1)[0]!, 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** CPU seconds this script itself has used. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

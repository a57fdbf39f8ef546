/**
 * One measured load run: the proxy's CPU time, the PostgreSQL server's, and how much of the machine the rest
 * of the world used meanwhile ("others"), read from /proc just before and just after the run.
 */
import { machineBusySeconds, selfCpuSeconds, treeCpuSeconds } from "./cpu.ts";
import { cpuSeconds, tail } from "./proc.ts";
import type { ProxyProcess } from "./proxies.ts";

export interface Measured<T> {
  result: T;
  wallS: number;
  /** Proxy CPU seconds (user + system) during the run; undefined without a proxy (direct). */
  proxyCpuS: number | undefined;
  /** CPU seconds of the PostgreSQL server (postmaster and all backends, live or exited) during the run. */
  postgresCpuS: number | undefined;
  /**
   * CPU the rest of the machine used during the run, in cores (CPU seconds per wall second): machine-wide
   * busy time minus the benchmark's own processes. Near 0 on a quiet machine.
   */
  otherCores: number;
}

export interface MeasureOptions<T> {
  /** The proxy the load goes through, if any. */
  proxy: ProxyProcess | undefined;
  /** Every long-lived process of the benchmark (both proxies, idle or not), whose CPU is "ours". */
  ours: readonly ProxyProcess[];
  pmPid: number | undefined;
  run: () => Promise<T>;
  /** Names the run in an error ("round 2"). */
  label: string;
  /** CPU seconds of the load generator (a child that has exited by the time `run` resolves). */
  clientCpuS: (r: T) => number | undefined;
}

export async function measure<T>(o: MeasureOptions<T>): Promise<Measured<T>> {
  const { proxy, pmPid } = o;
  /** CPU seconds of every long-lived process of ours: the proxies, PostgreSQL, this script. */
  const oursSoFar = () =>
    o.ours.reduce((s, p) => s + cpuSeconds(p.pid), 0) + (pmPid ? treeCpuSeconds(pmPid) : 0) + selfCpuSeconds();
  const busy0 = machineBusySeconds();
  const ours0 = oursSoFar();
  const pg0 = pmPid ? treeCpuSeconds(pmPid) : Number.NaN;
  const cpu0 = proxy ? cpuSeconds(proxy.pid) : 0;
  const w0 = performance.now();
  const result = await o.run();
  const wallS = (performance.now() - w0) / 1000;
  if (proxy && !proxy.alive()) throw new Error(`${proxy.name} (pid ${proxy.pid}) died during ${o.label}\n${tail(proxy.logFile)}`);
  const proxyCpuS = proxy ? cpuSeconds(proxy.pid) - cpu0 : undefined;
  const postgresCpuS = pmPid ? treeCpuSeconds(pmPid) - pg0 : undefined;
  const oursS = oursSoFar() - ours0 + (o.clientCpuS(result) ?? 0);
  const otherCores = (machineBusySeconds() - busy0 - oursS) / wallS;
  return { result, wallS, proxyCpuS, postgresCpuS, otherCores };
}

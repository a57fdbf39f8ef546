/**
 * A test file's own cluster, for tests that stop, promote or slow down its nodes (the shared one of cluster.ts must
 * stay as it is): started in the file's beforeAll (with the file's own preparation), stopped and removed in its
 * afterAll — or by a guard process should the run die — with the pgroute the file starts in front of it.
 */
import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configFrom } from "../../src/config/load.ts";
import { guardCluster, startCluster, stopCluster, type DevCluster, type StartOptions, type Watchdog } from "../../src/devcluster/index.ts";
import { createLogger } from "../../src/log.ts";
import { Proxy } from "../../src/server.ts";

export interface OwnCluster {
  /** Set once beforeAll has run. */
  readonly cluster: DevCluster;
  /** The pgroute started by {@link OwnCluster.serve}, if any. */
  readonly proxy: Proxy;
  /**
   * Starts pgroute in front of the cluster: `raw` (TOML-shaped) over a loopback listener on a free port and the
   * test log level; returns its port.
   */
  serve(raw: Record<string, unknown>): Promise<number>;
}

/** Registers the file's beforeAll/afterAll for a cluster of its own; `prepare` runs once it is up. */
export function ownCluster(prefix: string, opts: Omit<StartOptions, "dir" | "port">, prepare?: (cluster: DevCluster) => Promise<void>): OwnCluster {
  let cluster: DevCluster | undefined;
  let proxy: Proxy | undefined;
  let guard: Watchdog | undefined;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), `pgroute-${prefix}-`));
    guard = guardCluster(dir);
    cluster = await startCluster({ ...opts, dir, port: 0 });
    await prepare?.(cluster);
  }, 90_000);
  afterAll(async () => {
    await proxy?.stop();
    if (cluster) await stopCluster(cluster.dir);
    guard?.dismiss();
  });
  return {
    get cluster() {
      if (!cluster) throw new Error("the cluster is not started yet (beforeAll)");
      return cluster;
    },
    get proxy() {
      if (!proxy) throw new Error("pgroute is not started yet (serve)");
      return proxy;
    },
    async serve(raw) {
      const config = configFrom({ listen: { host: "127.0.0.1", port: 0 }, log: { level: process.env.PGROUTE_TEST_LOG ?? "error" }, ...raw });
      proxy = new Proxy({ config, log: createLogger(config.log) });
      return (await proxy.listen()).port;
    },
  };
}

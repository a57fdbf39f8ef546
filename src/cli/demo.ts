import pc from "picocolors";
import { loadConfig } from "../config/load.ts";
import { startCluster, type DevCluster } from "../devcluster/index.ts";
import { isPortFree } from "../devcluster/ports.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { applyOverrides, startProxy, untilSignal } from "./serve.ts";

const help = `Usage: pgroute demo [--replicas N] [--port P] [--log-level LEVEL]

Starts a local PostgreSQL primary with streaming replicas (in a temporary directory), puts pgroute in front of
it, and prints the psql command to connect. Ctrl-C stops pgroute and removes the cluster.

Options:
  --replicas N       number of streaming replicas (default 2)
  --port P           pgroute's listen port (default 6432)
  --log-level LEVEL  debug | info | warn | error (default info)

Needs the PostgreSQL server binaries (Debian: apt-get install postgresql).`;

export const demo: Command = {
  name: "demo",
  summary: "start a local primary + replicas with pgroute in front (Ctrl-C tears down)",
  help,
  async run(argv) {
    const { values } = parseFlags(argv, {
      replicas: { type: "string", default: "2" },
      port: { type: "string", default: "6432" },
      "log-level": { type: "string", default: "info" },
    });
    const replicas = Number(values.replicas);
    const port = Number(values.port);
    if (!Number.isInteger(replicas) || replicas < 0 || replicas > 8) throw new UsageError(`--replicas: expected an integer 0-8, got "${values.replicas}"`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port: expected an integer 1-65535, got "${values.port}"`);
    // Fail before spending seconds on initdb when the proxy could not listen anyway.
    if (!(await isPortFree(port))) throw new Error(`port ${port} is already in use on 127.0.0.1 (choose another with --port)`);

    const abort = new AbortController();
    const stopEarly = () => abort.abort();
    process.once("SIGINT", stopEarly);
    process.once("SIGTERM", stopEarly);
    let cluster: DevCluster | null = null;
    try {
      cluster = await startCluster({
        replicas,
        proxyPort: port,
        signal: abort.signal,
        log: (line) => console.error(pc.dim(line)),
      });
      process.off("SIGINT", stopEarly);
      process.off("SIGTERM", stopEarly);
      const config = applyOverrides(await loadConfig(cluster.configPath), { logLevel: values["log-level"] });
      const { proxy, admin, adminUrl } = await startProxy(config);
      proxy.reloadSource = async () => applyOverrides(await loadConfig(cluster!.configPath), { logLevel: values["log-level"] });
      for (const n of cluster.nodes) console.error(`  ${n.name.padEnd(9)} ${n.role.padEnd(8)} 127.0.0.1:${n.port}`);
      console.log(`\npgroute is listening on 127.0.0.1:${port}. Connect with:\n`);
      console.log(`  ${pc.bold(`psql "postgres://${cluster.superuser}:${cluster.password}@127.0.0.1:${port}/postgres"`)}\n`);
      console.log(`Admin console (SHOW NODES, SHOW QUERIES, PAUSE, DRAIN …):\n`);
      console.log(`  ${pc.bold(`psql "postgres://${cluster.superuser}:${cluster.password}@127.0.0.1:${port}/pgroute"`)}\n`);
      if (adminUrl) console.log(`Dashboard: ${pc.bold(adminUrl)}   metrics: ${adminUrl}metrics\n`);
      console.log(`Config: ${cluster.configPath}. Press Ctrl-C to stop and remove the cluster.`);
      await untilSignal();
      await proxy.stop();
      admin?.stop();
      return 0;
    } finally {
      process.off("SIGINT", stopEarly);
      process.off("SIGTERM", stopEarly);
      if (cluster) {
        console.error(pc.dim("stopping the cluster…"));
        await cluster.stop();
      }
    }
  },
};

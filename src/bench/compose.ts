/**
 * `pgroute bench --compose FILE`: brings a docker-compose cluster (examples/docker-compose.yml: a primary, two
 * streaming replicas and pgroute) up, finds its published ports, and takes it down again afterwards — unless it
 * was already running, in which case it is left as found.
 *
 * PostgreSQL services are those publishing container port 5432; pgroute is the one publishing 6432.
 */
import { BenchError } from "./errors.ts";
import type { ConnSpec } from "./protocol.ts";
import type { Credentials } from "./environment.ts";

export interface ComposeCluster {
  /** The PostgreSQL services, reachable on their published ports (roles still to be asked). */
  nodes: ConnSpec[];
  /** The pgroute service's published address, if the file has one. */
  pgroute: { host: string; port: number } | null;
  stop(): Promise<void>;
}

/** Runs a command to completion; injectable so the checks can be tested without Docker. */
export type Runner = (argv: string[]) => { code: number; stdout: string; stderr: string };

export const spawnRunner: Runner = (argv) => {
  try {
    const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
    return { code: r.exitCode ?? 1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  } catch (err) {
    return { code: 127, stdout: "", stderr: (err as Error).message };
  }
};

function firstLine(s: string): string {
  return s.trim().split("\n").find((l) => l.trim() !== "")?.trim() ?? "";
}

/**
 * The compose command to use (`docker compose` or `docker-compose`), or every reason there is none: no `docker`
 * on PATH, no Compose, or an engine that does not answer.
 */
export function findCompose(run: Runner = spawnRunner, which: (cmd: string) => string | null = Bun.which): string[] {
  const problems: string[] = [];
  let compose: string[] | null = null;
  if (!which("docker")) {
    problems.push("there is no `docker` command on PATH");
  } else {
    const info = run(["docker", "info", "--format", "{{.ServerVersion}}"]);
    if (info.code !== 0 || info.stdout.trim() === "") {
      problems.push(`the Docker engine is not reachable (\`docker info\`: ${firstLine(info.stderr) || firstLine(info.stdout) || `exit ${info.code}`})`);
    }
    if (run(["docker", "compose", "version"]).code === 0) compose = ["docker", "compose"];
  }
  if (!compose && which("docker-compose") && run(["docker-compose", "version"]).code === 0) compose = ["docker-compose"];
  if (!compose) problems.push("Docker Compose is not installed (neither `docker compose` nor `docker-compose` works)");
  if (problems.length > 0) {
    throw new BenchError(
      `--compose needs a Docker engine with Compose: ${problems.join("; ")}. Without Docker, use --local to start a primary and replicas from the local PostgreSQL binaries.`,
    );
  }
  return compose!;
}

interface ComposePort {
  target: number;
  published?: string | number;
  host_ip?: string;
}

/** Services and their published ports, from `compose config --format json`. */
export function publishedPorts(configJson: string): { service: string; target: number; host: string; port: number }[] {
  const doc = JSON.parse(configJson) as { services?: Record<string, { ports?: ComposePort[] }> };
  const out: { service: string; target: number; host: string; port: number }[] = [];
  for (const [service, def] of Object.entries(doc.services ?? {})) {
    for (const p of def.ports ?? []) {
      const port = Number(p.published);
      if (!Number.isInteger(port) || port <= 0) continue;
      const host = !p.host_ip || p.host_ip === "0.0.0.0" || p.host_ip === "::" ? "127.0.0.1" : p.host_ip;
      out.push({ service, target: Number(p.target), host, port });
    }
  }
  return out;
}

/** Brings the project up (`up -d --wait --build`) and describes it. */
export async function composeUp(file: string, c: Credentials, log: (line: string) => void, run: Runner = spawnRunner): Promise<ComposeCluster> {
  const compose = findCompose(run);
  const cmd = (...args: string[]) => run([...compose, "-f", file, ...args]);
  const wasRunning = cmd("ps", "-q").stdout.trim() !== "";
  log(wasRunning ? `${file}: already running, will leave it running` : `docker compose -f ${file} up (building pgroute's image; this can take minutes)…`);
  const up = cmd("up", "-d", "--wait", "--build");
  const stop = async () => {
    if (wasRunning) return;
    log(`docker compose -f ${file} down…`);
    cmd("down");
  };
  if (up.code !== 0) {
    await stop();
    throw new BenchError(`docker compose up failed: ${up.stderr.trim().split("\n").slice(-5).join("\n")}`);
  }
  const config = cmd("config", "--format", "json");
  if (config.code !== 0) {
    await stop();
    throw new BenchError(`docker compose config failed: ${firstLine(config.stderr)}`);
  }
  const ports = publishedPorts(config.stdout);
  const nodes: ConnSpec[] = ports
    .filter((p) => p.target === 5432)
    .map((p) => ({
      name: p.service,
      host: p.host,
      port: p.port,
      user: c.serverUser,
      password: c.serverPassword,
      database: c.database,
      sslmode: "disable",
    }));
  if (nodes.length === 0) {
    await stop();
    throw new BenchError(`${file} publishes no PostgreSQL port (container port 5432)`);
  }
  const proxy = ports.find((p) => p.target === 6432);
  return { nodes, pgroute: proxy ? { host: proxy.host, port: proxy.port } : null, stop };
}

/** Port checks done before anything is written to disk, so a taken port fails fast and leaves nothing behind. */
import { createServer } from "node:net";
import { DevClusterError } from "./errors.ts";

/** The only address dev-cluster nodes listen on. */
export const LOOPBACK = "127.0.0.1";

function listenOnce(port: number, host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen({ port, host, exclusive: true }, () => {
      const addr = server.address();
      const bound = typeof addr === "object" && addr ? addr.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}

/** Whether nothing is bound to `host:port` right now (binding it ourselves is the only reliable test). */
export async function isPortFree(port: number, host = LOOPBACK): Promise<boolean> {
  return (await listenOnce(port, host)) === port;
}

/** A port the kernel just reported free on `host` (bind port 0, read it, close). */
export async function freePort(host = LOOPBACK): Promise<number> {
  const port = await listenOnce(0, host);
  if (port === undefined) throw new DevClusterError(`could not bind any port on ${host}`);
  return port;
}

/**
 * Ports for `count` nodes: `first`, `first + 1`, … when `first` is non-zero (each checked free), or `count`
 * distinct kernel-chosen free ports when it is 0.
 *
 * @throws DevClusterError `port N is already in use on 127.0.0.1 (choose another with --port)`.
 */
export async function allocatePorts(first: number, count: number, host = LOOPBACK): Promise<number[]> {
  if (first === 0) {
    const ports = new Set<number>();
    while (ports.size < count) ports.add(await freePort(host));
    return [...ports];
  }
  if (!Number.isInteger(first) || first < 1 || first + count - 1 > 65535) {
    throw new DevClusterError(`port ${first} is out of range: ${count} nodes need ports ${first}..${first + count - 1}`);
  }
  const ports = Array.from({ length: count }, (_, i) => first + i);
  for (const port of ports) {
    if (!(await isPortFree(port, host))) {
      throw new DevClusterError(`port ${port} is already in use on ${host} (choose another with --port)`);
    }
  }
  return ports;
}

/**
 * Entry point of the guard process started by `guardCluster` (watchdog.ts): wait for EOF on stdin, i.e. for
 * the owner to exit, then stop the cluster in argv[2]. Not an API; run only by `guardCluster`.
 */
import { stopCluster } from "./cluster.ts";

const dir = process.argv[2];
if (dir) {
  // The owner never writes; reading only waits for the end of the stream.
  for await (const _chunk of Bun.stdin.stream()) {
    // Nothing to do with data.
  }
  await stopCluster(dir).catch(() => {});
}

/** Ports for tests: always ask the kernel (port 0) rather than hard-coding numbers that may be taken. */
import { freePort as kernelFreePort, isPortFree } from "../../src/devcluster/index.ts";

/** A port free on 127.0.0.1 right now: bind port 0, read the port, close. */
export function freePort(): Promise<number> {
  return kernelFreePort("127.0.0.1");
}

/** The first of `count` consecutive ports all free on 127.0.0.1 (for `--port P` with replicas on P+1, …). */
export async function freePortBlock(count: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const first = await freePort();
    if (first + count - 1 > 65535) continue;
    let ok = true;
    for (let p = first + 1; p < first + count && ok; p++) ok = await isPortFree(p, "127.0.0.1");
    if (ok) return first;
  }
  throw new Error(`no block of ${count} free consecutive ports found on 127.0.0.1`);
}

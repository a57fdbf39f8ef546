// Invariant: memory follows the bytes peers send, never the lengths they declare. 1,000 clients each declaring a
// 1 GiB message — as a startup packet (refused from its header) and, with max_message_size at its 1 GiB maximum, as
// a Query after login that pgroute must wait for — leave the pgroute process's RSS (/proc/<pid>/status) within
// 64 MB of where it started, and a normal client is served throughout.
import { pace } from "../support/wait.ts";
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { AUTH_USERS, testCluster } from "../support/cluster.ts";
import { freePort } from "../support/net.ts";
import { watch } from "../support/proc.ts";
import { RawClient } from "../support/raw-client.ts";
import { concat, header, untyped } from "../support/wire-frames.ts";
import { expectFatal, expectServed } from "./helpers.ts";

setDefaultTimeout(120_000);

const ROOT = join(import.meta.dir, "../..");
const CLIENTS = 1000;
const GiB = 1 << 30;
const MB = 1_000_000;

let cluster: DevCluster;
let dir: string;
let proc: Subprocess | undefined;

beforeAll(async () => {
  cluster = await testCluster();
  dir = await mkdtemp(join(tmpdir(), "pgroute-memory-"));
});
afterAll(async () => {
  proc?.kill("SIGKILL");
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Resident set size of `pid` in bytes (VmRSS). */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** Runs `n` tasks, `width` at a time. */
async function inBatches<T>(n: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i += width) out.push(...(await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => task(i + j)))));
  return out;
}

test("1,000 clients declaring 1 GiB messages leave pgroute's RSS within 64 MB of where it started", async () => {
  const port = await freePort();
  const path = join(dir, "pgroute.toml");
  await writeFile(
    path,
    [
      "[listen]",
      `host = "127.0.0.1"`,
      `port = ${port}`,
      "[[nodes]]",
      `name = "primary"`,
      `host = "${cluster.primary.host}"`,
      `port = ${cluster.primary.port}`,
      `role = "primary"`,
      "[[users]]",
      `name = "${AUTH_USERS.trust.user}"`,
      `auth = "trust"`,
      "[pool]",
      // Transaction mode: a message is relayed only once complete, so the server never sees the declared 1 GiB.
      `mode = "transaction"`,
      "size = 4",
      "[limits]",
      // The largest limit allowed, so a declared 1 GiB Query is a valid header pgroute has to wait on.
      `max_message_size = "1GiB"`,
      `login_timeout = "60s"`,
    ].join("\n"),
  );
  proc = Bun.spawn([process.execPath, join(ROOT, "src/cli/main.ts"), "serve", "-c", path], {
    cwd: ROOT,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const stderr = watch(proc.stderr as ReadableStream<Uint8Array>);
  await stderr.until(/INFO  listening /);
  const pid = proc.pid;
  // Warm up every path once (parser, pools, a refused header), then take the baseline.
  for (let i = 0; i < 3; i++) await expectServed(port);
  const warm = await RawClient.connect(port);
  warm.send(untyped(GiB));
  await expectFatal(warm, "08P01");
  warm.close();
  const baseline = rss(pid);
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rss(pid));
  }, 10);

  try {
    // 1,000 startup packets declaring 1 GiB: each refused from its first four bytes.
    await inBatches(CLIENTS, 100, async () => {
      const raw = await RawClient.connect(port);
      try {
        raw.send(untyped(GiB));
        await expectFatal(raw, "08P01", `invalid length of startup packet: ${GiB}`);
      } finally {
        raw.close();
      }
    });

    // 1,000 logged-in clients each send a Query header declaring 1 GiB and a few bytes of it, and stay.
    const waiting = await inBatches(CLIENTS, 100, async () => {
      const raw = await RawClient.connect(port);
      await raw.loginTrust({ user: AUTH_USERS.trust.user, database: "postgres" });
      raw.send(concat(header("Q", GiB), new TextEncoder().encode("select ")));
      return raw;
    });
    await pace(200); // nothing to wait for: pgroute must just hold the connections
    expect(waiting.filter((c) => c.closed)).toHaveLength(0);
    await expectServed(port, { user: AUTH_USERS.trust.user, database: "postgres" });
    peak = Math.max(peak, rss(pid));
    for (const c of waiting) c.close();
  } finally {
    clearInterval(sampler);
  }
  const grew = peak - baseline;
  console.log(`pgroute RSS: baseline ${(baseline / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB, growth ${(grew / MB).toFixed(1)} MB`);
  expect(grew).toBeLessThan(64 * MB);
  await expectServed(port, { user: AUTH_USERS.trust.user, database: "postgres" });
  proc.kill("SIGTERM");
  expect(await proc.exited).toBe(0);
});

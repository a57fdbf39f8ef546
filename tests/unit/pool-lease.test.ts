// Invariant: a pool tells its waiters of a connection (or of a failure) later than the call that freed or failed
// it — whoever released the connection (a session in the middle of its server's reply) finishes first — and in
// FIFO order; a waiter that throws is logged and does not cost the ones after it their connection. The backend is
// the scripted fake (any server would do: what is checked is the pool's own bookkeeping).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { configFrom } from "../../src/config/load.ts";
import type { PgError } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import { Pool, type PoolWaiter } from "../../src/pool/pool.ts";
import type { ServerConn } from "../../src/pool/server.ts";
import { startFakeServer, type FakeServer } from "../support/fake-server.ts";

let server: FakeServer;
beforeAll(() => {
  server = startFakeServer();
});
afterAll(() => server.stop());

/** What the pools log. */
const lines: string[] = [];
const log = createLogger({ level: "info", format: "text" }, (l) => lines.push(l));

function pool(size: number): Pool {
  const config = configFrom({ nodes: [{ name: "fake", host: "127.0.0.1", port: server.port, role: "primary" }], users: [{ name: "u", password: "pw" }], pool: { size } });
  return new Pool({ node: config.nodes[0]!, user: "u", database: "db", credentials: { password: "pw" }, config: config.pool, maxMessageSize: 1 << 20, log });
}

/** A waiter that records what it was told, and a promise of it. */
function waiter(onGranted?: (conn: ServerConn) => void) {
  const told: string[] = [];
  let conn: ServerConn | null = null;
  let settle!: () => void;
  const done = new Promise<void>((resolve) => (settle = resolve));
  const w: PoolWaiter = {
    granted: (c) => {
      conn = c;
      told.push(`conn ${c.id}`);
      settle();
      onGranted?.(c);
    },
    failed: (e: PgError) => {
      told.push(e.code);
      settle();
    },
  };
  return { w, told, done, conn: () => conn! };
}

describe("Pool.lease", () => {
  test("a released connection reaches the first waiter after release returns, then the next one, in order", async () => {
    const p = pool(1);
    try {
      const a = waiter();
      p.lease(a.w);
      await a.done;
      const b = waiter();
      const c = waiter();
      p.lease(b.w);
      p.lease(c.w);
      expect(p.waiting).toBe(2);
      const waitsBefore = p.counters.waits.count;
      p.release(a.conn());
      expect(b.told).toEqual([]); // not during release
      await b.done;
      expect(b.told).toEqual([`conn ${a.conn().id}`]);
      expect(c.told).toEqual([]);
      expect(p.counters.waits.count).toBe(waitsBefore + 1);
      p.release(b.conn());
      await c.done;
      expect(c.told).toEqual([`conn ${a.conn().id}`]);
      expect(p.waiting).toBe(0);
    } finally {
      p.close();
    }
  });

  test("a closed pool fails a lease after the call, not during it", async () => {
    const p = pool(1);
    p.close();
    const a = waiter();
    p.lease(a.w);
    expect(a.told).toEqual([]);
    await a.done;
    expect(a.told).toEqual(["08006"]);
  });

  test("a waiter that throws when told is logged, and does not keep the connection from the next one", async () => {
    const p = pool(2);
    try {
      const a = waiter();
      const b = waiter();
      p.lease(a.w);
      p.lease(b.w);
      await Promise.all([a.done, b.done]);
      const c = waiter(() => {
        throw new Error("a waiter's bug");
      });
      const d = waiter();
      p.lease(c.w);
      p.lease(d.w);
      // Both connections come back in one go: c is told first and throws, d must still get the other one.
      p.release(a.conn());
      p.release(b.conn());
      await d.done;
      expect(lines.some((l) => l.includes("pool_waiter_failed") && l.includes("a waiter's bug"))).toBe(true);
      expect(c.told).toEqual([`conn ${a.conn().id}`]);
      expect(d.told).toEqual([`conn ${b.conn().id}`]);
    } finally {
      p.close();
    }
  });
});

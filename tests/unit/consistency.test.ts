// Invariant: read-your-writes decides per session, from what it sent. `sticky`: a read goes to the primary while a
// write is in flight and for `sticky` after it committed (not before, not after); `lsn`: after a commit, one
// position query is asked on that connection, and the session's reads are bound to the answer (to the primary
// while a write's position is unknown); `pgroute.min_lsn` binds reads in every mode; SHOW pgroute.lsn answers the
// learned position, or says it must ask the primary; bad values are refused with the parameter named.
import { describe, expect, test } from "bun:test";
import type { Entry } from "../../src/pool/demux.ts";
import type { Route } from "../../src/router/route.ts";
import { Consistency } from "../../src/session/consistency.ts";
import { parseLsn } from "../../src/monitor/lag.ts";
import { MessageWriter } from "../../src/wire/encode.ts";

const READ: Route = { target: "replica", reason: { code: "read_only" } };

function session(mode: "none" | "sticky" | "lsn", extra: { waitMs?: number; onNeedsReplay?: () => void } = {}) {
  const clock = { now: 1_000 };
  const c = new Consistency({ mode, stickyMs: 500, waitMs: extra.waitMs ?? 0, now: () => clock.now, onNeedsReplay: extra.onNeedsReplay });
  return { c, clock };
}

/** A DataRow body with one text column. */
function row(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  return new MessageWriter(16).int16(1).int32(bytes.length).bytes(bytes).done();
}

/** The position query answers `lsn` (or fails when null). */
function answer(e: Entry, lsn: string | null): void {
  if (lsn === null) return e.fail!();
  const body = row(lsn);
  e.onRow!(body, 0, body.length);
  e.ok!();
}

describe("sticky", () => {
  test("reads stay on the primary while a write is in flight and for `sticky` after its commit", () => {
    const { c, clock } = session("sticky");
    expect(c.reroute(READ)).toBe(READ);
    c.wrote();
    expect(c.reroute(READ)).toEqual({ target: "primary", reason: { code: "read_your_writes", wanted: { code: "read_only" } } });
    // Committed while another request is still in flight: not settled yet.
    expect(c.committed(true, 1, () => {})).toBeNull();
    expect(c.sticky()).toBe(true);
    expect(c.committed(true, 0, () => {})).toBeNull();
    clock.now += 499;
    expect(c.sticky()).toBe(true);
    clock.now += 1;
    expect(c.sticky()).toBe(false);
    expect(c.reroute(READ)).toBe(READ);
    // Writes to the primary are not rerouted, nor are reads in other modes.
    expect(c.reroute({ target: "primary", reason: { code: "transaction_begin" } }).reason.code).toBe("transaction_begin");
    const none = session("none").c;
    none.wrote();
    expect(none.reroute(READ)).toBe(READ);
  });
});

describe("lsn", () => {
  test("after a commit the position is asked once; reads are bound to it; unknown while asking: the primary", () => {
    const { c } = session("lsn", { waitMs: 200 });
    expect(c.readBound()).toEqual({ minLsn: 0, waitMs: 200, avoid: null });
    c.wrote();
    // Inside a transaction: nothing yet.
    expect(c.committed(false, 0, () => {})).toBeNull();
    expect(c.readBound()).toBeNull();
    let settled = 0;
    const ask = c.committed(true, 0, () => settled++)!;
    expect(ask).toMatchObject({ end: "query", mode: "swallow" });
    expect(new TextDecoder().decode(c.lsnQuery)).toContain("pg_current_wal_insert_lsn()");
    // Asked once, however many ReadyForQuery come meanwhile.
    expect(c.committed(true, 0, () => {})).toBeNull();
    answer(ask, "16/B374D848");
    expect(settled).toBe(1);
    expect(c.readBound()).toEqual({ minLsn: parseLsn("16/B374D848")!, waitMs: 200, avoid: null });
    expect(c.show("pgroute.lsn")).toBe("16/B374D848");
    // Nothing new written: nothing asked.
    expect(c.committed(true, 0, () => {})).toBeNull();
  });

  test("a position that could not be learned keeps reads on the primary until one is", () => {
    const { c } = session("lsn");
    c.wrote();
    answer(c.committed(true, 0, () => {})!, null);
    expect(c.readBound()).toBeNull();
    expect(c.show("pgroute.lsn")).toBeNull();
    answer(c.committed(true, 0, () => {})!, "0/3000060");
    expect(c.readBound()?.minLsn).toBe(parseLsn("0/3000060")!);
  });

  test("a write sent while the position was asked is not covered by the answer", () => {
    const { c } = session("lsn");
    c.wrote();
    const ask = c.committed(true, 0, () => {})!;
    c.wrote();
    answer(ask, "0/100");
    expect(c.readBound()).toBeNull();
    answer(c.committed(true, 0, () => {})!, "0/200");
    expect(c.readBound()?.minLsn).toBe(0x200);
  });
});

describe("SET / SHOW", () => {
  test("pgroute.min_lsn binds reads in any mode, and asks the monitor for fast replay positions", () => {
    let asked = 0;
    const { c } = session("none", { onNeedsReplay: () => asked++ });
    expect(c.set({ op: "set", name: "pgroute.min_lsn", value: "0/5000" })).toBeNull();
    expect(asked).toBe(1);
    expect(c.readBound()?.minLsn).toBe(0x5000);
    expect(c.show("pgroute.min_lsn")).toBe("0/5000");
    expect(c.set({ op: "reset", name: "pgroute.min_lsn" })).toBeNull();
    expect(c.readBound()?.minLsn).toBe(0);
    expect(c.set({ op: "set", name: "pgroute.min_lsn", value: "yesterday" })).toBe(`invalid value for parameter "pgroute.min_lsn": "yesterday" (expected a WAL position like 16/B374D848)`);
  });

  test("the session's learned position wins over a lower min_lsn, a higher min_lsn over it", () => {
    const { c } = session("lsn");
    c.wrote();
    answer(c.committed(true, 0, () => {})!, "0/9000");
    c.set({ op: "set", name: "pgroute.min_lsn", value: "0/100" });
    expect(c.readBound()?.minLsn).toBe(0x9000);
    c.set({ op: "set", name: "pgroute.min_lsn", value: "1/0" });
    expect(c.readBound()?.minLsn).toBe(2 ** 32);
  });

  test("pgroute.lsn: 0/0 before any write, the primary's answer after a write in a mode that does not learn it; read-only", () => {
    const { c } = session("none");
    expect(c.show("pgroute.lsn")).toBe("0/0");
    c.wrote();
    expect(c.show("pgroute.lsn")).toBeNull();
    expect(c.show("pgroute.lsn", true)).toBe("0/0");
    expect(c.set({ op: "set", name: "pgroute.lsn", value: "0/1" })).toMatch(/cannot be changed/);
  });

  test("pgroute.consistency changes the session's mode; RESET brings the user's back", () => {
    const { c } = session("none");
    expect(c.set({ op: "set", name: "pgroute.consistency", value: "STICKY" })).toBeNull();
    expect(c.show("pgroute.consistency")).toBe("sticky");
    expect(c.set({ op: "set", name: "pgroute.consistency", value: "eventual" })).toBe(`invalid value for parameter "pgroute.consistency": "eventual" (expected none, sticky or lsn)`);
    expect(c.set({ op: "reset", name: "pgroute.consistency" })).toBeNull();
    expect(c.show("pgroute.consistency")).toBe("none");
    expect(["pgroute.lsn", "pgroute.min_lsn", "pgroute.consistency", "pgroute.target"].map(Consistency.handles)).toEqual([true, true, true, false]);
  });
});

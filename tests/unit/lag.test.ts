// Invariant: lag in bytes is the primary's WAL position at the time the replica was sampled minus the replica's
// replay position; lag in time is how long the primary has been beyond what the replica replayed — 0 on an idle
// primary, however long since its last transaction — refined by the walsender and heartbeat figures; the time
// since the last replayed commit is believed only when the replica stays behind everything the history holds.
import { describe, expect, test } from "bun:test";
import { formatLsn, LsnHistory, parseLsn, replicaLag, type LagHints } from "../../src/monitor/lag.ts";

const NONE: LagHints = { walsender: null, heartbeat: null, sinceReplay: null, settleSeconds: 1 };

describe("LSNs", () => {
  test("parse and format X/Y", () => {
    expect(parseLsn("0/0")).toBe(0);
    expect(parseLsn("16/B374D848")).toBe(0x16 * 2 ** 32 + 0xb374d848);
    expect(formatLsn(parseLsn("16/B374D848")!)).toBe("16/B374D848");
    expect(parseLsn(null)).toBeNull();
    expect(parseLsn("garbage")).toBeNull();
  });
});

describe("LsnHistory", () => {
  test("keeps each position with the time it was first seen; going backwards starts afresh", () => {
    const h = new LsnHistory(4);
    h.add(0, 100);
    h.add(1_000, 100);
    h.add(2_000, 200);
    expect(h.size).toBe(2);
    expect(h.secondsBehind(100, 5_000)).toEqual({ seconds: 3, older: false });
    h.add(3_000, 50);
    expect([h.size, h.latest]).toEqual([1, 50]);
  });

  test("a full ring drops the oldest", () => {
    const h = new LsnHistory(3);
    for (let i = 1; i <= 5; i++) h.add(i * 1_000, i * 100);
    expect(h.size).toBe(3);
    expect(h.secondsBehind(0, 6_000)).toEqual({ seconds: 3, older: true });
  });

  test("bytes: the primary's position at the replica's sample time", () => {
    const h = new LsnHistory();
    h.add(1_000, 1_000);
    h.add(2_000, 5_000);
    expect(h.bytesBehind(900, 1_500)).toBe(100);
    expect(h.bytesBehind(900, 2_500)).toBe(4_100);
    expect(h.bytesBehind(900, 500)).toBe(100); // sampled before the history: its first position
    expect(h.bytesBehind(9_000, 2_500)).toBe(0);
    expect(new LsnHistory().bytesBehind(0, 0)).toBeNull();
  });
});

describe("replicaLag", () => {
  test("an idle primary: 0 s, however old the last replayed commit", () => {
    const h = new LsnHistory();
    h.add(0, 500);
    expect(replicaLag(h, 500, 3_600_000, { ...NONE, sinceReplay: 3_600 })).toEqual({ bytes: 0, seconds: 0 });
  });

  test("a replica whose replay stopped while the primary writes: lag grows with time", () => {
    const h = new LsnHistory();
    h.add(0, 100);
    h.add(1_000, 200); // the primary moves past 100 at t = 1 s
    h.add(2_000, 300);
    h.add(3_000, 400);
    expect(replicaLag(h, 100, 3_500, NONE)).toEqual({ bytes: 300, seconds: 2.5 });
    expect(replicaLag(h, 100, 6_000, NONE)).toEqual({ bytes: 300, seconds: 5 });
  });

  test("the walsender's replay_lag and the heartbeat's age raise it, but not for a caught-up replica", () => {
    const h = new LsnHistory();
    h.add(0, 100);
    h.add(1_000, 200);
    expect(replicaLag(h, 150, 1_100, { ...NONE, walsender: 0.4 }).seconds).toBe(0.4);
    expect(replicaLag(h, 150, 1_100, { ...NONE, heartbeat: 0.25 }).seconds).toBe(0.25);
    expect(replicaLag(h, 200, 1_100, { ...NONE, walsender: 0.4, heartbeat: 0.25 }).seconds).toBe(0);
  });

  test("behind everything the history holds for longer than the settle time: the last replayed commit's age", () => {
    const h = new LsnHistory();
    h.add(10_000, 1_000);
    // Just sampled behind a fresh record: not believed.
    expect(replicaLag(h, 900, 10_200, { ...NONE, sinceReplay: 3_600 }).seconds).toBeCloseTo(0.2, 9);
    // Still behind the oldest position two seconds on: the history cannot say how far; the commit age can.
    expect(replicaLag(h, 900, 12_000, { ...NONE, sinceReplay: 40 }).seconds).toBe(40);
  });

  test("unknown without a primary position or a replay position", () => {
    expect(replicaLag(new LsnHistory(), 100, 0, NONE)).toEqual({ bytes: null, seconds: null });
    expect(replicaLag(new LsnHistory(), null, 0, { ...NONE, heartbeat: 0.3 })).toEqual({ bytes: null, seconds: 0.3 });
  });
});

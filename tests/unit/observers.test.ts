/**
 * Observers: the relay's request reports reach the observers (health monitor, metrics) in batches, in order, and
 * never later than a reader asks, a failure happens, the batch fills or the delay passes.
 */
import { describe, expect, test } from "bun:test";
import { Traffic } from "../../src/admin/traffic.ts";
import { Observers, type RequestObserver, type RequestSample } from "../../src/cluster/observe.ts";
import type { NodeConfig } from "../../src/config/types.ts";

const node = (name: string) => ({ name, host: "127.0.0.1", port: 5432, role: "primary" }) as unknown as NodeConfig;
const primary = node("primary");
const replica = node("replica1");

function sample(fingerprint: string, o: Partial<RequestSample> = {}): RequestSample {
  return { target: "primary", kind: "read", fingerprint, reason: "read_only", startedAt: 0, ms: 1.5, failed: false, txEnd: true, errorCode: null, ...o };
}

/** An observer that records what it was told, as `node:fingerprint`. */
function recorder(): RequestObserver & { seen: string[] } {
  const seen: string[] = [];
  return { seen, request: (n, s) => void seen.push(`${n.name}:${s.fingerprint}`) };
}

describe("Observers", () => {
  test("reports wait for a full batch, then every observer gets all of them in order", () => {
    const obs = new Observers(3, 60_000);
    const a = recorder();
    const b = recorder();
    obs.add(a);
    obs.add(b);
    obs.request(primary, sample("q1"));
    obs.request(replica, sample("q2"));
    expect(a.seen).toEqual([]);
    expect(obs.queued).toBe(2);
    obs.request(primary, sample("q3"));
    expect(a.seen).toEqual(["primary:q1", "replica1:q2", "primary:q3"]);
    expect(b.seen).toEqual(a.seen);
    expect(obs.queued).toBe(0);
  });

  test("a failed request goes out at once, with what was queued before it", () => {
    const obs = new Observers(100, 60_000);
    const a = recorder();
    obs.add(a);
    obs.request(primary, sample("ok"));
    obs.request(primary, sample("broken", { failed: true, errorCode: "08006" }));
    expect(a.seen).toEqual(["primary:ok", "primary:broken"]);
  });

  test("flush hands on what is queued; an observer added later sees only later reports", () => {
    const obs = new Observers(100, 60_000);
    const a = recorder();
    obs.add(a);
    obs.request(primary, sample("before"));
    const late = recorder();
    const remove = obs.add(late);
    expect(a.seen).toEqual(["primary:before"]);
    obs.request(primary, sample("after"));
    obs.flush();
    expect(late.seen).toEqual(["primary:after"]);
    remove();
    obs.request(primary, sample("gone"));
    obs.flush();
    expect(late.seen).toEqual(["primary:after"]);
    expect(a.seen).toEqual(["primary:before", "primary:after", "primary:gone"]);
  });

  test("a report never waits longer than the delay", async () => {
    const obs = new Observers(100, 5);
    const told = new Promise<string>((resolve) => obs.add({ request: (_, s) => resolve(s.fingerprint) }));
    obs.request(primary, sample("lonely"));
    expect(await told).toBe("lonely");
    expect(obs.queued).toBe(0);
  });

  test("the metrics count every request answered so far: reading them brings in the queued reports", () => {
    const obs = new Observers(1000, 60_000);
    const traffic = new Traffic(10, obs.flush);
    obs.add(traffic);
    for (let i = 0; i < 5; i++) obs.request(primary, sample("select ?"));
    obs.request(replica, sample("select ?", { target: "replica" }));
    expect(obs.queued).toBe(6);
    expect(traffic.of("primary").requests.read.count).toBe(5);
    expect(obs.queued).toBe(0);
    obs.request(replica, sample("select ?", { target: "replica" }));
    expect(traffic.fingerprints.get("select ?")?.count).toBe(7);
    expect(traffic.of("replica1").transactions).toBe(2);
  });

  test("an observer that throws loses that batch only: the others get it, and later batches reach everyone once", () => {
    const errors: unknown[] = [];
    const obs = new Observers(2, 60_000, (err) => errors.push(err));
    const before = recorder();
    let fail = true;
    const flaky = recorder();
    const after = recorder();
    obs.add(before);
    obs.add({
      request: (n, s) => {
        if (fail && s.fingerprint === "q2") throw new Error("observer bug");
        flaky.request(n, s);
      },
    });
    obs.add(after);
    obs.request(primary, sample("q1"));
    expect(() => obs.request(primary, sample("q2"))).not.toThrow();
    expect(errors.map((e) => (e as Error).message)).toEqual(["observer bug"]);
    expect(before.seen).toEqual(["primary:q1", "primary:q2"]);
    expect(after.seen).toEqual(["primary:q1", "primary:q2"]);
    expect(flaky.seen).toEqual(["primary:q1"]);
    expect(obs.queued).toBe(0);
    fail = false;
    obs.request(replica, sample("q3"));
    obs.request(replica, sample("q4"));
    expect(before.seen).toEqual(["primary:q1", "primary:q2", "replica1:q3", "replica1:q4"]);
    expect(flaky.seen).toEqual(["primary:q1", "replica1:q3", "replica1:q4"]);
    expect(after.seen).toEqual(before.seen);
  });

  test("an observer that throws from the delay's timer does not reach the event loop", async () => {
    const errors: unknown[] = [];
    const obs = new Observers(100, 1, (err) => errors.push(err));
    const told = new Promise<void>((resolve) => obs.add({ request: () => resolve() }));
    obs.add({
      request: () => {
        throw new Error("late bug");
      },
    });
    obs.request(primary, sample("q"));
    await told;
    expect(errors.map((e) => (e as Error).message)).toEqual(["late bug"]);
    expect(obs.queued).toBe(0);
  });
});

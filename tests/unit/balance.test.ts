// Invariant: every balancing strategy, given the replicas that may take a read, returns one of them, changes no
// state until the pick is taken, is deterministic for a given source of randomness, and spreads reads over equal
// replicas; each then does what its name says (weights × score, fewest connections, lowest latency, in turn, at
// random by weight). One table for all five, then each on its own.
import { describe, expect, test } from "bun:test";
import { CandidateSet, createStrategy, type Candidate, type Strategy } from "../../src/cluster/balance.ts";
import type { BalanceStrategy, NodeConfig } from "../../src/config/types.ts";
import { seeded } from "../support/random.ts";

const ALL: readonly BalanceStrategy[] = ["weighted", "least_connections", "latency", "round_robin", "random"];

interface Spec {
  weight?: number;
  score?: number;
  inFlight?: number;
  ewma?: number;
}

function node(name: string, weight: number): NodeConfig {
  return { name, host: "127.0.0.1", port: 5432, role: "replica", weight, zone: "", sslmode: "disable" };
}

/** Candidates r0, r1, … with the given figures (defaults: weight 1, score 100, nothing in flight, 1 ms). */
function candidates(specs: Spec[]): CandidateSet {
  const list: Candidate[] = specs.map((s, i) => {
    const weight = s.weight ?? 1;
    return {
      node: node(`r${i}`, weight),
      weight,
      effective: (weight * (s.score ?? 100)) / 100,
      live: { inFlight: s.inFlight ?? 0, ewmaMs: s.ewma ?? 1 },
      trial: false,
    };
  });
  return new CandidateSet(list);
}

/** How many of `n` reads (each picked and taken) each candidate got. */
function run(strategy: Strategy, set: CandidateSet, n: number): number[] {
  const counts = set.list.map(() => 0);
  for (let k = 0; k < n; k++) {
    const i = strategy.pick(set);
    counts[i]!++;
    strategy.took(set, i);
  }
  return counts;
}

/** The candidates the next `n` reads go to, in order. */
function order(strategy: Strategy, set: CandidateSet, n: number): number[] {
  return Array.from({ length: n }, () => {
    const i = strategy.pick(set);
    strategy.took(set, i);
    return i;
  });
}

describe("every strategy", () => {
  for (const name of ALL) {
    describe(name, () => {
      test("a single replica gets every read", () => {
        expect(run(createStrategy(name, seeded(1)), candidates([{}]), 100)).toEqual([100]);
      });

      test("picks are among the candidates and change no state until taken", () => {
        const s = createStrategy(name, seeded(2));
        const set = candidates([{ weight: 2, inFlight: 3, ewma: 5 }, { weight: 1 }, { weight: 3, inFlight: 1, ewma: 2 }]);
        for (let k = 0; k < 200; k++) {
          const current = [...set.current];
          const turn = set.turn;
          const i = s.pick(set);
          expect(i).toBeGreaterThanOrEqual(0);
          expect(i).toBeLessThan(3);
          expect([...set.current]).toEqual(current);
          expect(set.turn).toBe(turn);
          if (k % 2 === 0) s.took(set, i);
        }
      });

      test("the same randomness gives the same picks", () => {
        const specs = [{ ewma: 3 }, { ewma: 1 }, { ewma: 2 }, { ewma: 1 }];
        expect(run(createStrategy(name, seeded(7)), candidates(specs), 300)).toEqual(run(createStrategy(name, seeded(7)), candidates(specs), 300));
      });

      test("equal replicas share the reads", () => {
        const counts = run(createStrategy(name, seeded(3)), candidates([{}, {}, {}]), 3000);
        for (const c of counts) {
          expect(c).toBeGreaterThan(3000 * 0.25);
          expect(c).toBeLessThan(3000 * 0.42);
        }
      });
    });
  }
});

describe("weighted", () => {
  const weighted = () => createStrategy("weighted");

  test("weights 1:3 get exactly 1:3, interleaved (smooth weighted round-robin)", () => {
    const s = weighted();
    const set = candidates([{ weight: 1 }, { weight: 3 }]);
    expect(run(s, set, 1000)).toEqual([250, 750]);
    const next = order(s, set, 8).join("");
    // Never the light replica twice in a row, never the heavy one more than three times.
    expect(next).not.toContain("00");
    expect(next).not.toContain("1111");
  });

  test("the health score scales the weight", () => {
    expect(run(weighted(), candidates([{ score: 100 }, { score: 50 }]), 900)).toEqual([600, 300]);
    expect(run(weighted(), candidates([{ weight: 1, score: 90 }, { weight: 3, score: 30 }]), 900)).toEqual([450, 450]);
  });

  test("a replica scoring 0 gets nothing while another scores; all at 0, the configured weights decide", () => {
    expect(run(weighted(), candidates([{ score: 0 }, { score: 20 }]), 100)).toEqual([0, 100]);
    expect(run(weighted(), candidates([{ weight: 1, score: 0 }, { weight: 3, score: 0 }]), 100)).toEqual([25, 75]);
  });

  test("the counters carry over to a rebuilt set of the same replicas", () => {
    const s = weighted();
    const first = candidates([{ weight: 1 }, { weight: 3 }]);
    const counts = run(s, first, 3);
    const second = new CandidateSet(first.list, first);
    const more = run(s, second, 1);
    expect([counts[0]! + more[0]!, counts[1]! + more[1]!]).toEqual([1, 3]);
  });
});

describe("least_connections", () => {
  test("the replica with the fewest connections in use and clients waiting", () => {
    const s = createStrategy("least_connections");
    expect(s.pick(candidates([{ inFlight: 5 }, { inFlight: 0 }, { inFlight: 3 }]))).toBe(1);
    expect(s.pick(candidates([{ inFlight: 2 }, { inFlight: 4 }, { inFlight: 1 }]))).toBe(2);
  });

  test("ties go round in turn", () => {
    expect(order(createStrategy("least_connections"), candidates([{ inFlight: 1 }, { inFlight: 4 }, { inFlight: 1 }]), 4)).toEqual([0, 2, 0, 2]);
  });
});

describe("latency", () => {
  test("of two replicas, the one with the lower moving average of latency wins", () => {
    expect(run(createStrategy("latency", seeded(4)), candidates([{ ewma: 51 }, { ewma: 1 }]), 200)).toEqual([0, 200]);
  });

  test("requests in flight raise a replica's cost (latency × (in flight + 1))", () => {
    expect(run(createStrategy("latency", seeded(5)), candidates([{ ewma: 1, inFlight: 9 }, { ewma: 5, inFlight: 0 }]), 100)).toEqual([0, 100]);
  });

  test("a replica with nothing observed yet is tried", () => {
    expect(run(createStrategy("latency", seeded(6)), candidates([{ ewma: 3 }, { ewma: Number.NaN }]), 50)).toEqual([0, 50]);
  });

  test("two choices at random: the faster of each draw wins, so the fastest gets most and the slowest none", () => {
    const counts = run(createStrategy("latency", seeded(8)), candidates([{ ewma: 1 }, { ewma: 2 }, { ewma: 3 }, { ewma: 50 }]), 4000);
    expect(counts[0]!).toBeGreaterThan(counts[1]!);
    expect(counts[1]!).toBeGreaterThan(counts[2]!);
    expect(counts[3]!).toBe(0); // never the cheaper of two draws
  });
});

describe("round_robin", () => {
  test("each in turn, weights ignored", () => {
    expect(order(createStrategy("round_robin"), candidates([{ weight: 1 }, { weight: 3 }]), 4)).toEqual([0, 1, 0, 1]);
  });
});

describe("random", () => {
  test("in proportion to the configured weights", () => {
    const counts = run(createStrategy("random", seeded(9)), candidates([{ weight: 1 }, { weight: 3 }]), 4000);
    expect(counts[0]! / 4000).toBeGreaterThan(0.22);
    expect(counts[0]! / 4000).toBeLessThan(0.28);
  });
});

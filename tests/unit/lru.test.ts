// Invariant: Lru evicts the least recently used key — a get, a touch or a set makes a key the most recent, even
// when it already was (no reordering is then needed, and none may be skipped wrongly) — and deleting or clearing
// forgets the most recent key as well.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { Lru } from "../../src/router/cache.ts";

describe("Lru", () => {
  test("keys come out least recently used first, whatever was used twice in a row", () => {
    const l = new Lru<string, number>(3);
    l.set("a", 1);
    l.set("b", 2);
    l.touch("b");
    l.touch("b");
    l.set("c", 3);
    l.get("a");
    l.get("a");
    expect([...l.keys()]).toEqual(["b", "c", "a"]);
    l.set("d", 4); // b is the least recently used
    expect([...l.keys()]).toEqual(["c", "a", "d"]);
  });

  test("a deleted most recent key that comes back is the most recent again; clear forgets it", () => {
    const l = new Lru<string, number>(2);
    l.set("a", 1);
    l.set("b", 2);
    l.delete("b");
    l.set("c", 3);
    l.set("b", 2);
    expect([...l.keys()]).toEqual(["c", "b"]);
    l.clear();
    l.set("x", 1);
    l.set("b", 2);
    l.touch("x");
    expect([...l.keys()]).toEqual(["b", "x"]);
  });

  test("the same order as a plain list model, for any sequence of operations", () => {
    const op = fc.tuple(fc.constantFrom("get", "set", "touch", "delete", "clear"), fc.integer({ min: 0, max: 5 }));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(op, { maxLength: 60 }), (capacity, ops) => {
        const l = new Lru<number, number>(capacity);
        let model: number[] = [];
        for (const [kind, k] of ops) {
          const has = model.includes(k);
          if (kind === "clear") model = [];
          else if (kind === "delete") model = model.filter((x) => x !== k);
          else if (kind === "set" || has) {
            model = [...model.filter((x) => x !== k), k];
            if (model.length > capacity) model.shift();
          }
          if (kind === "get") expect(l.get(k)).toBe(has ? k : undefined);
          else if (kind === "set") l.set(k, k);
          else if (kind === "touch") l.touch(k);
          else if (kind === "delete") l.delete(k);
          else l.clear();
          expect([...l.keys()]).toEqual(model);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

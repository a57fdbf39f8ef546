/**
 * bench/lib/jitprof.ts: the jitdump reader behind `bench/profile.ts` (JavaScriptCore's generated code named for
 * perf), and the attribution of `perf script` samples to JavaScript functions.
 */
import { describe, expect, test } from "bun:test";
import { attribute, jsFunctionOf, parseJitdump, perfMapText } from "../../bench/lib/jitprof.ts";
import { concat } from "../support/wire-frames.ts";

/** A jitdump file (perf's jitdump specification, little-endian) with these JIT_CODE_LOAD records, in order. */
function jitdump(loads: { addr: number; size: number; name: string }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const header = new DataView(new ArrayBuffer(40));
  header.setUint32(0, 0x4a695444, true); // magic
  header.setUint32(4, 1, true); // version
  header.setUint32(8, 40, true); // header size
  parts.push(new Uint8Array(header.buffer));
  loads.forEach((l, i) => {
    const name = enc.encode(`${l.name}\0`);
    const code = new Uint8Array(l.size);
    const size = 16 + 40 + name.length + code.length;
    const rec = new DataView(new ArrayBuffer(56));
    rec.setUint32(0, 0, true); // JIT_CODE_LOAD
    rec.setUint32(4, size, true);
    rec.setBigUint64(8, BigInt(i), true); // timestamp
    rec.setUint32(16, 1234, true); // pid
    rec.setUint32(20, 1234, true); // tid
    rec.setBigUint64(24, BigInt(l.addr), true); // vma
    rec.setBigUint64(32, BigInt(l.addr), true); // code_addr
    rec.setBigUint64(40, BigInt(l.size), true); // code_size
    rec.setBigUint64(48, BigInt(i), true); // code_index
    parts.push(new Uint8Array(rec.buffer), name, code);
  });
  return concat(...parts);
}

describe("parseJitdump", () => {
  test("reads every code load, and a later load replaces the earlier code it overlaps (reused memory)", () => {
    const ranges = parseJitdump(
      jitdump([
        { addr: 0x1000, size: 0x100, name: "JSC-DFG: add#A" },
        { addr: 0x2000, size: 0x80, name: "JSC-FTL: shape#B" },
        { addr: 0x1080, size: 0x100, name: "JSC-FTL: onFrame#C" }, // over the second half of add's code
      ]),
    );
    expect(ranges.map((r) => [Number(r.start), Number(r.size), r.name])).toEqual([
      [0x2000, 0x80, "JSC-FTL: shape#B"],
      [0x1080, 0x100, "JSC-FTL: onFrame#C"],
    ]);
    expect(perfMapText(ranges)).toBe("2000 80 JSC-FTL: shape#B\n1080 100 JSC-FTL: onFrame#C\n");
  });

  test("a record cut short (the file still being written) ends the reading; other files are refused", () => {
    const whole = jitdump([
      { addr: 0x1000, size: 16, name: "JSC-FTL: a#1" },
      { addr: 0x2000, size: 16, name: "JSC-FTL: b#2" },
    ]);
    expect(parseJitdump(whole.subarray(0, whole.length - 5)).map((r) => r.name)).toEqual(["JSC-FTL: a#1"]);
    expect(() => parseJitdump(new Uint8Array(64))).toThrow("not a jitdump file");
  });
});

describe("attribute", () => {
  const sample = (frames: string[]) => `bun  1 1.0:     200040 cpu-clock: \n${frames.map((f) => `\t    7f00 ${f}`).join("\n")}\n`;
  const script = [
    sample(["JSC-FTL: shape#A7+0x10 (/tmp/perf-1.map)", "JSC-FTL: query#D+0x77 (/tmp/perf-1.map)", "18562c4 [unknown] (/usr/lib/node_modules/bun/bin/bun.exe)"]),
    sample(["JSC-FTL: shape#A7+0x20 (/tmp/perf-1.map)", "JSC-FTL: query#D+0x77 (/tmp/perf-1.map)"]),
    sample(["[unknown] (/usr/lib/node_modules/bun/bin/bun.exe)", "JSC-Thunk: CallTrampoline+0x3 (/tmp/perf-1.map)", "JSC-DFG: dispatch#X+0x1 (/tmp/perf-1.map)"]),
    sample(["__vdso_clock_gettime+0x2 ([vdso])", "JSC-FTL: ready#R+0x9 (/tmp/perf-1.map)"]),
    sample(["tcp_sendmsg+0x2b ([kernel.kallsyms])", "__send+0x64 (/usr/lib/x86_64-linux-gnu/libc.so.6)"]),
    sample(["[unknown] (/usr/lib/node_modules/bun/bin/bun.exe)", "[unknown] (/usr/lib/node_modules/bun/bin/bun.exe)"]),
  ].join("\n");

  test("samples go to the kernel, a JavaScript function's own code, the runtime (by caller) or a library (by symbol)", () => {
    const a = attribute(script);
    expect([a.samples, a.kernel, a.js, a.runtime, a.libraries]).toEqual([6, 1, 2, 2, 1]);
    expect([...a.jsSelf]).toEqual([["shape", 2]]);
    expect(Object.fromEntries(a.nativeByCaller)).toEqual({ dispatch: 1, "ready → __vdso_clock_gettime ([vdso])": 1, "(event loop)": 1 });
    expect(a.inclusive.get("query")).toBe(2);
    expect(a.inclusive.get("shape")).toBe(2);
  });

  test("function names come from JavaScriptCore's tiers; thunks and inline caches are not functions", () => {
    expect(jsFunctionOf("JSC-FTL: onFrame#Bpvx5p+0x457 (/tmp/perf-2004.map)")).toBe("onFrame");
    expect(jsFunctionOf("JSC-Baseline: get atBoundary#Q+0x1 (/tmp/perf-1.map)")).toBe("get atBoundary");
    expect(jsFunctionOf("JSC-DFG: async closed#Z")).toBe("async closed");
    expect(jsFunctionOf("JSC-Thunk: CallTrampoline")).toBeNull();
    expect(jsFunctionOf("JSC-InlineCache: GetById Load handler")).toBeNull();
  });
});

/**
 * Reading a `perf record -g` profile of a Bun process with its JavaScript functions named. JavaScriptCore writes
 * every piece of machine code it generates to a jitdump file (`BUN_JSC_useJITDump=true`; format: the Linux perf
 * "jitdump specification", tools/perf/Documentation/jitdump-specification.txt). JSC names the file
 * `jit-<pid>-<tid>.dump`, which `perf inject --jit` does not recognise, so {@link jitdumpToPerfMap} turns it into
 * the `/tmp/perf-<pid>.map` text map that `perf report` and `perf script` read for anonymous executable memory.
 *
 * JSC reuses the memory of code it threw away (a function compiled by a lower tier, then by a higher one), so a
 * later record replaces every earlier one it overlaps: the map names what ran at an address last, and a profile
 * taken after warm-up names the optimized code.
 */

/** One piece of generated code. */
export interface CodeRange {
  start: bigint;
  size: bigint;
  name: string;
}

const JIT_CODE_LOAD = 0;
const MAGIC = 0x4a695444; // "JiTD" read as a little-endian u32

/** The code ranges of a jitdump file's JIT_CODE_LOAD records, later records replacing overlapped earlier ones. */
export function parseJitdump(bytes: Uint8Array): CodeRange[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 40 || dv.getUint32(0, true) !== MAGIC) throw new Error("not a jitdump file (or not little-endian)");
  const decoder = new TextDecoder();
  let ranges: CodeRange[] = [];
  // Record: u32 id, u32 total_size, u64 timestamp; JIT_CODE_LOAD then has u32 pid, u32 tid, u64 vma,
  // u64 code_addr, u64 code_size, u64 code_index, a NUL-terminated name, and the code bytes.
  for (let off = dv.getUint32(8, true); off + 16 <= bytes.length; ) {
    const id = dv.getUint32(off, true);
    const size = dv.getUint32(off + 4, true);
    if (size < 16 || off + size > bytes.length) break; // the tail of a file still being written
    if (id === JIT_CODE_LOAD) {
      const body = off + 16;
      const start = dv.getBigUint64(body + 16, true);
      const codeSize = dv.getBigUint64(body + 24, true);
      let nameEnd = body + 40;
      while (nameEnd < off + size && bytes[nameEnd] !== 0) nameEnd++;
      const end = start + codeSize;
      ranges = ranges.filter((r) => r.start >= end || r.start + r.size <= start);
      ranges.push({ start, size: codeSize, name: decoder.decode(bytes.subarray(body + 40, nameEnd)) });
    }
    off += size;
  }
  return ranges;
}

/** The `/tmp/perf-<pid>.map` text for `ranges`: `START SIZE name` per line, hexadecimal. */
export function perfMapText(ranges: readonly CodeRange[]): string {
  return ranges.map((r) => `${r.start.toString(16)} ${r.size.toString(16)} ${r.name}`).join("\n") + "\n";
}

/** Where a profile's samples went, in samples. */
export interface Attribution {
  samples: number;
  /** By where the sample landed: the kernel, generated JavaScript code, Bun's own code, or a shared library. */
  kernel: number;
  js: number;
  runtime: number;
  libraries: number;
  /** Samples in a JavaScript function's own code, by function name. */
  jsSelf: Map<string, number>;
  /**
   * Samples in Bun's code or a library, by the nearest JavaScript function up the stack (what called into the
   * runtime: a socket write, a clock read, a typed-array view…); "(event loop)" when no JavaScript was on the stack.
   * Samples in a shared library are keyed `caller → symbol` (libc's send and recv, the vDSO clock, libm).
   */
  nativeByCaller: Map<string, number>;
  /** Samples with the function anywhere on the stack (kernel samples whose stack reached JavaScript included). */
  inclusive: Map<string, number>;
}

/** `JSC-FTL: onFrame#Bpvx5p+0x457` → `onFrame`; null for frames that are not generated JavaScript functions. */
export function jsFunctionOf(frame: string): string | null {
  // The name may hold spaces (`get atBoundary`, `async closed`); then come `#hash`, `+0xOFFSET` and ` (DSO)`.
  const m = /^JSC-(?:FTL|DFG|Baseline|LLInt)[A-Za-z]*: (.+?)(?:#\w*)?(?:\+0x[0-9a-f]+)?(?: \(.*\))?$/.exec(frame);
  return m ? m[1]! : null;
}

const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/**
 * Attributes the samples of `perf script` output (one block per sample: a header line, then one frame per line,
 * leaf first, as `ADDRESS SYMBOL+OFFSET (DSO)`).
 */
export function attribute(perfScript: string): Attribution {
  const a: Attribution = { samples: 0, kernel: 0, js: 0, runtime: 0, libraries: 0, jsSelf: new Map(), nativeByCaller: new Map(), inclusive: new Map() };
  for (const block of perfScript.split(/\n\s*\n/)) {
    const frames = block
      .split("\n")
      .slice(1)
      .map((l) => l.trim())
      .filter((l) => l !== "")
      .map((l) => l.replace(/^[0-9a-f]+\s+/, ""));
    if (frames.length === 0) continue;
    a.samples++;
    const leaf = frames[0]!;
    const fns = frames.map(jsFunctionOf).filter((f): f is string => f !== null);
    const leafFn = jsFunctionOf(leaf);
    if (leaf.endsWith("([kernel.kallsyms])")) a.kernel++;
    else if (leafFn !== null) {
      a.js++;
      add(a.jsSelf, leafFn);
    } else if (leaf.startsWith("JSC-")) {
      // Generated code that is not a function's (call thunks, inline caches): the runtime's.
      a.runtime++;
      add(a.nativeByCaller, fns[0] ?? "(event loop)");
    } else {
      const caller = fns[0] ?? "(event loop)";
      if (/\/bun(\.exe)?\)$/.test(leaf) || leaf.startsWith("[unknown]")) {
        a.runtime++;
        add(a.nativeByCaller, caller);
      } else {
        // A shared library (libc's send and recv, the clock in the vDSO, libm): named, as they tell what was called.
        a.libraries++;
        add(a.nativeByCaller, `${caller} → ${leaf.replace(/\+0x[0-9a-f]+/, "").replace(/@.*$/, "")}`);
      }
    }
    for (const f of new Set(fns)) add(a.inclusive, f);
  }
  return a;
}

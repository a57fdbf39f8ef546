// Invariant: the frame reader finds the same messages, with the same bodies, however the stream is split, and
// rejects an invalid length from the header alone.
import { describe, expect, test } from "bun:test";
import { FrameError, FrameReader, type FrameSink } from "../../src/wire/frame.ts";
import { concat, frame, header } from "../support/wire-frames.ts";

const te = new TextEncoder();

function collect(reader: FrameReader, chunks: Uint8Array[]) {
  const seen: { type: string; body: string }[] = [];
  const sink: FrameSink = {
    onFrame(type, buf, start, end) {
      seen.push({ type: String.fromCharCode(type), body: new TextDecoder().decode(buf.subarray(start, end)) });
    },
  };
  for (const c of chunks) reader.feed(c, sink);
  return seen;
}

const frames = [
  frame("Z", te.encode("I")),
  frame("D", te.encode("row data that is skipped")),
  frame("E", te.encode("SERROR\0C42P01\0\0")),
  frame("C", new Uint8Array(0)),
  frame("Z", te.encode("T")),
];
const stream = concat(...frames);
const wanted = ["Z", "E"].map((c) => c.charCodeAt(0));
const expected = [
  { type: "Z", body: "I" },
  { type: "E", body: "SERROR\0C42P01\0\0" },
  { type: "Z", body: "T" },
];

describe("FrameReader", () => {
  test("whole stream in one chunk", () => {
    expect(collect(new FrameReader(wanted, 1 << 20), [stream])).toEqual(expected);
  });

  test("split at every offset into two chunks", () => {
    for (let i = 0; i <= stream.length; i++) {
      const r = new FrameReader(wanted, 1 << 20);
      expect(collect(r, [stream.subarray(0, i), stream.subarray(i)])).toEqual(expected);
      expect(r.atBoundary).toBe(true);
    }
  });

  test("one byte at a time", () => {
    const chunks = Array.from(stream, (b) => Uint8Array.of(b));
    expect(collect(new FrameReader(wanted, 1 << 20), chunks)).toEqual(expected);
  });

  test("atBoundary is false inside a message", () => {
    const r = new FrameReader(wanted, 1 << 20);
    collect(r, [stream.subarray(0, 8)]);
    expect(r.atBoundary).toBe(false);
  });

  test("length below 4 is rejected", () => {
    const r = new FrameReader(wanted, 1 << 20);
    expect(() => collect(r, [header("Q", 3)])).toThrow(FrameError);
  });

  test("length over the maximum is rejected from the header, before the body arrives", () => {
    const r = new FrameReader(wanted, 1000);
    expect(() => collect(r, [header("Q", 1 << 30)])).toThrow("over the limit of 1000");
  });

  test("stop() makes feed return right after the message", () => {
    const r = new FrameReader(wanted, 1 << 20);
    const sink: FrameSink = { onFrame: () => r.stop() };
    const at = r.feed(stream, sink);
    expect(at).toBe(frames[0]!.length);
    // The next wanted message is the 'E' after the skipped 'D'.
    expect(r.feed(stream, sink, at)).toBe(frames[0]!.length + frames[1]!.length + frames[2]!.length);
  });
});

// Invariant: startup packets decode to exactly what the client sent, and every malformed one is refused with a
// message, never a crash or an unbounded wait.
import { describe, expect, test } from "bun:test";
import { MAX_STARTUP_LENGTH, StartupError, parseStartup, startupLength } from "../../src/wire/startup.ts";
import { cancelRequest, gssencRequest, sslRequest, startup, untyped } from "../support/wire-frames.ts";

describe("startup packets", () => {
  test("StartupMessage with parameters in order", () => {
    const p = parseStartup(startup({ user: "alice", database: "app", application_name: "x y" }));
    expect(p).toEqual({
      kind: "startup",
      major: 3,
      minor: 0,
      params: new Map([["user", "alice"], ["database", "app"], ["application_name", "x y"]]),
      unrecognized: [],
    });
  });

  test("SSLRequest, GSSENCRequest, CancelRequest", () => {
    expect(parseStartup(sslRequest())).toEqual({ kind: "ssl" });
    expect(parseStartup(gssencRequest())).toEqual({ kind: "gssenc" });
    expect(parseStartup(cancelRequest(1234, -5))).toEqual({ kind: "cancel", pid: 1234, secret: -5 });
  });

  test("protocol 3.2 with a _pq_ option: decoded, option reported as unrecognized", () => {
    const p = parseStartup(startup({ user: "a", _pq_foo: "1" }, (3 << 16) | 2));
    expect(p).toMatchObject({ kind: "startup", minor: 2, unrecognized: [] });
    const q = parseStartup(startup({ user: "a", "_pq_.foo": "1" }, (3 << 16) | 2));
    expect(q).toMatchObject({ kind: "startup", minor: 2, unrecognized: ["_pq_.foo"] });
  });

  test("unknown major version names the supported ones", () => {
    expect(() => parseStartup(startup({ user: "a" }, 2 << 16))).toThrow("unsupported frontend protocol 2.0: server supports 3.0 to 3.0");
  });

  test("lengths are validated from the first four bytes", () => {
    expect(startupLength(Uint8Array.of(0, 0))).toBeNull();
    expect(() => startupLength(untyped(4))).toThrow(StartupError);
    expect(() => startupLength(untyped(MAX_STARTUP_LENGTH + 1))).toThrow("invalid length of startup packet: 10001");
    expect(startupLength(untyped(MAX_STARTUP_LENGTH))).toBe(MAX_STARTUP_LENGTH);
  });

  test("missing terminators are refused", () => {
    const good = startup({ user: "a" });
    const bad = good.slice(0, good.length - 1);
    new DataView(bad.buffer).setUint32(0, bad.length);
    expect(() => parseStartup(bad)).toThrow("expected terminator");
  });
});

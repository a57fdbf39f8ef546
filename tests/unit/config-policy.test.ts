// Invariant: the policy keys ([ratelimit], users' own rate keys, [mirror]) validate like every other key — each
// bad value reported as `path: expected X, got Y`, a shadow URL's password never echoed — and valid ones arrive
// converted (durations in ms, rates as numbers, 0 allowed where it means "off").
import { describe, expect, test } from "bun:test";
import { configFrom } from "../../src/config/load.ts";
import { formatConfigError, validate } from "../../src/config/schema.ts";

const minimal = { nodes: [{ name: "p" }], users: [{ name: "u", password: "pw" }] };

function errorsOf(raw: unknown): string[] {
  const result = validate(raw);
  return "errors" in result ? result.errors.map(formatConfigError) : [];
}

describe("[ratelimit]", () => {
  test("values are converted; max_wait may be 0", () => {
    const c = configFrom({ ...minimal, ratelimit: { max_wait: "0ms", user_queries_per_second: 2.5, connections_burst: 10 } });
    expect(c.ratelimit.max_wait_ms).toBe(0);
    expect(c.ratelimit.user_queries_per_second).toBe(2.5);
    expect(c.ratelimit.connections_burst).toBe(10);
  });

  test("bad values", () => {
    expect(
      errorsOf({
        ...minimal,
        ratelimit: { max_wait: "soon", user_queries_per_second: -1, address_queries_burst: 0.5, fingerprint_queries_per_second: "10/s", connection_per_second: 1 },
      }),
    ).toEqual([
      `ratelimit.max_wait: expected a duration like "5s" or "250ms", or 0 for none, got "soon"`,
      "ratelimit.user_queries_per_second: expected a number >= 0, got -1",
      `ratelimit.fingerprint_queries_per_second: expected a number >= 0, got "10/s"`,
      `ratelimit.connection_per_second: unknown key (did you mean "connections_per_second"?)`,
      "ratelimit.address_queries_burst: expected 0 (the rate, rounded up) or a number >= 1, got 0.5",
    ]);
  });

  test("users' own limits", () => {
    const c = configFrom({ nodes: [{ name: "p" }], users: [{ name: "u", password: "pw", queries_per_second: 5, transactions_burst: 3 }] });
    expect(c.users[0]).toMatchObject({ queries_per_second: 5, transactions_burst: 3 });
    expect("transactions_per_second" in c.users[0]!).toBe(false);
    expect(errorsOf({ nodes: [{ name: "p" }], users: [{ name: "u", password: "pw", queries_burst: 0.2, transactions_per_second: true }] })).toEqual([
      "users[0].transactions_per_second: expected a number >= 0, got true",
      "users[0].queries_burst: expected 0 (the rate, rounded up) or a number >= 1, got 0.2",
    ]);
  });
});

describe("[mirror]", () => {
  test("defaults, and a URL-less mirror is off", () => {
    expect(configFrom(minimal).mirror).toEqual({ fraction: 0.1, writes: false, queue_size: 1000, concurrency: 4, timeout_ms: 5000 });
  });

  test("bad values; the URL is never shown", () => {
    expect(
      errorsOf({ ...minimal, mirror: { url: "mysql://root:hunter2@db/x", fraction: 1.5, writes: "yes", queue_size: 0, concurrency: 2.5, timeout: "0s" } }),
    ).toEqual([
      `mirror.url: expected a URL like "postgres://user:password@host:5432/dbname", got a 25-character string`,
      "mirror.fraction: expected a number from 0 to 1, got 1.5",
      `mirror.writes: expected true or false, got "yes"`,
      "mirror.queue_size: expected an integer 1-1000000, got 0",
      "mirror.concurrency: expected an integer 1-1000, got 2.5",
      `mirror.timeout: expected a duration from 1ms to 596h, got "0s"`,
    ]);
    expect(errorsOf({ ...minimal, mirror: { url: "postgres://shadow:hunter2@db:99999/x" } })).toEqual(["mirror.url: is not a valid URL"]);
    expect(errorsOf({ ...minimal, mirror: { url: "postgres://:hunter2@db/x" } })).toEqual(["mirror.url: needs a user name (postgres://user@host:5432/dbname)"]);
  });

  test("a valid shadow, in either pooling mode", () => {
    for (const mode of ["transaction", "session"]) {
      const c = configFrom({ ...minimal, pool: { mode }, mirror: { url: "postgres://shadow:pw@10.0.0.9/app?sslmode=require", fraction: 0.25, writes: true } });
      expect(c.mirror).toMatchObject({ url: "postgres://shadow:pw@10.0.0.9/app?sslmode=require", fraction: 0.25, writes: true });
    }
  });
});

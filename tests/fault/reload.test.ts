// Invariant: Proxy.reload swaps the config without dropping a session: a node whose address changed gets new server
// connections there as the old ones go idle, a removed node's pool is retired (in-use connections finish their
// client's work, then close), new logins see the new users, a listen change is reported as needing a restart, and
// a reload hook that refuses the new config leaves the old one in place.
import { afterEach, describe, expect, test } from "bun:test";
import { ConfigLoadError, configFrom } from "../../src/config/load.ts";
import { planReload } from "../../src/reload.ts";
import { startFakeServer, type FakeServer } from "../support/fake-server.ts";
import { RawClient, dataRow } from "../support/raw-client.ts";
import { query } from "../support/wire-frames.ts";
import { TRUST_LOGIN, capturingLogger, proxyOnFake, until, type FakeProxy } from "./helpers.ts";

const fakes: FakeServer[] = [];
let fp: FakeProxy | null = null;
afterEach(async () => {
  await fp?.stop();
  fp = null;
  for (const f of fakes.splice(0)) f.stop();
});

function fake(): FakeServer {
  const f = startFakeServer();
  fakes.push(f);
  return f;
}

const node = (name: string, f: FakeServer) => ({ name, host: f.host, port: f.port, role: "primary" });
const base = (nodes: Record<string, unknown>[], extra: Record<string, unknown> = {}) =>
  configFrom({ listen: { host: "127.0.0.1", port: 0 }, nodes, users: [{ name: TRUST_LOGIN.user, auth: "trust" }], ...extra });

async function client(port: number): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  await raw.loginTrust(TRUST_LOGIN);
  return raw;
}

async function ask(raw: RawClient, sql: string): Promise<string> {
  raw.send(query(sql));
  return String((await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow)[0]![0]);
}

describe("Proxy.reload", () => {
  test("a node moved to another address: the session in use stays, new server connections go to the new one", async () => {
    const [a, b] = [fake(), fake()];
    const { log, lines } = capturingLogger();
    fp = await proxyOnFake(a, { pool: { mode: "session" } }, log);
    const before = await client(fp.port);
    expect(await ask(before, "one")).toBe("one");
    fp.proxy.reload(base([node("fake", b)], { pool: { mode: "session" } }));
    expect(lines.some((l) => /pool_reconfigured pool=fake\/trustuser@app changed=nodes.fake/.test(l))).toBe(true);
    // The session keeps its server connection on the old address…
    expect(await ask(before, "two")).toBe("two");
    expect(a.queries).toEqual(["one", "two"]);
    before.close();
    // …which is closed when it comes back, not pooled.
    await until("the old connection to close", () => a.open === 0);
    const after = await client(fp.port);
    expect(await ask(after, "three")).toBe("three");
    expect(b.queries).toContain("three");
    after.close();
  });

  test("a removed node: its pool is retired, in-use connections finish first", async () => {
    const [a, b] = [fake(), fake()];
    fp = await proxyOnFake(a, { pool: { mode: "session" } });
    const before = await client(fp.port);
    fp.proxy.reload(base([node("other", b)], { pool: { mode: "session" } }));
    expect(fp.proxy.allPools.map((p) => p.name)).toEqual([]);
    expect(await ask(before, "still")).toBe("still");
    before.close();
    await until("the retired pool's connection to close", () => a.open === 0);
    const after = await client(fp.port);
    expect(await ask(after, "elsewhere")).toBe("elsewhere");
    expect(b.queries).toContain("elsewhere");
    after.close();
  });

  test("new users log in at once; the listen address is kept and reported", async () => {
    const a = fake();
    const { log, lines } = capturingLogger();
    fp = await proxyOnFake(a, {}, log);
    const next = configFrom({
      listen: { host: "127.0.0.1", port: 1 },
      nodes: [node("fake", a)],
      users: [{ name: TRUST_LOGIN.user, auth: "trust" }, { name: "late", auth: "trust", server_user: TRUST_LOGIN.user }],
      log: { ...fp.config.log },
      failover: { primary_wait_timeout: 0 },
    });
    const plan = fp.proxy.reload(next);
    expect(plan.changed).toEqual(["listen", "users"]);
    expect(lines.some((l) => l.includes("config_reload_warning") && l.includes("listen: pgroute keeps listening on 127.0.0.1:0"))).toBe(true);
    const late = await RawClient.connect(fp.port);
    await late.loginTrust({ user: "late", database: "app" });
    late.close();
  });

  test("a hook that refuses the new config keeps the old one; one that accepts applies after every check", async () => {
    const a = fake();
    fp = await proxyOnFake(a);
    const old = fp.proxy.config;
    const applied: string[] = [];
    fp.proxy.reloadHooks.push(() => () => applied.push("first"));
    fp.proxy.reloadHooks.push((next) => {
      if (next.limits.max_client_connections === 7) throw new ConfigLoadError(["tls.cert: cannot read /nope: no such file"]);
      return () => applied.push("second");
    });
    const refused = base([node("fake", a)], { limits: { max_client_connections: 7 } });
    expect(() => fp!.proxy.reload(refused)).toThrow("tls.cert: cannot read /nope");
    expect(fp.proxy.config).toBe(old);
    expect(applied).toEqual([]);
    const accepted = base([node("fake", a)], { limits: { max_client_connections: 8 } });
    fp.proxy.reload(accepted);
    expect(fp.proxy.config).toBe(accepted);
    expect(applied).toEqual(["first", "second"]);
  });
});

describe("planReload", () => {
  const a = { name: "a", host: "10.0.0.1", port: 5432 };
  const users = [{ name: "app", password: "one" }];
  const cfg = (extra: Record<string, unknown> = {}) => configFrom({ nodes: [a], users, ...extra });

  test("the same config changes nothing", () => {
    const plan = planReload(cfg(), cfg());
    expect(plan.changed).toEqual([]);
    expect(plan.pool("a", "app", "db")).toEqual({ kind: "keep" });
  });

  test("weight and zone do not touch connections; the address does", () => {
    expect(planReload(cfg(), cfg({ nodes: [{ ...a, weight: 3, zone: "z" }] })).pool("a", "app", "db")).toEqual({ kind: "keep" });
    const moved = planReload(cfg(), cfg({ nodes: [{ ...a, port: 6543 }] })).pool("a", "app", "db");
    expect(moved).toMatchObject({ kind: "reconfigure", why: ["nodes.a"] });
  });

  test("a changed server password rebuilds that user's pools only", () => {
    const next = cfg({ users: [{ name: "app", password: "two" }, { name: "other", password: "x" }] });
    const plan = planReload(cfg(), next);
    expect(plan.pool("a", "app", "db")).toMatchObject({ kind: "reconfigure", why: ["users.app"], update: { credentials: { password: "two" } } });
    expect(plan.pool("a", "nobody", "db")).toEqual({ kind: "keep" });
    expect(plan.changed).toEqual(["users"]);
  });

  test("a removed node retires its pools", () => {
    const plan = planReload(cfg(), cfg({ nodes: [{ name: "b" }] }));
    expect(plan.pool("a", "app", "db")).toEqual({ kind: "retire" });
    expect(plan.nodesChanged).toBe(true);
  });
});

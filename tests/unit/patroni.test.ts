// Invariant: pgroute reads Patroni's REST API as Patroni 3.0 answers it — `/cluster` from any member names the
// running leader (by name, host and port), `/leader` answers 200 only on the leader — over real HTTP, trying the
// next address when one does not answer, and saying when none does or when Patroni has no leader; the leader maps
// to the configured node of that name, else of that host (and port). A DNS name maps to the nodes on the
// addresses it resolves to (nodes configured by name compared by their own addresses; `dns_port` narrows).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { configFrom } from "../../src/config/load.ts";
import { nodesOfName } from "../../src/monitor/dns.ts";
import { nodesOfLeader, patroniLeader } from "../../src/monitor/patroni.ts";
import { freePort } from "../../src/devcluster/index.ts";

/** What a Patroni 3.0.2 member answers (shapes taken from patroni/api.py and patroni/utils.py cluster_as_json). */
function clusterJson(leader: string | null) {
  return {
    members: [
      { name: "pg1", role: leader === "pg1" ? "leader" : "replica", state: "running", api_url: "http://127.0.0.1:8008/patroni", host: "127.0.0.1", port: 5432, timeline: 3, ...(leader === "pg1" ? {} : { lag: 0 }) },
      { name: "pg2", role: leader === "pg2" ? "leader" : "replica", state: "running", api_url: "http://127.0.0.1:8009/patroni", host: "127.0.0.2", port: 5433, timeline: 3, ...(leader === "pg2" ? {} : { lag: 16 }) },
    ],
    scope: "demo",
  };
}

function statusJson(role: "master" | "replica") {
  return {
    state: "running",
    postmaster_start_time: "2026-01-05 10:00:00.000000+00:00",
    role,
    server_version: 150010,
    xlog: role === "master" ? { location: 67109048 } : { received_location: 67109048, replayed_location: 67109048, replayed_timestamp: null, paused: false },
    timeline: 3,
    database_system_identifier: "7330000000000000000",
    patroni: { version: "3.0.2", scope: "demo" },
  };
}

let servers: Server<undefined>[] = [];
let leader = "pg2";

/** A member's REST API: /cluster for the whole cluster, /leader 200 on the leader, 503 elsewhere. */
function member(name: string): string {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (path === "/cluster") return Response.json(clusterJson(leader));
      if (path === "/leader") return Response.json(statusJson(name === leader ? "master" : "replica"), { status: name === leader ? 200 : 503 });
      return new Response("not found", { status: 404 });
    },
  });
  servers.push(server);
  return `http://127.0.0.1:${server.port}`;
}

let urls: string[] = [];
let dead = "";

beforeAll(async () => {
  urls = [member("pg1"), member("pg2")];
  dead = `http://127.0.0.1:${await freePort()}`;
});

afterAll(() => {
  for (const s of servers) s.stop(true);
  servers = [];
});

describe("the REST client", () => {
  test("/cluster: the running leader, from the first member that answers", async () => {
    leader = "pg2";
    const r = await patroniLeader([dead, ...urls], "cluster", 1_000);
    expect(r).toEqual({ ok: true, leader: { name: "pg2", host: "127.0.0.2", port: 5433, from: `${urls[0]}/cluster` } });
  });

  test("/leader: the member answering 200 (its host; Patroni does not say its port)", async () => {
    leader = "pg1";
    const r = await patroniLeader([dead, ...urls], "leader", 1_000);
    expect(r).toEqual({ ok: true, leader: { name: null, host: "127.0.0.1", port: null, from: `${urls[0]}/leader` } });
  });

  test("no leader (a failover under way): answered, with none; nobody answering: an error naming each address", async () => {
    leader = "nobody";
    expect(await patroniLeader(urls, "cluster", 1_000)).toEqual({ ok: true, leader: null });
    expect(await patroniLeader(urls, "leader", 1_000)).toEqual({ ok: true, leader: null });
    const down = await patroniLeader([dead], "cluster", 1_000);
    expect(down.ok).toBe(false);
    if (!down.ok) expect(down.error).toStartWith(`${dead}/cluster: `);
  });

  test("the leader maps to the node of its name, else of its host and port", () => {
    const nodes = configFrom({
      nodes: [
        { name: "pg1", host: "127.0.0.1", port: 5432 },
        { name: "b", host: "127.0.0.2", port: 5433 },
        { name: "c", host: "127.0.0.2", port: 5434 },
      ],
    }).nodes;
    expect(nodesOfLeader(nodes, { name: "pg1", host: "10.9.9.9", port: 1, from: "" })).toEqual(["pg1"]);
    expect(nodesOfLeader(nodes, { name: "pg2", host: "127.0.0.2", port: 5433, from: "" })).toEqual(["b"]);
    expect(nodesOfLeader(nodes, { name: null, host: "127.0.0.2", port: null, from: "" })).toEqual(["b", "c"]);
    expect(nodesOfLeader(nodes, { name: "x", host: "10.0.0.9", port: 5432, from: "" })).toEqual([]);
  });
});

describe("DNS", () => {
  test("the nodes on the name's addresses; nodes configured by name by their own; dns_port narrows", async () => {
    const table: Record<string, string[]> = { "primary.db.internal": ["10.0.0.2"], "db-c.internal": ["10.0.0.2"], "db-a.internal": ["10.0.0.1"] };
    const resolve = async (name: string) => {
      const found = table[name];
      if (!found) throw new Error(`getaddrinfo ENOTFOUND ${name}`);
      return found;
    };
    const nodes = configFrom({
      nodes: [
        { name: "a", host: "db-a.internal", port: 5432 },
        { name: "b", host: "10.0.0.2", port: 5432 },
        { name: "c", host: "db-c.internal", port: 5433 },
      ],
    }).nodes;
    expect(await nodesOfName("primary.db.internal", 0, nodes, resolve)).toEqual({ nodes: ["b", "c"], addresses: ["10.0.0.2"] });
    expect(await nodesOfName("primary.db.internal", 5433, nodes, resolve)).toEqual({ nodes: ["c"], addresses: ["10.0.0.2"] });
    await expect(nodesOfName("gone.db.internal", 0, nodes, resolve)).rejects.toThrow("ENOTFOUND");
  });
});

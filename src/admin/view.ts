/**
 * What the admin side shows, computed once from the proxy for every surface — /status and /queries (JSON), the
 * console's SHOW commands, the dashboard and the gauges of /metrics — so they always agree. Node data comes only
 * from the cluster snapshot (`proxy.cluster.current`), whoever publishes it; traffic from {@link Traffic}; pools and
 * clients from the proxy. Nothing here carries a password, verifier or hash.
 */
import type { BreakerState, NodeRole } from "../cluster/state.ts";
import type { RoleOverride } from "../cluster/overrides.ts";
import type { Proxy } from "../server.ts";
import type { ClientState } from "../session/session.ts";
import pkg from "../../package.json" with { type: "json" };
import { classifierStats } from "../router/classify.ts";
import { PIN_REASONS, REASON_CODES, ROUTE_TARGETS } from "../session/counters.ts";
import { percentileMs } from "./fingerprints.ts";

export const VERSION: string = pkg.version;

export interface LatencyView {
  readonly p50Ms: number | null;
  readonly p95Ms: number | null;
  readonly p99Ms: number | null;
}

export interface NodeView extends LatencyView {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly zone: string;
  readonly weight: number;
  /** The role in the config (`auto`: follow the node). */
  readonly configuredRole: "primary" | "replica" | "auto";
  /** The role routing uses now. */
  readonly role: NodeRole;
  readonly override: { readonly role: RoleOverride | null; readonly drained: boolean };
  readonly reachable: boolean;
  readonly readable: boolean;
  readonly excludedBecause: string | null;
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
  readonly score: number;
  readonly breaker: { readonly state: BreakerState; readonly reason: string | null; readonly until: number | null };
  readonly error: string | null;
  /** Requests by kind (transaction pooling) and requests relayed unclassified (session pooling). */
  readonly queries: { readonly read: number; readonly write: number; readonly other: number; readonly unclassified: number };
  readonly transactions: number;
  /** Requests that failed; server logins that failed. */
  readonly errors: number;
  readonly connectErrors: number;
  readonly serverConnections: { readonly opened: number; readonly closed: number };
  readonly checkouts: number;
  readonly checkoutWaits: number;
}

export interface PoolView {
  readonly name: string;
  readonly node: string;
  readonly user: string;
  readonly database: string;
  /** Server connections leased, idle, being opened; clients waiting; the size limit. */
  readonly active: number;
  readonly idle: number;
  readonly opening: number;
  readonly waiting: number;
  readonly max: number;
}

export interface ClientView {
  readonly pid: number;
  readonly user: string;
  readonly database: string;
  readonly address: string;
  readonly state: ClientState;
  readonly applicationName: string;
  readonly tls: boolean;
  /** The node of the server connection it holds, if any. */
  readonly node: string | null;
  readonly pinnedBy: string | null;
  readonly connectedAt: string;
}

export interface ClientCounts {
  readonly total: number;
  readonly active: number;
  readonly idle: number;
  readonly waiting: number;
  readonly login: number;
  readonly console: number;
}

export interface QueryView extends LatencyView {
  readonly fingerprint: string;
  readonly id: string;
  readonly count: number;
  readonly errors: number;
  readonly meanMs: number | null;
  readonly maxMs: number | null;
  readonly kinds: { readonly read: number; readonly write: number; readonly other: number };
  readonly nodes: Readonly<Record<string, number>>;
  readonly since: string;
}

export interface StatusView {
  readonly version: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly mode: "session" | "transaction";
  readonly paused: boolean;
  readonly pausedSince: string | null;
  readonly config: { readonly version: number; readonly loadedAt: string };
  readonly cluster: { readonly version: number; readonly at: string; readonly primary: string | null };
  readonly nodes: NodeView[];
  readonly pools: PoolView[];
  readonly clients: ClientCounts;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function nodesView(proxy: Proxy): NodeView[] {
  return proxy.cluster.current.nodes.map((n) => {
    const t = proxy.traffic.of(n.name);
    const c = proxy.nodeCounters(n.name);
    const o = proxy.overrides.of(n.name);
    return {
      name: n.name,
      host: n.node.host,
      port: n.node.port,
      zone: n.zone,
      weight: n.node.weight,
      configuredRole: n.node.role,
      role: n.role,
      override: { role: o.role, drained: o.drained },
      reachable: n.reachable,
      readable: n.readable,
      excludedBecause: n.excludedBecause,
      lagBytes: n.lagBytes,
      lagSeconds: n.lagSeconds,
      score: n.score,
      breaker: { state: n.breaker.state, reason: n.breaker.reason, until: n.breaker.until },
      error: n.error,
      queries: { read: t.requests.read.count, write: t.requests.write.count, other: t.requests.other.count, unclassified: c.sessionRequests },
      transactions: t.transactions + c.sessionTransactions,
      errors: t.failed,
      connectErrors: c.loginFailures,
      serverConnections: { opened: c.opened, closed: c.closed },
      checkouts: c.checkouts,
      checkoutWaits: c.waits.count,
      p50Ms: percentileMs(t.hdr, 50),
      p95Ms: percentileMs(t.hdr, 95),
      p99Ms: percentileMs(t.hdr, 99),
    };
  });
}

export function poolsView(proxy: Proxy): PoolView[] {
  return proxy.allPools.map((p) => ({
    name: p.name,
    node: p.node.name,
    user: p.user,
    database: p.database,
    active: p.size - p.idleCount,
    idle: p.idleCount,
    opening: p.opening,
    waiting: p.waiting,
    max: p.max,
  }));
}

export function clientsView(proxy: Proxy): ClientView[] {
  const out: ClientView[] = [];
  for (const s of proxy.clients) {
    out.push({
      pid: s.pid,
      user: s.user,
      database: s.database,
      address: s.remote,
      state: s.state,
      applicationName: s.params.get("application_name") ?? "",
      tls: s.encrypted,
      node: s.cancelTarget?.node.name ?? null,
      pinnedBy: s.pinnedBy,
      connectedAt: iso(s.connectedAt),
    });
  }
  return out;
}

export function clientCounts(proxy: Proxy): ClientCounts {
  const n = { total: 0, active: 0, idle: 0, waiting: 0, login: 0, console: 0 };
  for (const s of proxy.clients) {
    n.total++;
    n[s.state]++;
  }
  return n;
}

export function queriesView(proxy: Proxy, limit?: number): QueryView[] {
  return proxy.traffic.fingerprints.top(limit).map((e) => ({
    fingerprint: e.fingerprint,
    id: e.id,
    count: e.count,
    errors: e.errors,
    meanMs: e.count === 0 ? null : (e.buckets.sum / e.count) * 1000,
    maxMs: e.count === 0 ? null : e.hdr.maxValue / 1000,
    p50Ms: percentileMs(e.hdr, 50),
    p95Ms: percentileMs(e.hdr, 95),
    p99Ms: percentileMs(e.hdr, 99),
    kinds: { ...e.kinds },
    nodes: Object.fromEntries(e.nodes),
    since: iso(e.since),
  }));
}

export function statusView(proxy: Proxy): StatusView {
  const snap = proxy.cluster.current;
  const pausedSince = proxy.gate.pausedSince;
  return {
    version: VERSION,
    startedAt: iso(proxy.startedAt),
    uptimeSeconds: Math.round((Date.now() - proxy.startedAt) / 1000),
    mode: proxy.config.pool.mode,
    paused: pausedSince !== null,
    pausedSince: pausedSince === null ? null : iso(pausedSince),
    config: { version: proxy.configVersion, loadedAt: iso(proxy.configLoadedAt) },
    cluster: { version: snap.version, at: iso(snap.at), primary: snap.primary },
    nodes: nodesView(proxy),
    pools: poolsView(proxy),
    clients: clientCounts(proxy),
  };
}

/** All requests a node answered, of every kind (the dashboard's traffic split). */
export function requestsOf(n: NodeView): number {
  return n.queries.read + n.queries.write + n.queries.other + n.queries.unclassified;
}

/**
 * Proxy-wide counters as (name, value) rows (SHOW COUNTERS): clients, cache hits and misses, pins by reason and
 * routing decisions by target and reason (those that happened).
 */
export function counterRows(proxy: Proxy): [string, number][] {
  const c = proxy.counters;
  const rows: [string, number][] = [
    ["clients_opened", c.clientsOpened],
    ["clients_closed", c.clientsClosed],
    ["classifier_cache_hits", classifierStats.hits],
    ["classifier_cache_misses", classifierStats.misses],
    ["prepared_cache_hits", proxy.statements.hits],
    ["prepared_cache_misses", proxy.statements.misses],
    ["fingerprints_tracked", proxy.traffic.fingerprints.size],
    ["fingerprints_evicted", proxy.traffic.fingerprints.evicted],
  ];
  for (const reason of PIN_REASONS) rows.push([`pins.${reason}`, c.pins[reason]]);
  for (const target of ROUTE_TARGETS) {
    for (const reason of REASON_CODES) if (c.routes[target][reason] > 0) rows.push([`routing.${target}.${reason}`, c.routes[target][reason]]);
  }
  return rows;
}

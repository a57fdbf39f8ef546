/**
 * /metrics in the Prometheus text format (prom-client's registry and exposition). Values are not recorded through
 * prom-client on the serving path — its labelled `observe`/`inc` cost ~0.4 µs a call (bench/metrics.ts) — but
 * kept as plain counters and bucket arrays where they happen (src/stats.ts, {@link Traffic}, the pools, the
 * sessions) and read by each metric's `collect` at scrape time. Metric names are listed in README.md.
 */
import { Counter, Gauge, Histogram, Registry, type LabelValues } from "prom-client";
import { classifierStats } from "../router/classify.ts";
import type { Proxy } from "../server.ts";
import { PIN_REASONS, REASON_CODES, ROUTE_TARGETS } from "../session/counters.ts";
import type { Buckets } from "../stats.ts";
import { KINDS } from "./traffic.ts";
import { clientCounts, nodesView, poolsView, VERSION } from "./view.ts";

type Labels = LabelValues<string>;
type Sample = readonly [Labels, number];

/** Fingerprint text in a label is cut here (the `query_id` label keeps series apart). */
const QUERY_LABEL_MAX = 200;

/**
 * A prom-client histogram whose series come from {@link Buckets} at scrape time instead of `observe` calls.
 * It overrides what the registry reads (`get`), producing the same `_bucket`/`_sum`/`_count` lines.
 */
class BucketsHistogram extends Histogram<string> {
  private readonly metricName: string;
  private readonly helpText: string;

  constructor(
    config: { name: string; help: string; labelNames: string[]; registers: Registry[] },
    private readonly read: () => Iterable<readonly [Labels, Buckets]>,
  ) {
    super(config);
    this.metricName = config.name;
    this.helpText = config.help;
  }

  override async get() {
    const name = this.metricName;
    const values: { labels: Labels; value: number; metricName: string }[] = [];
    for (const [labels, b] of this.read()) {
      let cumulative = 0;
      for (let i = 0; i < b.bounds.length; i++) {
        cumulative += b.counts[i]!;
        values.push({ labels: { ...labels, le: b.bounds[i]! }, value: cumulative, metricName: `${name}_bucket` });
      }
      values.push({ labels: { ...labels, le: "+Inf" }, value: b.count, metricName: `${name}_bucket` });
      values.push({ labels, value: b.sum, metricName: `${name}_sum` });
      values.push({ labels, value: b.count, metricName: `${name}_count` });
    }
    return { name, help: this.helpText, type: "histogram", values, aggregator: "sum" } as unknown as Awaited<ReturnType<Histogram<string>["get"]>>;
  }

  getForPromString() {
    return this.get();
  }
}

interface Defs {
  counter(name: string, help: string, labelNames: readonly string[], read: () => Iterable<Sample>): void;
  gauge(name: string, help: string, labelNames: readonly string[], read: () => Iterable<Sample>): void;
  histogram(name: string, help: string, labelNames: readonly string[], read: () => Iterable<readonly [Labels, Buckets]>): void;
}

function definer(registry: Registry): Defs {
  const config = (name: string, help: string, labelNames: readonly string[]) => ({ name, help, labelNames: [...labelNames], registers: [registry] });
  /** A `collect` that sets every series afresh from `read` (series that went away are gone). */
  const refill = <M extends { reset(): void }>(read: () => Iterable<Sample>, put: (m: M, labels: Labels, v: number) => void) =>
    function (this: M) {
      this.reset();
      for (const [labels, v] of read()) put(this, labels, v);
    };
  return {
    counter(name, help, labelNames, read) {
      new Counter({ ...config(name, help, labelNames), collect: refill<Counter<string>>(read, (m, l, v) => m.inc(l, v)) });
    },
    gauge(name, help, labelNames, read) {
      new Gauge({ ...config(name, help, labelNames), collect: refill<Gauge<string>>(read, (m, l, v) => m.set(l, v)) });
    },
    histogram(name, help, labelNames, read) {
      new BucketsHistogram(config(name, help, labelNames), read);
    },
  };
}

/** The Prometheus registry of one proxy; {@link Metrics.scrape} renders it. */
export class Metrics {
  readonly registry = new Registry();

  constructor(private readonly proxy: Proxy) {
    const d = definer(this.registry);
    this.traffic(d);
    this.connections(d);
    this.nodes(d);
    this.decisions(d);
  }

  /** The exposition text. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private traffic(d: Defs): void {
    const p = this.proxy;
    const names = () => p.config.nodes.map((n) => n.name);
    d.counter("pgroute_queries_total", "Requests answered, by node and kind (read, write, other; unclassified: session pooling)", ["node", "kind"], function* () {
      for (const node of names()) {
        const t = p.traffic.of(node);
        for (const kind of KINDS) yield [{ node, kind }, t.requests[kind].count];
        yield [{ node, kind: "unclassified" }, p.nodeCounters(node).sessionRequests];
      }
    });
    d.counter("pgroute_transactions_total", "Transactions completed (autocommit requests and COMMIT/ROLLBACK), by node", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.traffic.of(node).transactions + p.nodeCounters(node).sessionTransactions];
    });
    d.counter("pgroute_query_errors_total", "Requests that ended in an error, by node (transaction pooling)", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.traffic.of(node).failed];
    });
    d.histogram("pgroute_query_duration_seconds", "Request latency from sending to ReadyForQuery, by node and kind (transaction pooling)", ["node", "kind"], function* () {
      for (const node of names()) {
        const t = p.traffic.of(node);
        for (const kind of KINDS) yield [{ node, kind }, t.requests[kind]];
      }
    });
    const fingerprints = () => p.traffic.fingerprints.top();
    const fpLabels = (e: { id: string; fingerprint: string }) => ({ query_id: e.id, query: e.fingerprint.length > QUERY_LABEL_MAX ? `${e.fingerprint.slice(0, QUERY_LABEL_MAX - 1)}…` : e.fingerprint });
    d.histogram("pgroute_fingerprint_duration_seconds", "Request latency by query fingerprint (the busiest admin.top_queries)", ["query_id", "query"], function* () {
      for (const e of fingerprints()) yield [fpLabels(e), e.buckets];
    });
    d.counter("pgroute_fingerprint_errors_total", "Requests that ended in an error, by query fingerprint", ["query_id", "query"], function* () {
      for (const e of fingerprints()) yield [fpLabels(e), e.errors];
    });
    d.gauge("pgroute_fingerprints_tracked", "Query fingerprints tracked now", [], function* () {
      yield [{}, p.traffic.fingerprints.size];
    });
    d.counter("pgroute_fingerprints_evicted_total", "Fingerprints replaced by busier ones (admin.top_queries reached)", [], function* () {
      yield [{}, p.traffic.fingerprints.evicted];
    });
  }

  private connections(d: Defs): void {
    const p = this.proxy;
    const names = () => p.config.nodes.map((n) => n.name);
    d.gauge("pgroute_clients", "Client connections by state (login, waiting, active, idle, console)", ["state"], function* () {
      const c = clientCounts(p);
      for (const state of ["login", "waiting", "active", "idle", "console"] as const) yield [{ state }, c[state]];
    });
    d.counter("pgroute_client_connections_opened_total", "Client connections accepted", [], function* () {
      yield [{}, p.counters.clientsOpened];
    });
    d.counter("pgroute_client_connections_closed_total", "Client connections closed", [], function* () {
      yield [{}, p.counters.clientsClosed];
    });
    d.gauge("pgroute_pool_server_connections", "Server connections per pool by state (active: leased, idle, opening)", ["node", "user", "database", "state"], function* () {
      for (const pool of poolsView(p)) {
        const l = { node: pool.node, user: pool.user, database: pool.database };
        yield [{ ...l, state: "active" }, pool.active];
        yield [{ ...l, state: "idle" }, pool.idle];
        yield [{ ...l, state: "opening" }, pool.opening];
      }
    });
    d.gauge("pgroute_pool_max_server_connections", "Most server connections a pool opens (pool.size)", ["node", "user", "database"], function* () {
      for (const pool of poolsView(p)) yield [{ node: pool.node, user: pool.user, database: pool.database }, pool.max];
    });
    d.gauge("pgroute_pool_waiting_clients", "Clients waiting for a server connection of the pool", ["node", "user", "database"], function* () {
      for (const pool of poolsView(p)) yield [{ node: pool.node, user: pool.user, database: pool.database }, pool.waiting];
    });
    d.counter("pgroute_server_connections_opened_total", "Server connections opened, by node", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.nodeCounters(node).opened];
    });
    d.counter("pgroute_server_connections_closed_total", "Server connections closed, by node", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.nodeCounters(node).closed];
    });
    d.counter("pgroute_server_login_failures_total", "Server logins that failed, by node", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.nodeCounters(node).loginFailures];
    });
    d.counter("pgroute_checkouts_total", "Server connections leased, by node", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.nodeCounters(node).checkouts];
    });
    d.histogram("pgroute_checkout_wait_seconds", "Time a lease waited for a busy pool, by node (leases served at once are not observed)", ["node"], function* () {
      for (const node of names()) yield [{ node }, p.nodeCounters(node).waits];
    });
    d.gauge("pgroute_paused", "1 while PAUSE holds new transactions back", [], function* () {
      yield [{}, p.gate.paused ? 1 : 0];
    });
    d.gauge("pgroute_paused_waiting_clients", "Clients waiting for RESUME", [], function* () {
      yield [{}, p.gate.waiters];
    });
  }

  private nodes(d: Defs): void {
    const p = this.proxy;
    const view = () => nodesView(p);
    const known = <T>(v: T | null): v is T => v !== null;
    d.gauge("pgroute_node_role", "1 for the role routing uses for the node now (primary, replica, unknown)", ["node", "role"], function* () {
      for (const n of view()) for (const role of ["primary", "replica", "unknown"]) yield [{ node: n.name, role }, n.role === role ? 1 : 0];
    });
    d.gauge("pgroute_node_up", "1 while the node is reachable", ["node"], function* () {
      for (const n of view()) yield [{ node: n.name }, n.reachable ? 1 : 0];
    });
    d.gauge("pgroute_node_readable", "1 while reads may go to the node", ["node"], function* () {
      for (const n of view()) yield [{ node: n.name }, n.readable ? 1 : 0];
    });
    d.gauge("pgroute_node_drained", "1 while an operator has drained the node", ["node"], function* () {
      for (const n of view()) yield [{ node: n.name }, n.override.drained ? 1 : 0];
    });
    d.gauge("pgroute_node_lag_bytes", "Replication lag of a replica in bytes (absent while unknown)", ["node"], function* () {
      for (const n of view()) if (known(n.lagBytes)) yield [{ node: n.name }, n.lagBytes];
    });
    d.gauge("pgroute_node_lag_seconds", "Replication lag of a replica in seconds (absent while unknown)", ["node"], function* () {
      for (const n of view()) if (known(n.lagSeconds)) yield [{ node: n.name }, n.lagSeconds];
    });
    d.gauge("pgroute_node_score", "Health score 0-100", ["node"], function* () {
      for (const n of view()) yield [{ node: n.name }, n.score];
    });
    d.gauge("pgroute_node_breaker_state", "1 for the circuit breaker's state (closed, open, half-open)", ["node", "state"], function* () {
      for (const n of view()) for (const state of ["closed", "open", "half-open"]) yield [{ node: n.name, state }, n.breaker.state === state ? 1 : 0];
    });
  }

  private decisions(d: Defs): void {
    const p = this.proxy;
    d.counter("pgroute_pins_total", "Sessions pinned to their server connection, by reason", ["reason"], function* () {
      for (const reason of PIN_REASONS) yield [{ reason }, p.counters.pins[reason]];
    });
    d.counter("pgroute_routing_decisions_total", "Routing decisions by target and reason", ["target", "reason"], function* () {
      for (const target of ROUTE_TARGETS) for (const reason of REASON_CODES) yield [{ target, reason }, p.counters.routes[target][reason]];
    });
    d.counter("pgroute_prepared_cache_hits_total", "Prepared statements found on the server connection that ran them", [], function* () {
      yield [{}, p.statements.hits];
    });
    d.counter("pgroute_prepared_cache_misses_total", "Prepared statements that had to be prepared on the server connection first", [], function* () {
      yield [{}, p.statements.misses];
    });
    d.counter("pgroute_classifier_cache_hits_total", "Statement classifications answered from the cache (whole process)", [], function* () {
      yield [{}, classifierStats.hits];
    });
    d.counter("pgroute_classifier_cache_misses_total", "Statement classifications that ran the SQL parser (whole process)", [], function* () {
      yield [{}, classifierStats.misses];
    });
    d.gauge("pgroute_info", "pgroute's version", ["version"], function* () {
      yield [{ version: VERSION }, 1];
    });
    d.gauge("pgroute_config_version", "1 at start, +1 for every configuration reload applied", [], function* () {
      yield [{}, p.configVersion];
    });
  }
}

/**
 * What recording one completed request costs, in ns, for the ways pgroute could keep its metrics on the serving
 * path: prom-client's labelled `observe`/`inc` as documented (labels as an object on every call), the same through
 * a child bound once to its labels, plain counters with a bucket array, and hdr-histogram-js's `recordValue` (the
 * per-fingerprint quantiles). Also what the proxy really runs per request — the relay's tracking of a request for
 * its observers, and `Traffic.request` (which includes `FingerprintTable.record`) — and what one scrape of /metrics
 * costs with 100 fingerprints.
 *
 *   bun bench/metrics.ts                 # about 20 s
 *   bun bench/metrics.ts --rounds 25
 *
 * `best` is the fastest round (the cost itself), `median` what a busy machine made of it (load average printed).
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import * as hdr from "hdr-histogram-js";
import { Counter, Histogram, Registry } from "prom-client";
import { FingerprintTable } from "../src/admin/fingerprints.ts";
import type { RequestSample } from "../src/cluster/observe.ts";
import type { NodeConfig } from "../src/config/types.ts";
import { Metrics } from "../src/admin/metrics.ts";
import { Traffic } from "../src/admin/traffic.ts";
import { configFrom } from "../src/config/load.ts";
import { createLogger } from "../src/log.ts";
import { Proxy } from "../src/server.ts";
import { timeCalls, type Figure } from "./lib/stats.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "15" } } });
const ROUNDS = Math.max(1, Number(values.rounds) || 15);
const N = 200_000;

/** ns per call of `body(i)`, over rounds, after one untimed pass. */
const measure = (n: number, body: (i: number) => void): Figure => timeCalls(n, ROUNDS, body);

const fmt = (f: Figure) => `${f.best.toFixed(0).padStart(8)} ${f.median.toFixed(0).padStart(8)}`;
const NODES = ["primary", "replica1", "replica2"];
const KINDS = ["read", "write", "other"] as const;
const latency = (i: number) => 0.0002 + (i % 97) * 0.00003; // seconds, 0.2–3 ms

const registry = new Registry();
const hist = new Histogram({ name: "h", help: "h", labelNames: ["node", "kind"], registers: [registry] });
const counter = new Counter({ name: "c", help: "c", labelNames: ["node", "kind"], registers: [registry] });
const children = NODES.map((node) => KINDS.map((kind) => ({ h: hist.labels(node, kind), c: counter.labels(node, kind) })));

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const plain = NODES.map(() => KINDS.map(() => ({ count: 0, sum: 0, buckets: new Float64Array(BOUNDS.length + 1) })));

const histogramHdr = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 2 });
const histogramPacked = hdr.build({ bitBucketSize: "packed", lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 2 });

const nodes: NodeConfig[] = NODES.map((name, i) => ({ name, host: "127.0.0.1", port: 5432 + i, role: i === 0 ? "primary" : "replica", weight: 1, zone: "", sslmode: "disable" }));
const fingerprints = Array.from({ length: 50 }, (_, i) => `select a, b from t${i} where id = ?`);
const sample = (i: number): RequestSample => ({
  target: i % 4 === 0 ? "primary" : "replica",
  kind: KINDS[i % 3]!,
  fingerprint: fingerprints[i % fingerprints.length]!,
  reason: "read_only",
  startedAt: 0,
  ms: latency(i) * 1000,
  failed: false,
  txEnd: true,
  errorCode: null,
});
const samples = Array.from({ length: 1000 }, (_, i) => sample(i));

const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
console.log(`Bun ${Bun.version}; ${ROUNDS} rounds of ${N}; load average ${load()}`);
console.log(`ns per request                                    best   median`);
const row = (name: string, f: Figure) => console.log(`${name.padEnd(46)}${fmt(f)}`);

row("prom-client observe+inc, labels object", measure(N, (i) => {
  const labels = { node: NODES[i % 3]!, kind: KINDS[i % 3]! };
  hist.observe(labels, latency(i));
  counter.inc(labels);
}));
row("prom-client observe+inc, bound child", measure(N, (i) => {
  const c = children[i % 3]![i % 3]!;
  c.h.observe(latency(i));
  c.c.inc();
}));
row("plain counters + bucket array", measure(N, (i) => {
  const p = plain[i % 3]![i % 3]!;
  const v = latency(i);
  p.count++;
  p.sum += v;
  let b = 0;
  while (b < BOUNDS.length && v > BOUNDS[b]!) b++;
  p.buckets[b]!++;
}));
row("hdr-histogram-js recordValue (32-bit)", measure(N, (i) => histogramHdr.recordValue(Math.round(latency(i) * 1e6))));
row("hdr-histogram-js recordValue (packed)", measure(N, (i) => histogramPacked.recordValue(Math.round(latency(i) * 1e6))));

const table = new FingerprintTable(100);
row("FingerprintTable.record (50 fingerprints)", measure(N, (i) => table.record(samples[i % 1000]!, nodes[i % 3]!)));

const config = configFrom({ nodes: nodes.map((n) => ({ name: n.name, port: n.port, role: n.role })), users: [] });
const proxy = new Proxy({ config, log: createLogger({ level: "error", format: "text" }) });
// What the relay adds per request once anyone observes (always, now that metrics do): a sample object and two clocks.
const inflight: RequestSample[] = [];
row("relay tracking (sample + 2 performance.now())", measure(N, (i) => {
  inflight.push({ target: "replica", kind: "read", fingerprint: fingerprints[i % 50]!, reason: "read_only", startedAt: performance.now(), ms: 0, failed: false, txEnd: false, errorCode: null });
  const s = inflight.shift()!;
  s.ms = performance.now() - s.startedAt;
}));
const traffic = new Traffic(100);
row("Traffic.request (all a request records)", measure(N, (i) => traffic.request(nodes[i % 3]!, samples[i % 1000]!)));
const metrics = new Metrics(proxy);

for (let i = 0; i < 100; i++) proxy.traffic.request(nodes[i % 3]!, { ...samples[0]!, fingerprint: `select ${i} from wide` });
const t0 = Bun.nanoseconds();
const SCRAPES = 50;
let bytes = 0;
for (let i = 0; i < SCRAPES; i++) bytes = (await metrics.scrape()).length;
console.log(`one /metrics scrape (${bytes} bytes): ${((Bun.nanoseconds() - t0) / SCRAPES / 1e6).toFixed(2)} ms`);
console.log(`load average at the end ${load()}`);

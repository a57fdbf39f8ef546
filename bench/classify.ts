/**
 * What classifying a statement costs on pgroute's serving path, in µs per statement: a cache hit and a full-parse
 * miss, for a simple statement, a typical ORM join (medium) and a 1.2 KB analytic query (complex). A hit comes in
 * two kinds: the same text again (a parameterized query, a prepared statement's text — long statements are then
 * remembered by their text and skip the lexer: `shapeOf`), and the same shape with a literal never sent before
 * inlined (the lexer pass computes the shape, then a lookup).
 *
 * A miss is what the relay does for a statement shape it has not seen: the lexer pass, the session-effects check
 * and the classification, which share one libpg-query parse (`parseSql` keeps the last tree), then the cache
 * insert. `parse alone` is libpg-query's parseSync on its own (WASM parse, JSON out, JSON.parse): the floor no
 * classifier built on it can go below.
 *
 *   bun bench/classify.ts                 # about 40 s
 *   bun bench/classify.ts --rounds 25     # more rounds: a better chance of quiet ones on a busy machine
 *
 * Each figure comes from a timed loop repeated over rounds, after an untimed warm-up of the same loop (JIT, WASM
 * tier-up, caches). `best` is the fastest round — the cost itself, what the code needs when the machine leaves it
 * alone — and is what the targets are checked against; `median` shows what a busy machine (the load average is
 * printed) made of it. Misses use statements whose shapes are all distinct (a numbered identifier: identifiers are
 * part of the shape, literals are not), so each one reaches the parser exactly as a new statement shape would in
 * serve. Targets: hit < 2 µs, miss < 50 µs.
 */
import { cpus, loadavg, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { classify, DEFAULT_FUNCTIONS, type FunctionLists } from "../src/router/classify.ts";
import { sessionEffects } from "../src/router/effects.ts";
import { shape, shapeOf } from "../src/router/lexer.ts";
import { loadParser, parseSql } from "../src/router/parser.ts";
import { virtualSetting } from "../src/router/state.ts";
import { figure, fmt, measure as measureRounds, type Figure } from "./lib/timing.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "15" } } });
const ROUNDS = Math.max(1, Number(values.rounds) || 15);
const measure = (n: number, body: (i: number) => void) => measureRounds(ROUNDS, n, body);

const SIMPLE = (i: number) => `select id, name, email from users${i} where id = 42`;
// What an ORM sends for a page of a list: three tables, IN, a date range, ORDER BY and LIMIT.
const MEDIUM = (i: number) => `select u.id, u.email, u.created_at, o.id as order_id, o.total, o.status
from users${i} u
join orders o on o.user_id = u.id
left join payments p on p.order_id = o.id and p.state = 'settled'
where u.tenant_id = 42 and o.created_at >= '2026-01-01' and o.status in ('paid', 'shipped')
order by o.created_at desc
limit 50`;
// A 5-way join with two CTEs (one recursive), a scalar subquery, an EXISTS, an IN, a window and a lateral.
const COMPLEX = (i: number) => `with recent${i} as (
  select o.id, o.customer_id, o.total, row_number() over (partition by o.customer_id order by o.created_at desc) as rn
  from orders o where o.created_at > now() - interval '30 days'
), tree as (
  select id, parent_id, 1 as depth from categories where parent_id is null
  union all select c.id, c.parent_id, t.depth + 1 from categories c join tree t on c.parent_id = t.id
)
select c.id, c.name, r.total, p.title, cat.depth,
       (select count(*) from reviews rv where rv.product_id = p.id and rv.stars >= 4) as good_reviews,
       coalesce(sum(li.quantity * li.price) over (partition by c.id), 0) as spent
from customers c
join recent${i} r on r.customer_id = c.id and r.rn = 1
join line_items li on li.order_id = r.id
join products p on p.id = li.product_id
join tree cat on cat.id = p.category_id
left join lateral (select s.status from shipments s where s.order_id = r.id order by s.updated_at desc limit 1) sh on true
where exists (select 1 from addresses a where a.customer_id = c.id and a.country = 'NZ')
  and p.id in (select product_id from promotions where active and starts_at <= current_date)
  and c.email not like '%@example.com'
order by spent desc, c.id
limit 50 offset 0`;

/**
 * Cache misses as the relay meets them: each round takes statements never seen before (fresh function lists = an
 * empty classification cache; numbered identifiers = new shapes for the effects cache) through what a Query
 * costs the relay before it is sent: the lexer pass, the virtual-setting and session-effects checks, the
 * classification.
 */
function measureMisses(n: number, text: (i: number) => string, offset: number): Figure {
  const perRound: number[] = [];
  // Round -1 is the warm-up; every round gets its own statements and its own (empty) cache.
  for (let r = -1; r < ROUNDS; r++) {
    const lists: FunctionLists = { write: new Set(), read: new Set() };
    const stmts = Array.from({ length: n }, (_, i) => text(offset + (r + 1) * n + i));
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) {
      const sql = stmts[i]!;
      const sh = shapeOf(sql);
      virtualSetting(sql, sh.key);
      sessionEffects(sql, sh.key);
      classify(sql, lists, sh.key);
    }
    const us = (Bun.nanoseconds() - t0) / n / 1000;
    if (r >= 0) perRound.push(us);
  }
  return figure(perRound);
}

/** libpg-query's parse alone: parseSql keeps only the last tree, so each call in turn parses. */
function measureParse(n: number, text: (i: number) => string, offset: number): Figure {
  const stmts = Array.from({ length: n }, (_, i) => text(offset + i));
  return measure(n, (i) => void parseSql(stmts[i]!));
}

async function main(): Promise<void> {
  await loadParser();
  const cpu = cpus()[0]?.model ?? "unknown";
  const lines: string[] = [];
  const out = (s: string) => {
    lines.push(s);
    console.log(s);
  };
  const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");
  out(`machine: ${cpu}, nproc ${navigator.hardwareConcurrency}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Bun ${Bun.version}; ${ROUNDS} rounds; load average ${load()}`);
  out(`µs per statement                        best   median`);
  for (const [name, text, hitN, missN] of [
    ["simple ", SIMPLE, 100_000, 2_000],
    ["medium ", MEDIUM, 30_000, 1_000],
    ["complex", COMPLEX, 10_000, 300],
  ] as const) {
    const one = text(0);
    const key = shape(one).key;
    classify(one, DEFAULT_FUNCTIONS, key); // now cached
    // As serve meets a Query: its text decoded from the frame (a fresh string, whose hash for the text cache is
    // not yet known) and the frame's bytes lexed.
    const bytes = Buffer.from(one);
    const hit = measure(hitN, () => {
      const sql = bytes.toString("utf8", 0, bytes.length);
      classify(sql, DEFAULT_FUNCTIONS, shapeOf(sql, bytes, 0, bytes.length).key);
    });
    // Other literals every time: each call gets a statement text not sent before (as with inlined constants), so
    // none is found by its exact bytes and each one is lexed. The literals are written into one buffer in place,
    // as a frame arrives: its bytes are in the cache, as a Query's are when the relay reads it.
    const frame = Buffer.from(one.replace(/\b(42|50)\b/g, "10000000"));
    const at: number[] = [];
    for (let p = frame.indexOf("10000000"); p >= 0; p = frame.indexOf("10000000", p + 8)) at.push(p);
    let next = 10_000_000;
    const hitLiterals = measure(hitN, () => {
      const digits = String(next++);
      for (const p of at) frame.write(digits, p, "latin1");
      const sql = frame.toString("utf8", 0, frame.length);
      classify(sql, DEFAULT_FUNCTIONS, shapeOf(sql, frame, 0, frame.length).key);
    });
    const lookup = measure(hitN, () => classify(one, DEFAULT_FUNCTIONS, key));
    const lex = measure(hitN, () => shape(one));
    // Far from the statements used above and from each other: every one is new to every cache.
    const miss = measureMisses(missN, text, 1_000_000);
    const parse = measureParse(missN, text, 2_000_000);
    out(`${name} statement (${one.length} chars)`);
    out(`  cache hit, same text            ${fmt(hit)}   target < 2 µs: ${hit.best < 2 ? "met" : "missed"}`);
    out(`  cache hit, other literals       ${fmt(hitLiterals)}   target < 2 µs: ${hitLiterals.best < 2 ? "met" : "missed"}`);
    out(`    lexer pass alone (shape)      ${fmt(lex)}`);
    out(`    lookup alone (key at hand)    ${fmt(lookup)}`);
    out(`  full-parse miss (serving path)  ${fmt(miss)}   target < 50 µs: ${miss.best < 50 ? "met" : "missed"}`);
    out(`    parse alone (libpg-query)     ${fmt(parse)}`);
  }
  out(`load average at the end ${load()}`);
}

await main();

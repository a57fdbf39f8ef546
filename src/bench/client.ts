/**
 * One benchmark client, as pgbench has them: its own connection (two for `--direct` with a read/write mix: one to
 * the primary, one to its replica), running scripts back to back and timing each. Runs inside a load-generator
 * thread (worker.ts); postgres.js does the protocol.
 */
import { readFileSync } from "node:fs";
import postgres from "postgres";
import type { ClientRoute, ConnSpec, Counts, RoundTask } from "./protocol.ts";
import { evaluate, inlineSql, type Script, type Vars } from "./script.ts";

type Sql = postgres.Sql;

/** mulberry32: a small, fast seeded PRNG, so a run can be repeated with `--seed`. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** libpq's sslmode in postgres.js terms. */
function sslOption(c: ConnSpec): postgres.Options<Record<string, never>>["ssl"] {
  switch (c.sslmode) {
    case "disable":
      return false;
    case "prefer":
      return "prefer";
    case "require":
      return c.sslrootcert ? { ca: readFileSync(c.sslrootcert), checkServerIdentity: () => undefined } : "require";
    case "verify-ca":
      return { ca: c.sslrootcert ? readFileSync(c.sslrootcert) : undefined, checkServerIdentity: () => undefined };
    case "verify-full":
      return c.sslrootcert ? { ca: readFileSync(c.sslrootcert) } : {};
  }
}

/** A postgres.js client holding at most one connection. */
export function connect(c: ConnSpec, applicationName: string): Sql {
  return postgres({
    host: c.host,
    port: c.port,
    user: c.user,
    password: c.password,
    database: c.database,
    ssl: sslOption(c),
    max: 1,
    // No type query at connect: it would be a statement the servers run that the workload did not ask for.
    fetch_types: false,
    idle_timeout: 0,
    max_lifetime: null,
    connect_timeout: 10,
    onnotice: () => {},
    // An empty name is left out of the startup packet altogether.
    connection: { application_name: applicationName },
  });
}

/** The first row of a query's result, typed by the caller (setup and bookkeeping queries, not the workload). */
export async function queryOne<T>(sql: Sql, query: string, params: (string | number)[] = []): Promise<T> {
  const rows = await sql.unsafe(query, params);
  return rows[0] as unknown as T;
}

/** A thrown value's SQLSTATE, or the client's own code (ECONNREFUSED, CONNECTION_CLOSED), for the error tally. */
export function errorCode(err: unknown): string {
  const e = err as { code?: unknown; errno?: unknown; message?: unknown };
  if (typeof e?.code === "string" && e.code !== "") return e.code;
  return typeof e?.message === "string" ? e.message.slice(0, 60) : "unknown";
}

/** Latencies in µs, in a buffer that doubles as it fills. */
export class LatencyLog {
  private buf = new Uint32Array(1 << 14);
  length = 0;

  push(micros: number): void {
    if (this.length === this.buf.length) {
      const next = new Uint32Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = micros;
  }

  /** The recorded values (a copy sized to fit, so it can be transferred). */
  take(): Uint32Array {
    return this.buf.slice(0, this.length);
  }
}

/** Counters one worker shares between its clients (single-threaded within the worker, so no atomics). */
export interface Tally extends Counts {
  latencies: LatencyLog | null;
}

export function newTally(recordLatencies: boolean): Tally {
  return { transactions: 0, statements: 0, errors: 0, errorCodes: {}, rollbacks: 0, probes: 0, latencies: recordLatencies ? new LatencyLog() : null };
}

/** Picks scripts by weight. */
function picker(scripts: readonly Script[], random: () => number): () => Script {
  if (scripts.length === 1) return () => scripts[0]!;
  const total = scripts.reduce((s, x) => s + x.weight, 0);
  return () => {
    let r = random() * total;
    for (const s of scripts) if ((r -= s.weight) < 0) return s;
    return scripts[scripts.length - 1]!;
  };
}

export class BenchClient {
  private writer: Sql | null = null;
  private reader: Sql | null = null;
  private readonly vars: Vars;
  private readonly random: () => number;
  private readonly pick: () => Script;

  constructor(
    private readonly route: ClientRoute,
    private readonly task: RoundTask,
    private readonly tally: Tally,
  ) {
    this.random = seededRandom(task.seed + route.id * 7919);
    this.vars = { scale: task.scale, client_id: route.id - 1 };
    this.pick = picker(task.scripts, this.random);
  }

  /** Which connection a script runs on. */
  private wantsReader(s: Script): boolean {
    return this.route.reader !== null && s.readOnly;
  }

  /**
   * Opens the connections the scripts need, each proven with `select 1` so the round does not time logins (not for
   * churn, where the login is part of every transaction).
   */
  async open(): Promise<void> {
    if (this.task.churn) return;
    const needReader = this.task.scripts.some((s) => this.wantsReader(s));
    const needWriter = this.task.scripts.some((s) => !this.wantsReader(s));
    if (needWriter) this.writer = await this.probe(this.route.writer);
    if (needReader) this.reader = await this.probe(this.route.reader!);
  }

  private async probe(spec: ConnSpec): Promise<Sql> {
    const sql = connect(spec, this.task.applicationName);
    try {
      await sql.unsafe("select 1");
    } catch (err) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw new Error(`cannot connect to ${spec.name} (${spec.host}:${spec.port}): ${(err as Error).message}`);
    }
    this.tally.probes++;
    return sql;
  }

  /** Runs scripts until `deadline` (performance.now() time); the one in flight at the deadline completes. */
  async run(deadline: number): Promise<void> {
    while (performance.now() < deadline) await this.once();
  }

  private async once(): Promise<void> {
    const script = this.pick();
    const t0 = performance.now();
    let sql: Sql | null = null;
    let fresh = false;
    try {
      if (this.task.churn) {
        sql = connect(this.wantsReader(script) ? this.route.reader! : this.route.writer, this.task.applicationName);
        fresh = true;
      } else {
        sql = this.wantsReader(script) ? this.reader! : this.writer!;
      }
      await this.execute(sql, script);
      this.tally.transactions++;
      this.tally.latencies?.push(Math.round((performance.now() - t0) * 1000));
    } catch (err) {
      this.tally.errors++;
      const code = errorCode(err);
      this.tally.errorCodes[code] = (this.tally.errorCodes[code] ?? 0) + 1;
      if (script.transactional && sql) {
        // A failed statement leaves the transaction aborted; clear it so the next run starts clean.
        await sql.unsafe("ROLLBACK").then(
          () => this.tally.rollbacks++,
          () => {},
        );
      }
    } finally {
      if (fresh) await sql!.end({ timeout: 5 }).catch(() => {});
    }
  }

  private async execute(sql: Sql, script: Script): Promise<void> {
    const prepared = this.task.protocol === "prepared";
    for (const step of script.steps) {
      switch (step.kind) {
        case "set":
          this.vars[step.name] = evaluate(step.expr, this.vars, this.random);
          break;
        case "sleep":
          await Bun.sleep((evaluate(step.amount, this.vars, this.random) * step.micros) / 1000);
          break;
        case "sql": {
          const values = step.vars.map((v) => {
            const x = this.vars[v];
            if (x === undefined) throw new Error(`variable "${v}" is not set`);
            return x;
          });
          if (prepared) await sql.unsafe(step.prepared, values, { prepare: true });
          else await sql.unsafe(inlineSql(step, values));
          this.tally.statements++;
          break;
        }
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.writer?.end({ timeout: 5 }), this.reader?.end({ timeout: 5 })].map((p) => p?.catch(() => {})));
    this.writer = this.reader = null;
  }
}

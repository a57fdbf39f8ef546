/**
 * The load generator of bench/idle-clients.ts, run as a separate process so that its memory is not counted as
 * pgroute's. It opens PostgreSQL client connections over raw sockets, each logging in fully (StartupMessage,
 * SCRAM-SHA-256 with the project's ScramClient, through to ReadyForQuery), keeps them idle, and on command runs
 * a query through one or all of them and closes them. It is driven by its parent over Bun's IPC channel.
 *
 * The SCRAM salted password (PBKDF2, 4096 iterations) is computed once per salt and reused — every login
 * gets the same salt from pgroute — so the load generator stays cheap and does not slow the logins down.
 */
import type { Socket } from "bun";
import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { serialize } from "pg-protocol";
import { startupMessage } from "../../src/wire/encode.ts";
import { SCRAM_MECHANISM, ScramClient, type ScramSecret } from "../../src/wire/scram.ts";

export type WorkerCommand =
  | { cmd: "open"; host: string; port: number; user: string; password: string; database: string; count: number; concurrency: number; timeoutMs: number }
  | { cmd: "query"; index: number; sql: string }
  | { cmd: "queryAll"; sql: string; concurrency: number }
  | { cmd: "status" }
  | { cmd: "close"; timeoutMs: number }
  | { cmd: "exit" };

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export type WorkerReply =
  | { type: "ready"; pid: number; fdLimit: string }
  | { type: "progress"; opened: number; failed: number }
  | { type: "opened"; ok: number; failed: number; errors: [string, number][]; loginMs: Percentiles; wallMs: number; cpuS: number; rssBytes: number }
  | { type: "query"; ok: boolean; value: string | undefined; error: string | undefined; ms: number }
  | { type: "queryAll"; ok: number; failed: number; errors: [string, number][]; ms: number; cpuS: number }
  | { type: "status"; open: number; rssBytes: number }
  | { type: "closed"; closed: number; ms: number; cpuS: number }
  | { type: "error"; message: string };

const td = new TextDecoder();

interface Login {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** The ClientKey-based secret for a salt and iteration count, computed once (PBKDF2 is slow on purpose). */
const secrets = new Map<string, ScramSecret>();

function secretFor(password: string, serverFirst: string): void {
  const attrs = new Map(serverFirst.split(",").map((p) => [p.slice(0, 1), p.slice(2)] as [string, string]));
  const key = `${attrs.get("s")}:${attrs.get("i")}`;
  if (secrets.has(key)) return;
  const salt = Buffer.from(attrs.get("s") ?? "", "base64");
  const iterations = Number(attrs.get("i"));
  const salted = pbkdf2Sync(password, salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  secrets.set(key, { kind: "clientKey", clientKey, verifier: { iterations, salt, storedKey, serverKey } });
}

/** A secret for a new login: the cached ClientKey once one login has revealed the salt, else the password. */
function currentSecret(password: string): ScramSecret {
  // pgroute uses one salt per user, so after the first login the cache has exactly one entry.
  for (const s of secrets.values()) return s;
  return { kind: "password", password };
}

/** The 'M' (message) field of an ErrorResponse body. */
function errorMessage(body: Uint8Array): string {
  let i = 0;
  let severity = "";
  let message = "";
  while (i < body.length && body[i] !== 0) {
    const field = body[i]!;
    const end = body.indexOf(0, i + 1);
    const value = td.decode(body.subarray(i + 1, end < 0 ? body.length : end));
    if (field === 0x4d) message = value; // 'M'
    if (field === 0x53) severity = value; // 'S'
    i = end < 0 ? body.length : end + 1;
  }
  return `${severity} ${message}`.trim();
}

class Conn {
  socket: Socket<Conn> | null = null;
  state: "connecting" | "login" | "idle" | "query" | "closed" = "connecting";
  private buf: Uint8Array | null = null;
  private scram: ScramClient | null = null;
  private settle: ((err: Error | null) => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private queryValue: string | undefined;
  private queryError: string | undefined;
  private onQueryDone: ((r: { value: string | undefined; error: string | undefined }) => void) | null = null;
  private onClosed: (() => void) | null = null;

  constructor(private readonly login: Login) {}

  /** Connects and logs in; resolves at ReadyForQuery. */
  open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settle = (e) => {
        this.settle = null;
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
        if (e) reject(e);
        else resolve();
      };
      this.timer = setTimeout(() => this.fail(new Error(`login timed out after ${timeoutMs} ms`)), timeoutMs);
      Bun.connect<Conn>({ hostname: this.login.host, port: this.login.port, data: this, socket: HANDLERS }).catch((e: Error) =>
        this.fail(new Error(`connect: ${e.message}`)),
      );
    });
  }

  onOpen(socket: Socket<Conn>): void {
    this.socket = socket;
    this.state = "login";
    socket.setNoDelay(true);
    socket.write(startupMessage(new Map([["user", this.login.user], ["database", this.login.database]])));
  }

  fail(e: Error): void {
    const settle = this.settle;
    if (this.state !== "closed") {
      this.state = "closed";
      this.socket?.end();
    }
    settle?.(e);
  }

  onData(chunk: Uint8Array): void {
    if (this.state === "closed") return;
    const buf = this.buf ? concat(this.buf, chunk) : chunk;
    this.buf = null;
    let off = 0;
    while (buf.length - off >= 5) {
      const len = ((buf[off + 1]! << 24) | (buf[off + 2]! << 16) | (buf[off + 3]! << 8) | buf[off + 4]!) >>> 0;
      if (buf.length - off < 1 + len) break;
      this.onMessage(buf[off]!, buf.subarray(off + 5, off + 1 + len));
      off += 1 + len;
    }
    if (off < buf.length) this.buf = buf.slice(off); // the socket's chunk may be reused
  }

  private onMessage(type: number, body: Uint8Array): void {
    try {
      switch (type) {
        case 0x52: // 'R' Authentication*
          return this.onAuth(body);
        case 0x45: {
          // 'E' ErrorResponse
          const msg = errorMessage(body);
          if (this.state === "query") this.queryError = msg;
          else this.fail(new Error(msg));
          return;
        }
        case 0x44: // 'D' DataRow: the first column of the first row
          if (this.state === "query" && this.queryValue === undefined) {
            const n = (body[0]! << 8) | body[1]!;
            if (n > 0) {
              const len = new DataView(body.buffer, body.byteOffset + 2, 4).getInt32(0);
              this.queryValue = len < 0 ? "NULL" : td.decode(body.subarray(6, 6 + len));
            }
          }
          return;
        case 0x5a: // 'Z' ReadyForQuery
          if (this.state === "login") {
            this.state = "idle";
            this.settle?.(null);
          } else if (this.state === "query") {
            this.state = "idle";
            const done = this.onQueryDone;
            this.onQueryDone = null;
            done?.({ value: this.queryValue, error: this.queryError });
          }
          return;
        default:
          // ParameterStatus, BackendKeyData, NoticeResponse, RowDescription, CommandComplete: nothing to do.
          return;
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private onAuth(body: Uint8Array): void {
    const code = new DataView(body.buffer, body.byteOffset, 4).getInt32(0);
    const socket = this.socket!;
    switch (code) {
      case 0: // AuthenticationOk
        return;
      case 10: {
        // AuthenticationSASL
        const mechanisms = td.decode(body.subarray(4)).split("\0");
        if (!mechanisms.includes(SCRAM_MECHANISM)) throw new Error(`server offers no ${SCRAM_MECHANISM}: ${mechanisms.join(",")}`);
        this.scram = new ScramClient(currentSecret(this.login.password));
        socket.write(serialize.sendSASLInitialResponseMessage(SCRAM_MECHANISM, this.scram.first()));
        return;
      }
      case 11: {
        // AuthenticationSASLContinue: server-first-message
        const serverFirst = td.decode(body.subarray(4));
        secretFor(this.login.password, serverFirst);
        socket.write(serialize.sendSCRAMClientFinalMessage(this.scram!.final(serverFirst)));
        return;
      }
      case 12: // AuthenticationSASLFinal
        this.scram!.verify(td.decode(body.subarray(4)));
        this.scram = null;
        return;
      default:
        throw new Error(`unexpected authentication request ${code} (only SCRAM-SHA-256 is implemented)`);
    }
  }

  /** A simple Query; resolves at ReadyForQuery with the first column of the first row, or the error. */
  query(sql: string, timeoutMs = 30_000): Promise<{ value: string | undefined; error: string | undefined }> {
    if (this.state !== "idle") return Promise.resolve({ value: undefined, error: `connection is ${this.state}` });
    this.state = "query";
    this.queryValue = undefined;
    this.queryError = undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.onQueryDone = null;
        resolve({ value: undefined, error: `no ReadyForQuery within ${timeoutMs} ms` });
      }, timeoutMs);
      this.onQueryDone = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.socket!.write(serialize.query(sql));
    });
  }

  /** Sends Terminate and ends the socket; resolves once it is closed. */
  close(): Promise<void> {
    if (this.state === "closed" || !this.socket) return Promise.resolve();
    return new Promise((resolve) => {
      this.onClosed = resolve;
      this.socket!.write(serialize.end());
      this.socket!.end();
    });
  }

  onClose(): void {
    const wasLogin = this.state === "login" || this.state === "connecting";
    this.state = "closed";
    if (wasLogin) this.settle?.(new Error("connection closed during login"));
    const q = this.onQueryDone;
    this.onQueryDone = null;
    q?.({ value: undefined, error: "connection closed" });
    const c = this.onClosed;
    this.onClosed = null;
    c?.();
  }
}

const HANDLERS = {
  open(s: Socket<Conn>) {
    s.data.onOpen(s);
  },
  data(s: Socket<Conn>, chunk: Uint8Array) {
    s.data.onData(chunk);
  },
  close(s: Socket<Conn>) {
    s.data.onClose();
  },
  end(s: Socket<Conn>) {
    s.end();
  },
  error(s: Socket<Conn>, e: Error) {
    s.data.fail(e);
  },
  connectError(s: Socket<Conn>, e: Error) {
    s.data.fail(new Error(`connect: ${e.message}`));
  },
};

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function percentiles(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => (s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s.length ? s[s.length - 1]! : Number.NaN };
}

function countErrors(errors: Map<string, number>): [string, number][] {
  return [...errors.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
}

const cpuS = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Runs `task(i)` for i in [0, n) with at most `concurrency` in flight. */
async function bounded(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, lane));
}

// ---- the worker ----

let conns: Conn[] = [];
const send = (r: WorkerReply): void => {
  process.send!(r);
};

async function handle(c: WorkerCommand): Promise<void> {
  switch (c.cmd) {
    case "open": {
      const login: Login = { host: c.host, port: c.port, user: c.user, password: c.password, database: c.database };
      const batch = Array.from({ length: c.count }, () => new Conn(login));
      const latencies: number[] = [];
      const errors = new Map<string, number>();
      let ok = 0;
      let failed = 0;
      const progress = setInterval(() => send({ type: "progress", opened: ok, failed }), 1000);
      const cpu0 = cpuS();
      const t0 = performance.now();
      await bounded(batch.length, c.concurrency, async (i) => {
        const s = performance.now();
        try {
          await batch[i]!.open(c.timeoutMs);
          latencies.push(performance.now() - s);
          ok++;
        } catch (e) {
          failed++;
          const msg = (e as Error).message;
          errors.set(msg, (errors.get(msg) ?? 0) + 1);
        }
      });
      clearInterval(progress);
      conns.push(...batch.filter((x) => x.state === "idle"));
      send({
        type: "opened",
        ok,
        failed,
        errors: countErrors(errors),
        loginMs: percentiles(latencies),
        wallMs: performance.now() - t0,
        cpuS: cpuS() - cpu0,
        rssBytes: process.memoryUsage().rss,
      });
      return;
    }
    case "query": {
      const conn = conns[c.index];
      const t0 = performance.now();
      if (!conn) return send({ type: "query", ok: false, value: undefined, error: `no connection #${c.index}`, ms: 0 });
      const r = await conn.query(c.sql);
      send({ type: "query", ok: r.error === undefined, value: r.value, error: r.error, ms: performance.now() - t0 });
      return;
    }
    case "queryAll": {
      const errors = new Map<string, number>();
      let ok = 0;
      let failed = 0;
      const cpu0 = cpuS();
      const t0 = performance.now();
      await bounded(conns.length, c.concurrency, async (i) => {
        const r = await conns[i]!.query(c.sql);
        if (r.error === undefined) ok++;
        else {
          failed++;
          errors.set(r.error, (errors.get(r.error) ?? 0) + 1);
        }
      });
      send({ type: "queryAll", ok, failed, errors: countErrors(errors), ms: performance.now() - t0, cpuS: cpuS() - cpu0 });
      return;
    }
    case "status":
      send({ type: "status", open: conns.filter((x) => x.state === "idle").length, rssBytes: process.memoryUsage().rss });
      return;
    case "close": {
      const cpu0 = cpuS();
      const t0 = performance.now();
      const all = conns;
      conns = [];
      let closed = 0;
      await Promise.race([
        Promise.all(
          all.map(async (x) => {
            await x.close();
            closed++;
          }),
        ),
        new Promise((r) => setTimeout(r, c.timeoutMs)),
      ]);
      send({ type: "closed", closed, ms: performance.now() - t0, cpuS: cpuS() - cpu0 });
      return;
    }
    case "exit":
      process.exit(0);
  }
}

if (import.meta.main) {
  // Commands are handled one at a time, in order.
  let chain = Promise.resolve();
  process.on("message", (m) => {
    chain = chain.then(() => handle(m as WorkerCommand)).catch((e) => send({ type: "error", message: (e as Error).message }));
  });
  // The parent going away (its IPC channel closing) ends us too.
  process.on("disconnect", () => process.exit(0));
  let fdLimit = "?";
  try {
    fdLimit = /^Max open files\s+(\S+)/m.exec(await Bun.file("/proc/self/limits").text())?.[1] ?? "?";
  } catch {
    // no /proc
  }
  send({ type: "ready", pid: process.pid, fdLimit });
}

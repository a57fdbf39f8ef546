/**
 * Shared steps of the fault tests: "a normal client is still served", a logger that keeps its lines, pgroute in
 * front of a fake backend, and a look at pgroute's own per-client buffers.
 */
import { eventually } from "../support/wait.ts";
import { expect } from "bun:test";
import type { Socket } from "bun";
import { configFrom } from "../../src/config/load.ts";
import type { Config } from "../../src/config/types.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { Proxy } from "../../src/server.ts";
import type { Session } from "../../src/session/session.ts";
import { APP_DATABASE, AUTH_USERS } from "../support/cluster.ts";
import type { FakeServer } from "../support/fake-server.ts";
import { RawClient, dataRow, errorOf, type BackendMessage } from "../support/raw-client.ts";
import { query } from "../support/wire-frames.ts";

/** Login of the trust user into the app database: no password exchange, so raw sockets can log in. */
export const TRUST_LOGIN = { user: AUTH_USERS.trust.user, database: APP_DATABASE };

/** A client logs in through pgroute and gets an answer: what every fault test checks afterwards. */
export async function expectServed(port: number, login: Record<string, string> = TRUST_LOGIN): Promise<void> {
  const raw = await RawClient.connect(port);
  try {
    await raw.loginTrust(login);
    raw.send(query("select 'still served'"));
    const rows = (await raw.readUntil("Z")).filter((m) => m.type === "D").map(dataRow);
    // A real server answers with the text; the fake backend echoes the query.
    expect(rows).toHaveLength(1);
    expect(String(rows[0]![0])).toContain("still served");
  } finally {
    raw.close();
  }
}

/** The next message is a FATAL ErrorResponse with `code`, and then the connection closes. */
export async function expectFatal(raw: RawClient, code: string, message?: string | RegExp, timeoutMs = 5000): Promise<BackendMessage> {
  const m = await raw.next(timeoutMs);
  expect(m.type).toBe("E");
  const e = errorOf(m);
  expect(e.severity).toBe("FATAL");
  expect(e.code).toBe(code);
  if (typeof message === "string") expect(e.message).toBe(message);
  else if (message) expect(e.message).toMatch(message);
  await raw.waitClosed(timeoutMs);
  return m;
}

/** A logger at debug level that keeps every line it writes. */
export function capturingLogger(format: "text" | "json" = "text"): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger({ level: "debug", format }, (l) => lines.push(l)), lines };
}

/** pgroute's sessions, to look at what it holds per client. */
export function sessionsOf(proxy: Proxy): Session[] {
  return [...(proxy as unknown as { sessions: Set<Session> }).sessions];
}

/** Bytes pgroute has queued for a client that is not reading (its outbox). */
export function queuedFor(session: Session): number {
  return (session as unknown as { outbox: { queued: number } }).outbox.queued;
}

/** The client stops (or resumes) reading its socket, as an application that does not consume results. */
export function setReading(raw: RawClient, on: boolean): void {
  const socket = (raw as unknown as { socket: Socket<undefined> }).socket;
  if (on) socket.resume();
  else socket.pause();
}

export interface FakeProxy {
  proxy: Proxy;
  port: number;
  config: Config;
  stop(): Promise<void>;
}

/** pgroute in-process with one primary node: the fake backend. `raw` is merged over the defaults (TOML shape). */
export async function proxyOnFake(fake: FakeServer, raw: Record<string, unknown> = {}, log?: Logger): Promise<FakeProxy> {
  const config = configFrom({
    listen: { host: "127.0.0.1", port: 0 },
    nodes: [{ name: "fake", host: fake.host, port: fake.port, role: "primary" }],
    users: [{ name: TRUST_LOGIN.user, auth: "trust" }],
    log: { level: process.env.PGROUTE_TEST_LOG ?? "error" },
    // A fake server's faults are the relay's business, not a failover: its errors reach clients at once.
    failover: { primary_wait_timeout: 0 },
    ...raw,
  });
  const proxy = new Proxy({ config, log: log ?? createLogger(config.log) });
  const { port } = await proxy.listen();
  return { proxy, port, config, stop: () => proxy.stop() };
}

/** Polls `check` until true (a condition wait, never a blind sleep); fails after `timeoutMs` naming `what`. */
export const until = eventually;

/**
 * A client working next to a fault: one query after another on one connection, counting answers and anything
 * that goes wrong. Tests check it is still being answered.
 */
export class Bystander {
  answered = 0;
  failure: string | null = null;
  private running = true;
  private done: Promise<void> = Promise.resolve();

  async start(port: number, login: Record<string, string> = TRUST_LOGIN): Promise<void> {
    const raw = await RawClient.connect(port);
    await raw.loginTrust(login);
    this.done = (async () => {
      try {
        for (let i = 0; this.running; i++) {
          raw.send(query(`select ${i}`));
          const rows = (await raw.readUntil("Z", 10_000)).filter((m) => m.type === "D").map(dataRow);
          // A real server answers the number; the fake backend echoes the query text.
          const v = rows[0]?.[0];
          if (rows.length !== 1 || (v !== String(i) && v !== `select ${i}`)) throw new Error(`query ${i} answered ${JSON.stringify(rows)}`);
          this.answered++;
        }
      } catch (err) {
        this.failure = String(err);
      } finally {
        raw.close();
      }
    })();
  }

  /** Still answered: some more answers arrive, and nothing went wrong. */
  async stillAnswered(): Promise<void> {
    const from = this.answered;
    await until("the bystander to be answered again", () => this.failure !== null || this.answered >= from + 3);
    expect(this.failure).toBeNull();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    expect(this.failure).toBeNull();
  }
}

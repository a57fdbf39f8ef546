/**
 * A scripted PostgreSQL backend for fault tests. It does the real login dance for any user (trust:
 * AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery), answers every simple Query with one row
 * echoing its text (and the extended protocol minimally), and misbehaves wherever the test's script says so.
 * Point a pgroute node at `server.port`. Every byte it sends comes from wire-frames.ts.
 */
import type { Socket, TCPSocketListener } from "bun";
import { StartupCode } from "../../src/wire/codes.ts";
import {
  authenticationOk,
  backendKeyData,
  commandComplete,
  dataRowOf,
  frame,
  parameterStatus,
  readyForQuery,
  rowDescription,
} from "./wire-frames.ts";

const td = new TextDecoder();

/** One server-side connection, as a script sees it. */
export interface FakeBackend {
  readonly id: number;
  /** Startup parameters pgroute sent (user, database, …). */
  readonly params: ReadonlyMap<string, string>;
  send(...messages: Uint8Array[]): void;
  /** The normal answer to a simple Query: RowDescription, DataRow (the text), CommandComplete, ReadyForQuery. */
  answer(sql: string): void;
  /** Closes politely (FIN). */
  end(): void;
  /** Closes at once (RST). */
  terminate(): void;
}

export interface FakeServerScript {
  /**
   * Replaces the login reply; return true when handled (the backend then stays in the login phase: frontend
   * messages go to `onLoginMessage`).
   */
  onStartup?(be: FakeBackend): boolean;
  onLoginMessage?(type: string, body: Uint8Array, be: FakeBackend): void;
  /** A simple Query after login; return true when handled, else it gets the normal answer. */
  onQuery?(sql: string, be: FakeBackend): boolean | void;
}

export interface FakeServer {
  readonly host: string;
  readonly port: number;
  /** Logins completed (the normal dance). */
  readonly logins: number;
  /** Connections open right now. */
  readonly open: number;
  /** Queries received, in order. */
  readonly queries: string[];
  /** Ids of the backends whose connection has closed. */
  readonly closed: ReadonlySet<number>;
  stop(): void;
}

interface Conn {
  be: FakeBackend;
  buf: Uint8Array;
  phase: "startup" | "login" | "ready";
}

let nextId = 1;

/** Starts a fake backend on a free port of 127.0.0.1. */
export function startFakeServer(script: FakeServerScript = {}): FakeServer {
  let logins = 0;
  let open = 0;
  const queries: string[] = [];
  const closed = new Set<number>();

  const welcome = (be: FakeBackend) => {
    be.send(
      authenticationOk(),
      parameterStatus("server_version", "15.0 (fake)"),
      parameterStatus("server_encoding", "UTF8"),
      parameterStatus("client_encoding", "UTF8"),
      parameterStatus("in_hot_standby", "off"),
      parameterStatus("standard_conforming_strings", "on"),
      backendKeyData(be.id, 0x5eed),
      readyForQuery(0x49),
    );
    logins++;
  };

  const onMessage = (c: Conn, type: string, body: Uint8Array) => {
    const be = c.be;
    if (c.phase === "login") return script.onLoginMessage?.(type, body, be);
    switch (type) {
      case "Q": {
        const sql = td.decode(body.subarray(0, Math.max(0, body.length - 1)));
        queries.push(sql);
        if (script.onQuery?.(sql, be)) return;
        return be.answer(sql);
      }
      case "X":
        return be.end();
      case "P":
        return be.send(frame("1"));
      case "B":
        return be.send(frame("2"));
      case "D":
        return be.send(frame("n"));
      case "E":
        return be.send(commandComplete("SELECT 0"));
      case "C":
        return be.send(frame("3"));
      case "S":
        return be.send(readyForQuery(0x49));
    }
  };

  const consume = (c: Conn) => {
    for (;;) {
      if (c.phase === "startup") {
        if (c.buf.length < 8) return;
        const v = new DataView(c.buf.buffer, c.buf.byteOffset);
        const len = v.getUint32(0);
        if (c.buf.length < len) return;
        const code = v.getUint32(4);
        const packet = c.buf.subarray(0, len);
        c.buf = c.buf.subarray(len);
        if (code === StartupCode.SSLRequest || code === StartupCode.GSSENCRequest) {
          c.be.send(Uint8Array.of(0x4e));
          continue;
        }
        const params = c.be.params as Map<string, string>;
        const parts = td.decode(packet.subarray(8)).split("\0");
        for (let i = 0; i + 1 < parts.length && parts[i] !== ""; i += 2) params.set(parts[i]!, parts[i + 1]!);
        if (script.onStartup?.(c.be)) c.phase = "login";
        else {
          c.phase = "ready";
          welcome(c.be);
        }
        continue;
      }
      if (c.buf.length < 5) return;
      const len = new DataView(c.buf.buffer, c.buf.byteOffset).getUint32(1);
      if (c.buf.length < 1 + len) return;
      const type = String.fromCharCode(c.buf[0]!);
      const body = c.buf.slice(5, 1 + len);
      c.buf = c.buf.subarray(1 + len);
      onMessage(c, type, body);
    }
  };

  const listener: TCPSocketListener<Conn> = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket: Socket<Conn>) {
        open++;
        const id = nextId++;
        let closed = false;
        const be: FakeBackend = {
          id,
          params: new Map(),
          send(...messages) {
            if (closed) return;
            for (const m of messages) socket.write(m);
          },
          answer(sql) {
            be.send(rowDescription("echo"), dataRowOf(sql), commandComplete("SELECT 1"), readyForQuery(0x49));
          },
          end() {
            closed = true;
            socket.end();
          },
          terminate() {
            closed = true;
            socket.terminate();
          },
        };
        socket.data = { be, buf: new Uint8Array(0), phase: "startup" };
      },
      data(socket, chunk) {
        const c = socket.data;
        const next = new Uint8Array(c.buf.length + chunk.length);
        next.set(c.buf);
        next.set(chunk, c.buf.length);
        c.buf = next;
        consume(c);
      },
      close(socket) {
        open--;
        closed.add(socket.data.be.id);
      },
      error() {},
    },
  });

  return {
    host: "127.0.0.1",
    port: listener.port,
    get logins() {
      return logins;
    },
    get open() {
      return open;
    },
    queries,
    closed,
    stop: () => listener.stop(true),
  };
}

/**
 * A minimal raw-socket PostgreSQL client for protocol tests: it connects with Bun.connect, collects every byte
 * the peer sends, splits them into backend messages (type byte + Int32 length, PostgreSQL docs "Message
 * Formats") and lets a test wait — with a bounded timeout, never a sleep — for a given message, a number of raw
 * bytes (the single-byte answer to SSLRequest) or the close of the connection.
 */
import type { Socket } from "bun";
import { decodeError, type ErrorInfo } from "../../src/wire/backend.ts";
import { startup } from "./wire-frames.ts";

/** One backend message: its type letter and its body (type and length stripped). */
export interface BackendMessage {
  type: string;
  body: Uint8Array;
}

const td = new TextDecoder();

export class RawClient {
  /** Bytes received; those from `off` on are not yet consumed by a reader. */
  private buf = new Uint8Array(0);
  private off = 0;
  private closedFlag = false;
  private waiters: (() => void)[] = [];
  private socket!: Socket<undefined>;

  private constructor() {}

  /** Connects to `host:port`; rejects if the TCP connect fails. */
  static async connect(port: number, host = "127.0.0.1"): Promise<RawClient> {
    const c = new RawClient();
    const gone = () => {
      c.closedFlag = true;
      c.wake();
    };
    c.socket = await Bun.connect<undefined>({
      hostname: host,
      port,
      socket: {
        data(_s, chunk) {
          // Unread bytes are buf[off..]; appending compacts them, so reading is linear in what arrives.
          const unread = c.buf.length - c.off;
          const next = new Uint8Array(unread + chunk.length);
          next.set(c.buf.subarray(c.off));
          next.set(chunk, unread);
          c.buf = next;
          c.off = 0;
          c.wake();
        },
        close: gone,
        error: gone,
        end: gone,
      },
    });
    return c;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with `ready()`'s first defined value, re-checking on every arrival; rejects after `timeoutMs`. */
  private async until<T>(what: string, ready: () => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = ready();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** True once the peer closed the connection (or it failed). */
  get closed(): boolean {
    return this.closedFlag;
  }

  send(bytes: Uint8Array): void {
    if (this.closedFlag) throw new Error("send on a closed connection");
    const n = this.socket.write(bytes);
    if (n !== bytes.length) throw new Error(`short write: ${n} of ${bytes.length} bytes (test messages are small)`);
  }

  /** Exactly `n` raw bytes (for the one-byte answer to SSLRequest / GSSENCRequest). */
  readBytes(n: number, timeoutMs = 5000): Promise<Uint8Array> {
    return this.until(
      `${n} raw bytes`,
      () => {
        if (this.buf.length - this.off >= n) {
          const out = this.buf.slice(this.off, this.off + n);
          this.off += n;
          return out;
        }
        if (this.closedFlag) throw new Error(`connection closed with ${this.buf.length - this.off} of ${n} bytes`);
        return undefined;
      },
      timeoutMs,
    );
  }

  /** The next complete backend message. */
  next(timeoutMs = 5000): Promise<BackendMessage> {
    return this.until(
      "a backend message",
      () => {
        const m = this.take();
        if (m) return m;
        if (this.closedFlag) throw new Error(`connection closed (${this.buf.length - this.off} bytes of a partial message left)`);
        return undefined;
      },
      timeoutMs,
    );
  }

  /** Every message up to and including the first one of `type`. */
  async readUntil(type: string, timeoutMs = 5000): Promise<BackendMessage[]> {
    const deadline = Date.now() + timeoutMs;
    const out: BackendMessage[] = [];
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      out.push(m);
      if (m.type === type) return out;
    }
  }

  /** Resolves once the peer has closed the connection. */
  waitClosed(timeoutMs = 5000): Promise<true> {
    return this.until("the connection to close", () => (this.closedFlag ? true : undefined), timeoutMs);
  }

  /** Complete messages that arrived and have not been read, without waiting. */
  drain(): BackendMessage[] {
    const out: BackendMessage[] = [];
    for (let m = this.take(); m; m = this.take()) out.push(m);
    return out;
  }

  private take(): BackendMessage | undefined {
    const at = this.off;
    if (this.buf.length - at < 5) return undefined;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset + at + 1, 4).getUint32(0);
    if (this.buf.length - at < 1 + len) return undefined;
    const m = { type: String.fromCharCode(this.buf[at]!), body: this.buf.slice(at + 5, at + 1 + len) };
    this.off = at + 1 + len;
    return m;
  }

  /**
   * Sends a StartupMessage for a user that needs no password (trust) and reads up to ReadyForQuery.
   * Returns the login messages and the BackendKeyData the proxy sent.
   */
  async loginTrust(params: Record<string, string>, timeoutMs = 5000): Promise<{ messages: BackendMessage[]; pid: number; secret: number }> {
    this.send(startup(params));
    return this.finishLogin(timeoutMs);
  }

  /** Reads the rest of a login (up to ReadyForQuery); throws with the message of an ErrorResponse. */
  async finishLogin(timeoutMs = 5000): Promise<{ messages: BackendMessage[]; pid: number; secret: number }> {
    const messages = await this.readUntil("Z", timeoutMs);
    const err = messages.find((m) => m.type === "E");
    if (err) throw new Error(`login failed: ${errorOf(err).message}`);
    const key = messages.find((m) => m.type === "K");
    if (!key) throw new Error("no BackendKeyData during login");
    const v = new DataView(key.body.buffer, key.body.byteOffset, 8);
    return { messages, pid: v.getInt32(0), secret: v.getInt32(4) };
  }

  /** Closes the socket at once. */
  close(): void {
    this.socket.terminate();
  }
}

/** Decodes an ErrorResponse or NoticeResponse body. */
export function errorOf(m: BackendMessage): ErrorInfo {
  return decodeError(m.body, 0, m.body.length);
}

/** The column values of a DataRow body, as text (NULL → null). */
export function dataRow(m: BackendMessage): (string | null)[] {
  const v = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
  const n = v.getInt16(0);
  const out: (string | null)[] = [];
  let at = 2;
  for (let i = 0; i < n; i++) {
    const len = v.getInt32(at);
    at += 4;
    if (len < 0) out.push(null);
    else {
      out.push(td.decode(m.body.subarray(at, at + len)));
      at += len;
    }
  }
  return out;
}

/** The NUL-terminated strings of a body from `from` on (CommandComplete, ParameterStatus, NegotiateProtocolVersion). */
export function cstrings(body: Uint8Array, from = 0): string[] {
  const out: string[] = [];
  let i = from;
  while (i < body.length) {
    const z = body.indexOf(0, i);
    if (z < 0) break;
    out.push(td.decode(body.subarray(i, z)));
    i = z + 1;
  }
  return out;
}

/** Polls `check` until it returns true; fails after `timeoutMs` (a condition wait, not a sleep). */
export { eventually } from "./wait.ts";

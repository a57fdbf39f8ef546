/**
 * TLS towards a PostgreSQL server, with libpq's `sslmode` semantics (PostgreSQL docs, "SSL Support" in libpq,
 * and protocol "SSL Session Encryption"): on a fresh TCP connection pgroute sends an SSLRequest and reads the
 * server's one-byte answer before anything else. 'S' → TLS handshake on the same socket (Bun `upgradeTLS`),
 * then the certificate is judged by the mode; 'N' → plaintext on the same socket, for `prefer` only.
 *
 * | sslmode     | encryption                | certificate check                                                 |
 * |-------------|---------------------------|-------------------------------------------------------------------|
 * | disable     | never (no SSLRequest)     | —                                                                 |
 * | prefer      | if the server offers it   | none                                                              |
 * | require     | always                    | none; with `sslrootcert` set, as verify-ca (libpq does the same)  |
 * | verify-ca   | always                    | chain up to `sslrootcert`                                          |
 * | verify-full | always                    | chain (to `sslrootcert`, else the public CAs) and host name       |
 *
 * The handshake runs with `rejectUnauthorized: false` and the verdict is taken here from Bun's authorization
 * error, because Bun has no `checkServerIdentity` and verify-ca must accept a certificate whose name differs.
 * Bun reports a chain error before a name mismatch, so an `ERR_TLS_CERT_ALTNAME_INVALID` means the chain passed.
 */
import type { Socket, SocketHandler, TLSOptions } from "bun";
import { isIP } from "node:net";
import { readFile } from "node:fs/promises";
import type { NodeConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";

/** SSLRequest: length 8, code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST = Uint8Array.of(0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f);
const S = 0x53;
const N = 0x4e;
const E = 0x45;

/** Bun's code for a certificate that chains fine but names another host. */
const NAME_MISMATCH = "ERR_TLS_CERT_ALTNAME_INVALID";

/** What the TLS step needs to know about a node. */
export type TlsNode = Pick<NodeConfig, "name" | "host" | "port" | "sslmode" | "sslrootcert">;

/** How a certificate is judged once the handshake is done. */
type Check = "none" | "chain" | "full";

function checkOf(node: TlsNode): Check {
  switch (node.sslmode) {
    case "disable":
    case "prefer":
      return "none";
    case "require":
      return node.sslrootcert === undefined ? "none" : "chain";
    case "verify-ca":
      return "chain";
    case "verify-full":
      return "full";
  }
}

/**
 * True when `ok` false means the handshake itself failed (a socket error such as EPROTO or ECONNRESET, or an
 * OpenSSL protocol error) rather than a certificate that did not verify: Bun reports both the same way, and
 * with `rejectUnauthorized: false` a name mismatch alone makes `ok` false too. X.509 verification errors carry
 * OpenSSL's names (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED, …) or ERR_TLS_CERT_ALTNAME_INVALID.
 */
function handshakeFailed(error: Error | null): boolean {
  const code = (error as (Error & { code?: string }) | null)?.code;
  return code === undefined || /^E[A-Z]+$/.test(code) || code.startsWith("ERR_SSL");
}

/** Why the certificate is refused, or null when `check` accepts it. */
function verdict(check: Check, error: Error | null): string | null {
  if (check === "none" || error === null) return null;
  const code = (error as Error & { code?: string }).code;
  if (check === "chain" && code === NAME_MISMATCH) return null;
  return `${error.message}${code && !error.message.includes(code) ? ` (${code})` : ""}`;
}

/**
 * Opens a connection to `node` ready for the StartupMessage: plain TCP for `sslmode = "disable"`, otherwise
 * after the SSLRequest exchange and, when the server agreed, a TLS handshake whose certificate passed the
 * mode's checks. The socket it resolves with has `handlers` and `data`, as `Bun.connect` would give it.
 *
 * Rejects with a 08001 {@link PgError} naming the node: the server refused TLS that the mode requires, the
 * certificate failed verification, the handshake failed, the server sent bytes behind its answer
 * (CVE-2021-23222: they could not have come over TLS), or `signal` aborted.
 */
export async function openServerSocket<T>(node: TlsNode, handlers: SocketHandler<T>, data: T, signal?: AbortSignal): Promise<Socket<T>> {
  if (node.sslmode === "disable") {
    return Bun.connect<T>({ hostname: node.host, port: node.port, socket: handlers, data });
  }
  const check = checkOf(node);
  let ca: string | undefined;
  if (node.sslrootcert !== undefined) {
    try {
      ca = await readFile(node.sslrootcert, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw fail(node, `cannot read sslrootcert ${node.sslrootcert}: ${code === "ENOENT" ? "no such file" : (code ?? String(err))}`);
    }
  }
  signal?.throwIfAborted();
  return new Promise<Socket<T>>((resolve, reject) => {
    /** reply: waiting for 'S'/'N'; handshake: upgraded, waiting for the verdict; done: resolved or rejected. */
    let state: "connecting" | "reply" | "handshake" | "done" = "connecting";
    let raw: Socket<T> | null = null;
    let secure: Socket<T> | null = null;

    const settle = (error: PgError | null, socket?: Socket<T>) => {
      if (state === "done") return;
      state = "done";
      signal?.removeEventListener("abort", onAbort);
      if (error) {
        secure?.terminate();
        raw?.terminate();
        reject(error);
      } else resolve(socket!);
    };
    const onAbort = () => settle(fail(node, "aborted during SSL negotiation"));
    signal?.addEventListener("abort", onAbort, { once: true });

    // The handshake's handlers: the caller's, once the certificate is accepted.
    const tlsHandlers: SocketHandler<T> = {
      ...handlers,
      open() {},
      handshake(socket, ok, authorizationError) {
        if (state !== "handshake") return;
        if (!ok && handshakeFailed(authorizationError)) {
          return settle(fail(node, `SSL handshake failed: ${authorizationError?.message ?? "unknown error"}`));
        }
        const refused = verdict(check, authorizationError);
        if (refused) return settle(fail(node, `SSL certificate verification failed (sslmode "${node.sslmode}"): ${refused}`));
        settle(null, socket);
      },
      close(socket, error) {
        if (state !== "done") return settle(fail(node, `SSL handshake failed: ${error?.message ?? "the server closed the connection"}`));
        handlers.close?.(socket, error);
      },
      error(socket, error) {
        if (state !== "done") return settle(fail(node, `SSL handshake failed: ${error.message}`));
        handlers.error?.(socket, error);
      },
    };

    // The raw socket's handlers: the answer to the SSLRequest. After an upgrade Bun still reports the raw
    // (encrypted) bytes and the close here; the TLS socket has its own handlers for both.
    const negotiation: SocketHandler<T> = {
      data(socket, chunk) {
        if (state !== "reply") return;
        const answer = chunk[0];
        if (answer === E) {
          // Servers before 7.0 answered so; anything newer errs here only when it is in trouble.
          return settle(fail(node, "the server answered the SSLRequest with an error"));
        }
        if (chunk.length > 1) return settle(fail(node, "received unencrypted data after SSL response"));
        if (answer === N) {
          if (node.sslmode !== "prefer") {
            return settle(fail(node, `the server does not support SSL, but sslmode is "${node.sslmode}"`));
          }
          // prefer: plaintext on this same connection, now with the caller's handlers.
          socket.reload({ socket: handlers });
          return settle(null, socket);
        }
        if (answer !== S) return settle(fail(node, `unexpected answer to the SSLRequest (byte ${answer})`));
        state = "handshake";
        const tls: TLSOptions = { rejectUnauthorized: false, ca };
        // SNI and the name checked are the host; an IP address is checked as the connect address (no SNI).
        if (!isIP(node.host)) tls.serverName = node.host;
        try {
          [, secure] = socket.upgradeTLS<T>({ tls, socket: tlsHandlers, data });
        } catch (err) {
          settle(fail(node, `SSL handshake failed: ${(err as Error).message}`));
        }
      },
      close() {
        if (state === "reply") settle(errors.unreachable(node.name, "the server closed the connection during SSL negotiation"));
      },
      error(_socket, error) {
        if (state === "reply") settle(fail(node, `SSL negotiation failed: ${error.message}`));
      },
    };

    Bun.connect<T>({ hostname: node.host, port: node.port, socket: negotiation, data }).then(
      (socket) => {
        if (state === "done") return socket.terminate(); // aborted while the TCP connect was under way
        raw = socket;
        state = "reply";
        socket.write(SSL_REQUEST);
      },
      (err: Error) => settle(errors.unreachable(node.name, err.message)),
    );
  });
}

function fail(node: TlsNode, why: string): PgError {
  return errors.cannotConnect(node.name, why);
}

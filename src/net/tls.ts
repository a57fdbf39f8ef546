/**
 * TLS towards clients (PostgreSQL protocol docs, "SSL Session Encryption"): the certificate pgroute serves,
 * loaded from PEM files and swappable while running, and the upgrade of a client socket whose SSLRequest was
 * answered 'S'.
 *
 * The upgrade uses Bun's `socket.upgradeTLS` on the accepted socket: from then on every byte goes through the
 * TLS socket it returns. Bun keeps reporting the raw (still encrypted) bytes to the listener's handlers too;
 * those are not protocol data and only the first of them is looked at: a TLS stream starts with a handshake
 * record (content type 22), so any other first byte is plaintext the client sent after 'S' — the
 * CVE-2021-23214 class of injected data — and the connection ends with 08P01.
 */
import type { Socket, SocketHandler, TLSOptions } from "bun";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import type { ClientTlsMode, TlsConfig } from "../config/types.ts";
import { PgError } from "../errors.ts";

/** The certificate or key files cannot be used. `message` is `key.path: what is wrong`, as config errors are. */
export class TlsLoadError extends Error {
  override readonly name = "TlsLoadError";
  constructor(
    /** The config key whose file is at fault: "tls.cert" or "tls.key". */
    readonly path: string,
    /** What is wrong, without the key path. */
    readonly reason: string,
  ) {
    super(`${path}: ${reason}`);
  }
}

/** A certificate and its key, read and checked, ready for handshakes. */
export interface ServedCert {
  readonly cert: string;
  readonly key: string;
  /** The leaf certificate's subject, e.g. "CN=db.example.com", for logs. */
  readonly subject: string;
  /** subjectAltName of the leaf, e.g. "DNS:localhost, IP Address:127.0.0.1" ("" when it has none). */
  readonly altNames: string;
  /** Expiry of the leaf, as OpenSSL prints it. */
  readonly validTo: string;
  /** SHA-256 fingerprint of the leaf. */
  readonly fingerprint: string;
}

function readPem(path: string, key: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EISDIR" ? "is a directory" : (code ?? String(err));
    throw new TlsLoadError(key, `cannot read ${path}: ${why}`);
  }
}

/**
 * Reads and checks a certificate chain and its private key: both parse, the key belongs to the first
 * certificate, and OpenSSL accepts the pair. Synchronous (small files, read at startup and on SIGHUP only), so
 * it fits a reload step. Throws {@link TlsLoadError} otherwise.
 */
export function loadServedCert(certPath: string, keyPath: string): ServedCert {
  const cert = readPem(certPath, "tls.cert");
  const key = readPem(keyPath, "tls.key");
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new TlsLoadError("tls.cert", `${certPath} is not a PEM certificate (${(err as Error).message})`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new TlsLoadError("tls.key", `${keyPath} is not a usable PEM private key (${(err as Error).message})`);
  }
  if (!matches) throw new TlsLoadError("tls.key", `${keyPath} is not the private key of the certificate in ${certPath}`);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsLoadError("tls.cert", `${certPath} with ${keyPath} is refused by OpenSSL (${(err as Error).message})`);
  }
  return {
    cert,
    key,
    subject: leaf.subject.replaceAll("\n", ", "),
    altNames: leaf.subjectAltName ?? "",
    validTo: leaf.validTo,
    fingerprint: leaf.fingerprint256,
  };
}

/**
 * What pgroute offers clients: the `[tls]` mode and the certificate new handshakes use. One instance lives as
 * long as the proxy. {@link ClientTls.prepare} reads and checks the files first and returns the swap, so a
 * reload that fails leaves the previous mode and certificate serving; sessions already encrypted keep the
 * certificate they were handshaken with either way.
 */
export class ClientTls {
  private currentMode: ClientTlsMode = "disable";
  private served: ServedCert | null = null;
  private tlsOptions: TLSOptions | null = null;

  /** The mode new connections get. */
  get mode(): ClientTlsMode {
    return this.currentMode;
  }

  /** The certificate new handshakes use (null when the mode is "disable"). */
  get certificate(): ServedCert | null {
    return this.served;
  }

  /** Options for `upgradeTLS`, or null when TLS is not offered (SSLRequest is answered 'N'). */
  get options(): TLSOptions | null {
    return this.currentMode === "disable" ? null : this.tlsOptions;
  }

  /**
   * Reads and checks the files `cfg` names (nothing for mode "disable") and returns the function that switches
   * to them; nothing changes until it is called.
   * @throws TlsLoadError when a file cannot be read or used.
   */
  prepare(cfg: TlsConfig): () => ServedCert | null {
    if (cfg.mode === "disable") {
      return () => {
        this.currentMode = "disable";
        this.served = null;
        this.tlsOptions = null;
        return null;
      };
    }
    // The schema requires both for allow/require; a config built by hand may still lack them.
    if (cfg.cert === undefined) throw new TlsLoadError("tls.cert", `required when tls.mode is "${cfg.mode}"`);
    if (cfg.key === undefined) throw new TlsLoadError("tls.key", `required when tls.mode is "${cfg.mode}"`);
    const served = loadServedCert(cfg.cert, cfg.key);
    const mode = cfg.mode;
    return () => {
      this.currentMode = mode;
      this.served = served;
      this.tlsOptions = Object.freeze({ cert: served.cert, key: served.key });
      return served;
    };
  }

  /** {@link prepare} and switch at once. @throws TlsLoadError, keeping the previous state. */
  load(cfg: TlsConfig): ServedCert | null {
    return this.prepare(cfg)();
  }
}

/** The Session side of an upgraded connection: where the decrypted stream and the TLS socket's events go. */
export interface SecureSink {
  onSecureData(chunk: Uint8Array): void;
  onSecureDrain(): void;
  /** The TLS connection is gone (closed, failed handshake, or an error). */
  onSecureClose(error?: Error): void;
  /** The handshake finished (`protocol` is e.g. "TLSv1.3"), or failed (`error`). */
  onSecureHandshake?(ok: boolean, protocol: string, error: Error | null): void;
}

/** Handlers of every upgraded client socket; the socket's data is its session. */
const secureHandlers: SocketHandler<SecureSink> = {
  open() {},
  handshake(socket, ok, error) {
    // A server does not request client certificates here, so `error` (e.g. "unable to get issuer certificate")
    // is about a certificate that was never asked for; `ok` false means the handshake itself failed.
    socket.data.onSecureHandshake?.(ok, ok ? socket.getTLSVersion() : "", ok ? null : error);
  },
  data(socket, chunk) {
    socket.data.onSecureData(chunk);
  },
  drain(socket) {
    socket.data.onSecureDrain();
  },
  close(socket, error) {
    socket.data.onSecureClose(error);
  },
  error(socket, error) {
    socket.data.onSecureClose(error);
  },
};

/** TLS record content type of a handshake message (RFC 8446 §5.1): the first byte of every TLS stream. */
const TLS_HANDSHAKE_RECORD = 22;

/**
 * A client connection after 'S': the TLS socket all protocol I/O goes through, and the raw socket under it.
 * Create with {@link upgradeClient} right after writing 'S', in the same turn as the SSLRequest was read, so no
 * byte read from the raw socket can be taken for protocol data.
 */
export class ClientTlsLink<S extends SecureSink> {
  private sawRaw = false;

  constructor(
    /** The TCP connection under the TLS layer (as `upgradeTLS` returns it), for a plaintext refusal. */
    private readonly raw: Socket<S>,
    /** Where every protocol byte is written and read from now on. */
    readonly socket: Socket<S>,
  ) {}

  /**
   * Bun reported raw bytes of the upgraded connection to the listener. Returns an error when they cannot be a
   * TLS stream (the first byte is not a handshake record): plaintext after 'S'.
   */
  checkRaw(chunk: Uint8Array): PgError | null {
    if (this.sawRaw || chunk.length === 0) return null;
    this.sawRaw = true;
    return chunk[0] === TLS_HANDSHAKE_RECORD ? null : unencryptedAfterSslRequest();
  }

  /**
   * Sends `error` in plaintext on the raw socket (the client never got a TLS connection, so that is the only
   * channel it can read, as Postgres does) and closes both sockets.
   */
  refuse(error: PgError): void {
    this.raw.write(error.toMessage());
    this.raw.end(); // the TLS socket closes with it; terminating it instead could reset the error away
  }
}

/** Upgrades `raw` (whose SSLRequest was just answered 'S') to a TLS server connection for `sink`. */
export function upgradeClient<S extends SecureSink>(raw: Socket<S>, options: TLSOptions, sink: S): ClientTlsLink<S> {
  // Writes to the raw connection after the upgrade go through the first socket returned (the accepted one no
  // longer writes).
  const [under, secure] = raw.upgradeTLS<S>({ tls: options, socket: secureHandlers as unknown as SocketHandler<S>, data: sink });
  return new ClientTlsLink(under, secure);
}

/** 08P01: bytes arrived behind the SSLRequest, before any handshake (Postgres's wording and detail). */
export function unencryptedAfterSslRequest(): PgError {
  return new PgError(
    "08P01",
    "received unencrypted data after SSL request",
    "FATAL",
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.",
  );
}

/** 08P01: an SSLRequest or GSSENCRequest on a connection that is already encrypted. */
export function secondEncryptionRequest(): PgError {
  return new PgError("08P01", "unexpected encryption request on an already encrypted connection", "FATAL");
}

/** 28000: a plaintext login while `tls.mode` is "require" (like a hostssl-only pg_hba.conf: "no encryption"). */
export function sslRequired(host: string, user: string, database: string): PgError {
  return new PgError(
    "28000",
    `SSL required: connection refused for host "${host}", user "${user}", database "${database}", no encryption`,
    "FATAL",
    undefined,
    "pgroute accepts only encrypted connections; connect with sslmode=require or stronger.",
  );
}

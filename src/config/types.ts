/**
 * The shape of a validated pgroute configuration. `load.ts` turns a TOML file into one frozen `Config`;
 * everything else reads it and never mutates it (a reload builds a new snapshot and swaps it in).
 *
 * Durations are stored in milliseconds and sizes in bytes, whatever unit the TOML used.
 */

export type PoolMode = "session" | "transaction";
export type NodeRole = "primary" | "replica" | "auto";
/** How a client proves who it is to pgroute. */
export type ClientAuthMethod = "scram-sha-256" | "md5" | "trust";
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
/** TLS towards clients: never offered, offered, or demanded (a plaintext StartupMessage gets FATAL 28000). */
export type ClientTlsMode = "disable" | "allow" | "require";
/** TLS towards a server, with libpq's meaning of each `sslmode`. */
export type ServerSslMode = "disable" | "prefer" | "require" | "verify-ca" | "verify-full";

export interface ListenConfig {
  readonly host: string;
  readonly port: number;
}

export interface NodeConfig {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly role: NodeRole;
  readonly weight: number;
  readonly zone: string;
  /** TLS to this server: `prefer` tries it and falls back to plaintext on 'N'; `require`/`verify-*` never do. */
  readonly sslmode: ServerSslMode;
  /** CA certificates (PEM file) trusted for this server's certificate; default: the well-known public CAs. */
  readonly sslrootcert?: string;
}

export interface UserConfig {
  readonly name: string;
  /** Plaintext password: verifies clients (any method) and logs in to servers. */
  readonly password?: string;
  /** `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` as in pg_authid; verifies SCRAM clients. */
  readonly scram_verifier?: string;
  /** `md5` + md5(password + username) as in pg_authid; verifies md5 clients. */
  readonly md5_hash?: string;
  readonly auth: ClientAuthMethod;
  /** Databases this user may connect to; empty means any. */
  readonly databases: readonly string[];
  /** Role pgroute logs in to servers as (default: the same name). */
  readonly server_user?: string;
  /** Password pgroute uses for servers (default: `password`, else SCRAM pass-through of the client's key). */
  readonly server_password?: string;
  /** Where this user's statements go by default: `auto` decides per statement. */
  readonly target: "primary" | "replica" | "auto";
  /** This user's own rate limits (statements and transaction starts per second, over all its connections); absent: `[ratelimit]`'s user_* values. 0: no limit. */
  readonly queries_per_second?: number;
  readonly queries_burst?: number;
  readonly transactions_per_second?: number;
  readonly transactions_burst?: number;
}

export interface PoolConfig {
  readonly mode: PoolMode;
  /** Server connections per (node, user, database). */
  readonly size: number;
  readonly checkout_timeout_ms: number;
  readonly idle_timeout_ms: number;
  readonly max_lifetime_ms: number;
  /** Server connections idle longer than this are validated before reuse. */
  readonly validate_after_ms: number;
  /** How long pgroute waits for a server to accept a connection and log in. */
  readonly connect_timeout_ms: number;
  /** Prepared statements kept per server connection in transaction mode (least recently used are closed). */
  readonly prepared_statements: number;
}

export interface LimitsConfig {
  readonly max_client_connections: number;
  readonly max_message_size: number;
  readonly login_timeout_ms: number;
  /**
   * Bytes pgroute may hold for a client that is not reading its results; past this the client is disconnected
   * (and its server connection closed, since results were in flight).
   */
  readonly client_buffer: number;
  /** How long a graceful shutdown (SIGTERM) lets running transactions finish before ending them with 57P01. */
  readonly shutdown_timeout_ms: number;
}

export interface RoutingConfig {
  /** `primary`: BEGIN pins a transaction to the primary; `first-statement`: the first statement decides. */
  readonly transactions: "primary" | "first-statement";
  /** Functions that must run on the primary, besides Postgres's own (e.g. "myschema.touch_session"). */
  readonly write_functions: readonly string[];
  /** User functions known to be read-only, which may run on replicas. */
  readonly read_functions: readonly string[];
}

export interface TlsConfig {
  readonly mode: ClientTlsMode;
  /** PEM certificate chain file served to clients (required unless `mode` is "disable"). */
  readonly cert?: string;
  /** PEM private key file of `cert`. */
  readonly key?: string;
}

/**
 * Token-bucket rate limits (src/policy/ratelimit.ts). Each limit is a rate per second (0: off) and a burst (0: the
 * rate rounded up, at least 1): statements (`queries`) and transaction starts (`transactions`) per user, per
 * client address and per statement fingerprint, and new connections per client address.
 */
export interface RateLimitConfig {
  /** How long a statement over a limit may wait for its turn before ERROR 53400 (0: refused at once). */
  readonly max_wait_ms: number;
  readonly user_queries_per_second: number;
  readonly user_queries_burst: number;
  readonly user_transactions_per_second: number;
  readonly user_transactions_burst: number;
  readonly address_queries_per_second: number;
  readonly address_queries_burst: number;
  readonly address_transactions_per_second: number;
  readonly address_transactions_burst: number;
  readonly fingerprint_queries_per_second: number;
  readonly fingerprint_queries_burst: number;
  readonly fingerprint_transactions_per_second: number;
  readonly fingerprint_transactions_burst: number;
  /** New client connections per second from one address; over it, FATAL 53300. */
  readonly connections_per_second: number;
  readonly connections_burst: number;
}

/** Mirroring a sample of the traffic to a shadow database (src/policy/mirror.ts). */
export interface MirrorConfig {
  /** `postgres://user:password@host:port/dbname?sslmode=…` of the shadow; absent: mirroring is off. */
  readonly url?: string;
  /** Share of eligible requests mirrored, 0 to 1. */
  readonly fraction: number;
  /** Mirror writes too (autocommit only), not just reads. */
  readonly writes: boolean;
  /** Sampled requests waiting for the shadow; more are dropped (and counted). */
  readonly queue_size: number;
  /** Requests running on the shadow at once (its connections). */
  readonly concurrency: number;
  /** A shadow request running longer is abandoned (its connection closed) and counted. */
  readonly timeout_ms: number;
}

export interface LogConfig {
  readonly level: LogLevel;
  readonly format: LogFormat;
}

export interface Config {
  readonly listen: ListenConfig;
  readonly nodes: readonly NodeConfig[];
  readonly users: readonly UserConfig[];
  readonly pool: PoolConfig;
  readonly limits: LimitsConfig;
  readonly routing: RoutingConfig;
  readonly tls: TlsConfig;
  readonly ratelimit: RateLimitConfig;
  readonly mirror: MirrorConfig;
  readonly log: LogConfig;
}

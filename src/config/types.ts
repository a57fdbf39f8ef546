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

/** How a replica is chosen for a read among those that may take it (src/cluster/balance.ts). */
export type BalanceStrategy = "weighted" | "least_connections" | "latency" | "round_robin" | "random";

/** The health monitor (src/monitor/): dedicated connections to every node, tiered checks. */
export interface MonitorConfig {
  /** False: no probes; roles come from server logins and health from live traffic only. */
  readonly enabled: boolean;
  /** Role the monitor logs in as (default: the first `[[users]]` entry with a server password). */
  readonly user?: string;
  readonly password?: string;
  readonly database: string;
  /** The lightweight check: role and WAL position. */
  readonly ping_interval_ms: number;
  readonly ping_timeout_ms: number;
  /** The detailed check: activity, connections, replication, CPU. */
  readonly probe_interval_ms: number;
  readonly probe_timeout_ms: number;
  /** Cap of the exponential (jittered) backoff between reconnection attempts to a node that is down. */
  readonly reconnect_max_ms: number;
  /** A table the monitor writes the time into on the primary and reads on replicas, for sub-second time lag. */
  readonly heartbeat_table?: string;
  readonly heartbeat_interval_ms: number;
  /** A query returning one number, the node's CPU busy fraction 0–1 (default: active backends / max_connections). */
  readonly cpu_query?: string;
}

/** How reads are spread over replicas, and which replicas are fresh enough to take them. */
export interface BalanceConfig {
  readonly strategy: BalanceStrategy;
  /** The zone reads prefer (pgroute's own zone): replicas there first, others only when none is healthy. */
  readonly prefer_zone: string;
  /** A replica further behind than this gets no reads. */
  readonly max_lag_ms: number;
  readonly max_lag_bytes?: number;
  /** Overrides of `max_lag` for replicas in the client's zone and in other zones. */
  readonly max_lag_local_ms?: number;
  readonly max_lag_remote_ms?: number;
  /** Time constant of the latency strategy's moving average of observed latency. */
  readonly latency_decay_ms: number;
}

/** The replica health score: each signal mapped to 0–100 between its good and bad thresholds, then weighted. */
export interface HealthConfig {
  /** Sliding window of what pgroute observed per node: latency p99 and error rate. */
  readonly window_ms: number;
  /** Replicas scoring below this get no reads (0: never excluded for their score). */
  readonly min_score: number;
  readonly weight_lag: number;
  readonly weight_latency: number;
  readonly weight_errors: number;
  readonly weight_load: number;
  readonly weight_queue: number;
  readonly weight_breaker: number;
  readonly lag_good_ms: number;
  readonly lag_bad_ms: number;
  readonly latency_good_ms: number;
  readonly latency_bad_ms: number;
  readonly error_rate_bad: number;
  readonly load_good: number;
  readonly load_bad: number;
  readonly queue_good: number;
  readonly queue_bad: number;
}

/** Per-node circuit breakers: closed → open → half-open → closed. */
export interface BreakerConfig {
  /** Consecutive failures that open it. */
  readonly failures: number;
  /** Share of requests failing for the node's sake, over `health.window`, that opens it. */
  readonly error_rate: number;
  /** Requests in the window before the error rate counts. */
  readonly min_requests: number;
  readonly cooldown_ms: number;
  readonly max_cooldown_ms: number;
  /** Trial requests let through half-open; that many successes close it. */
  readonly half_open_trials: number;
}

export interface TlsConfig {
  readonly mode: ClientTlsMode;
  /** PEM certificate chain file served to clients (required unless `mode` is "disable"). */
  readonly cert?: string;
  /** PEM private key file of `cert`. */
  readonly key?: string;
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
  readonly balance: BalanceConfig;
  readonly monitor: MonitorConfig;
  readonly health: HealthConfig;
  readonly breaker: BreakerConfig;
  readonly tls: TlsConfig;
  readonly log: LogConfig;
}

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
/**
 * What a user may do: `read-write` (the default), `read-only` (every statement must be read-only; writes get 25006
 * from pgroute and reach no server) or `admin` (read-write, and may use the admin console).
 */
export type UserRole = "read-write" | "read-only" | "admin";
/** What a firewall rule looks at (see src/policy/firewall.ts). */
export type FirewallRuleKind = "statement" | "missing_where" | "unbounded_select" | "select_star" | "tables" | "functions";
/**
 * Read-your-writes for a session's reads after it wrote: `none` (reads go to any fresh-enough replica), `sticky`
 * (to the primary for `consistency.sticky` after a write), `lsn` (only to replicas that replayed the write's WAL).
 */
export type ConsistencyMode = "none" | "sticky" | "lsn";
/** `deny`: ERROR 42501 and the statement never reaches a server; `log`: a log line, and the statement runs. */
export type FirewallAction = "deny" | "log";

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
  /** What the user may do (default `read-write`); only `admin` users may change pgroute from the admin console. */
  readonly role?: UserRole;
  /** The availability zone this user's clients run in (for zone-aware balancing). */
  readonly zone?: string;
  /** Longest a statement may run (ms, 0: no limit); absent: `[policy] statement_timeout`. */
  readonly statement_timeout_ms?: number;
  /** Longest a client may sit idle inside a transaction (ms, 0: no limit); absent: the `[policy]` default. */
  readonly idle_in_transaction_timeout_ms?: number;
  /** This user's own rate limits (statements and transaction starts per second, over all its connections); absent: `[ratelimit]`'s user_* values. 0: no limit. */
  readonly queries_per_second?: number;
  readonly queries_burst?: number;
  readonly transactions_per_second?: number;
  readonly transactions_burst?: number;
  /** Read-your-writes for this user's sessions; absent: `[consistency] mode`. */
  readonly consistency?: ConsistencyMode;
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

/** The admin HTTP listener (metrics, JSON API, dashboard). */
export interface AdminConfig {
  /** Where it listens; null: no admin listener. */
  readonly listen: ListenConfig | null;
  /** Bearer token the API and /metrics require; mandatory for a listener that is not on a loopback address. */
  readonly token?: string;
  /** Query fingerprints tracked for counts and latency (the busiest are kept). */
  readonly top_queries: number;
}

/** Defaults of the per-user policies. */
export interface PolicyConfig {
  /** The longest any statement may run on a server (ms); a client may lower it, not raise it. 0: no limit. */
  readonly statement_timeout_ms: number;
  /** A client idle inside a transaction longer than this has it rolled back (ms). 0: no limit. */
  readonly idle_in_transaction_timeout_ms: number;
}

export interface FirewallRuleConfig {
  readonly name: string;
  readonly kind: FirewallRuleKind;
  readonly action: FirewallAction;
  /** Told to the client with the rule's name. */
  readonly message: string;
  /** Users the rule applies to; empty: every user. */
  readonly users: readonly string[];
  /** `statement`: command tags or their leading words ("DROP", "ALTER SYSTEM"); `missing_where`: DELETE and/or UPDATE. */
  readonly statements?: readonly string[];
  /** `unbounded_select`: tables with more rows than this. */
  readonly min_rows?: number;
  /** `select_star`: tables with more columns than this. */
  readonly max_columns?: number;
  /** `tables`: names as in SQL (`accounts`, `billing.invoices`, `"Mixed"`). */
  readonly tables?: readonly string[];
  /** `functions`: names as in SQL (`pg_sleep`, `app.purge`). */
  readonly functions?: readonly string[];
}

export interface FirewallConfig {
  /** How often table sizes (pg_class.reltuples, column counts) are reloaded for the size rules. */
  readonly stats_interval_ms: number;
  /** The user whose password logs the table-size monitor in (default: the first user with a password). */
  readonly stats_user?: string;
  readonly rules: readonly FirewallRuleConfig[];
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

/** Read-your-writes (src/session/consistency.ts). */
export interface ConsistencyConfig {
  /** The default for users without their own `consistency`. */
  readonly mode: ConsistencyMode;
  /** `sticky`: how long a session's reads stay on the primary after it committed a write. */
  readonly sticky_ms: number;
  /** `lsn`: how long a read may wait for a replica to replay the session's last write before it goes to the primary. */
  readonly wait_ms: number;
  /** How often the monitor reads replicas' replay positions while a session needs them (`lsn`, `pgroute.min_lsn`). */
  readonly lsn_poll_interval_ms: number;
}

/** Following the cluster's primary through a failover (src/monitor/failover.ts). */
export interface FailoverConfig {
  /** Consecutive failed checks after which a node is down (the primary then is no longer used). */
  readonly failures: number;
  /** How long a write waits for a primary when none can be reached, before 57P03 (0: fail at once). */
  readonly primary_wait_timeout_ms: number;
  /** How often the nodes are checked while no primary is known. */
  readonly search_interval_ms: number;
  /** Patroni REST API base URLs, asked which member leads while the primary is down or unknown. */
  readonly patroni: readonly string[];
  /** `cluster`: GET /cluster on any of them; `leader`: GET /leader on each (200 from the leader only). */
  readonly patroni_endpoint: "cluster" | "leader";
  /** A DNS name that resolves to the primary, re-resolved while the primary is down or unknown ("" = none). */
  readonly dns_name: string;
  /** Only nodes with this port match the name's addresses (0: any port). */
  readonly dns_port: number;
  /** How often Patroni and the DNS name are asked while the primary is down or unknown. */
  readonly discovery_interval_ms: number;
  /** Call pg_promote() on the most advanced replica when the primary is down and no other is found (split-brain risk). */
  readonly promote: boolean;
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
  readonly policy: PolicyConfig;
  readonly firewall: FirewallConfig;
  readonly ratelimit: RateLimitConfig;
  readonly mirror: MirrorConfig;
  readonly consistency: ConsistencyConfig;
  readonly failover: FailoverConfig;
  readonly log: LogConfig;
  readonly admin: AdminConfig;
}

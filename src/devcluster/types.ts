/** The public shapes of the local development cluster (primary + streaming replicas on loopback). */

/** One PostgreSQL server of the dev cluster. */
export interface DevNode {
  /** "primary", "replica1", "replica2", … — also the replica's application_name and replication slot. */
  name: string;
  role: "primary" | "replica";
  host: string;
  port: number;
  /** Data directory, `<cluster dir>/<name>`; also holds the node's Unix socket. */
  dataDir: string;
  /** Server log, `<cluster dir>/<name>.log`. */
  logFile: string;
}

/** A running dev cluster, as returned by `startCluster`. */
export interface DevCluster {
  dir: string;
  nodes: DevNode[];
  primary: DevNode;
  replicas: DevNode[];
  /** Always "postgres". */
  superuser: string;
  /** The superuser's password (default "postgres"). */
  password: string;
  /** The pgroute.toml written into `dir`, pointing at every node. */
  configPath: string;
  /**
   * A `postgres://` URL for `node`. Defaults to the superuser with its password and the `postgres` database;
   * with `user` given, the URL carries only the `password` passed alongside it (none for trust roles).
   */
  url(node: DevNode, opts?: { user?: string; password?: string; database?: string }): string;
  /** Fast-stop every node (replicas first) and remove `dir`. Idempotent. */
  stop(): Promise<void>;
}

/** How `startCluster` builds the cluster. */
export interface StartOptions {
  /** Number of streaming replicas (default 2). */
  replicas?: number;
  /** Cluster directory; must not exist or be empty (default: a new temp dir, removed by `stop`). */
  dir?: string;
  /** The primary's port; replicas take the next ones. 0 (the default) picks free ports. */
  port?: number;
  /** Listen port written into pgroute.toml (default 6432). */
  proxyPort?: number;
  /** Superuser password (default "postgres"). */
  password?: string;
  /** Extra pg_hba.conf lines, placed before the defaults so they win. */
  hba?: string[];
  /** Extra postgresql.conf settings, applied to every node. */
  settings?: Record<string, string | number>;
  /** Progress lines ("initdb primary…", "starting replica1 on 127.0.0.1:15433…"). */
  log?: (line: string) => void;
  /** Aborting stops and removes whatever was started so far, then rejects. */
  signal?: AbortSignal;
  /** How long to wait for the primary and for every replica to stream (default 30 000 ms). */
  timeoutMs?: number;
}

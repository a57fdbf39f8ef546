/**
 * Rate limits as token buckets, shared by every session of the proxy (so a limit holds however many connections a
 * user or an address opens): statements and transaction starts per user, per client address and per statement
 * fingerprint (the lexer's shape key: literals replaced, comments dropped), and new connections per address.
 *
 * Waiting follows golang.org/x/time/rate's reservations: a statement that finds a bucket short *reserves* its
 * tokens (the bucket goes negative) and waits until they would have been there, so waiters are served in arrival
 * order at exactly the configured rate, with no queue to wake. A statement whose turn would come later than
 * `max_wait` reserves nothing; the caller holds it for `max_wait` (a client hammering a limit is slowed down, not
 * answered at once) and then asks once more with no wait allowed ({@link RateLimiter.admit} with `maxWaitMs` 0):
 * a token left over by then lets it run, otherwise it gets ERROR 53400.
 *
 * Pure: time comes from an injected clock, and nothing here touches a socket or a timer.
 */
import type { Config, RateLimitConfig, UserConfig } from "../config/types.ts";
import type { RateScope } from "../config/policy.ts";

/** A rate per second and the tokens a quiet bucket saves up. */
export interface Limit {
  readonly rate: number;
  readonly burst: number;
}

/** Statements, or transaction starts. */
export type LimitKind = "queries" | "transactions";

/**
 * A limit resolved from the config: `rate` 0 means none. A burst of 0 is the rate rounded up (at least 1), so a
 * quiet client may send one second's worth at once.
 */
export function limitOf(rate: number, burst: number): Limit | null {
  return rate > 0 ? { rate, burst: burst > 0 ? burst : Math.max(1, Math.ceil(rate)) } : null;
}

/**
 * One bucket. Its limit is the one it was last used with, so a config reload takes effect on the buckets already
 * there (their tokens capped at the new burst).
 */
export class TokenBucket {
  /** Tokens at `at`; negative while waiters hold reservations. */
  tokens: number;
  at: number;

  constructor(
    public limit: Limit,
    now: number,
  ) {
    this.tokens = limit.burst;
    this.at = now;
  }

  /** Adds the tokens earned since the last look, up to the burst. */
  refill(now: number): void {
    const { rate, burst } = this.limit;
    if (now > this.at) {
      this.tokens = Math.min(burst, this.tokens + ((now - this.at) * rate) / 1000);
      this.at = now;
    } else if (this.tokens > burst) this.tokens = burst;
  }

  /** Milliseconds until `n` tokens are there (0: now). Call {@link TokenBucket.refill} first. */
  waitFor(n: number): number {
    const short = n - this.tokens;
    return short <= 0 ? 0 : (short * 1000) / this.limit.rate;
  }

  /** Takes `n` tokens, or reserves them (the bucket goes negative). */
  take(n: number): void {
    this.tokens -= n;
  }

  /** Gives back `n` tokens of a reservation that will not be used. */
  give(n: number): void {
    this.tokens = Math.min(this.limit.burst, this.tokens + n);
  }

  /** Full again: indistinguishable from a new bucket, so it may be forgotten. */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.limit.burst;
  }
}

/** Buckets by key, forgetting full ones once there are many (a full bucket is the same as none). */
class Buckets {
  private readonly map = new Map<string, TokenBucket>();
  private sweepAt = SWEEP_FROM;

  /** The bucket of `key`, held to `limit` from now on. */
  get(key: string, limit: Limit, now: number): TokenBucket {
    let b = this.map.get(key);
    if (b) {
      b.limit = limit;
      return b;
    }
    if (this.map.size >= this.sweepAt) this.sweep(now);
    b = new TokenBucket(limit, now);
    this.map.set(key, b);
    return b;
  }

  private sweep(now: number): void {
    for (const [k, b] of this.map) if (b.full(now)) this.map.delete(k);
    // Many active keys: sweep again only when their number has doubled, so a sweep costs O(1) per insert.
    this.sweepAt = Math.max(SWEEP_FROM, this.map.size * 2);
  }

  get size(): number {
    return this.map.size;
  }
}

const SWEEP_FROM = 10_000;

/** Which limit a request ran into, for its error message. */
export interface Exceeded {
  readonly scope: RateScope;
  readonly kind: LimitKind;
  /** The user name, client address or fingerprint. */
  readonly key: string;
  readonly limit: Limit;
  /** Where the limit is configured (`ratelimit.user_queries_per_second`, `users[2].queries_per_second`). */
  readonly setting: string;
}

/** What one request asks for. */
export interface Demand {
  readonly user: string;
  readonly address: string;
  /** The fingerprint of each statement the request runs. */
  readonly queries: readonly string[];
  /** The fingerprint of each transaction the request starts (see src/policy/txstart.ts). */
  readonly transactions: readonly string[];
}

/** Tokens reserved for a request that waits; given back if it never runs (its client left). */
export interface Reservation {
  cancel(): void;
}

export type Verdict =
  /** Within every limit: tokens taken, run now. */
  | { readonly kind: "go" }
  /** Tokens reserved: run after `ms`. */
  | { readonly kind: "wait"; readonly ms: number; readonly reservation: Reservation }
  /** Its turn would come after `maxWaitMs`: nothing was taken. */
  | { readonly kind: "over"; readonly exceeded: Exceeded };

interface Charge {
  bucket: TokenBucket;
  limit: Limit;
  n: number;
  scope: RateScope;
  kind: LimitKind;
  key: string;
  setting: string;
}

interface UserLimits {
  queries: Limit | null;
  transactions: Limit | null;
  querySetting: string;
  txSetting: string;
}

const GO: Verdict = Object.freeze({ kind: "go" });

/** What {@link RateLimiter.snapshot} returns: for metrics and the admin API. */
export interface RateLimitSnapshot {
  /** Some statement or transaction limit is configured. */
  active: boolean;
  /** Requests that waited for their turn (and then ran or were refused). */
  waited: number;
  /** Requests refused with ERROR 53400, by the limit that refused them (`user_queries`, `fingerprint_transactions`, …), and connections refused with FATAL 53300 (`connections`). */
  refused: Record<`${RateScope}_${LimitKind}` | "connections", number>;
  /** Buckets held now, by the same names (full ones are forgotten once there are many). */
  buckets: Record<`${RateScope}_${LimitKind}` | "connections", number>;
}

export class RateLimiter {
  private cfg!: RateLimitConfig;
  private users = new Map<string, UserLimits>();
  private defaultUser!: UserLimits;
  private address: { queries: Limit | null; transactions: Limit | null } = { queries: null, transactions: null };
  private fingerprint: { queries: Limit | null; transactions: Limit | null } = { queries: null, transactions: null };
  private connections: Limit | null = null;
  /** Any statement or transaction limit at all: when false, sessions skip the limiter entirely. */
  active = false;
  private waited = 0;
  private readonly refused: RateLimitSnapshot["refused"] = {
    user_queries: 0,
    user_transactions: 0,
    address_queries: 0,
    address_transactions: 0,
    fingerprint_queries: 0,
    fingerprint_transactions: 0,
    connections: 0,
  };
  private readonly buckets: Record<`${RateScope}_${LimitKind}` | "connections", Buckets> = {
    user_queries: new Buckets(),
    user_transactions: new Buckets(),
    address_queries: new Buckets(),
    address_transactions: new Buckets(),
    fingerprint_queries: new Buckets(),
    fingerprint_transactions: new Buckets(),
    connections: new Buckets(),
  };

  constructor(
    config: Pick<Config, "ratelimit" | "users">,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.configure(config);
  }

  /** Takes the limits of a (new) config; buckets already there keep their tokens. */
  configure(config: Pick<Config, "ratelimit" | "users">): void {
    const c = config.ratelimit;
    this.cfg = c;
    this.defaultUser = {
      queries: limitOf(c.user_queries_per_second, c.user_queries_burst),
      transactions: limitOf(c.user_transactions_per_second, c.user_transactions_burst),
      querySetting: "ratelimit.user_queries_per_second",
      txSetting: "ratelimit.user_transactions_per_second",
    };
    this.users = new Map();
    config.users.forEach((u, i) => {
      if (u.queries_per_second === undefined && u.transactions_per_second === undefined) return;
      this.users.set(u.name, userLimits(u, i, c, this.defaultUser));
    });
    this.address = {
      queries: limitOf(c.address_queries_per_second, c.address_queries_burst),
      transactions: limitOf(c.address_transactions_per_second, c.address_transactions_burst),
    };
    this.fingerprint = {
      queries: limitOf(c.fingerprint_queries_per_second, c.fingerprint_queries_burst),
      transactions: limitOf(c.fingerprint_transactions_per_second, c.fingerprint_transactions_burst),
    };
    this.connections = limitOf(c.connections_per_second, c.connections_burst);
    const some = (l: { queries: Limit | null; transactions: Limit | null }) => l.queries !== null || l.transactions !== null;
    this.active = some(this.defaultUser) || some(this.address) || some(this.fingerprint) || [...this.users.values()].some(some);
  }

  /** `ratelimit.max_wait`. */
  get maxWaitMs(): number {
    return this.cfg.max_wait_ms;
  }

  /** A new connection from `address`: true when within `connections_per_second` (the token is taken). */
  admitConnection(address: string): boolean {
    const limit = this.connections;
    if (!limit) return true;
    const now = this.now();
    const b = this.buckets.connections.get(address, limit, now);
    b.refill(now);
    if (b.waitFor(1) > 0) {
      this.refused.connections++;
      return false;
    }
    b.take(1);
    return true;
  }

  /** A request had to wait for its turn (counted once, however it ends). */
  noteWaited(): void {
    this.waited++;
  }

  /** A request was refused with ERROR 53400 because of `e`. */
  noteRefused(e: Exceeded): void {
    this.refused[`${e.scope}_${e.kind}`]++;
  }

  /** The `connections_per_second` limit, for the refusal's message. */
  get connectionLimit(): Limit | null {
    return this.connections;
  }

  /**
   * Decides whether a request may run now, after a wait of at most `maxWaitMs` (tokens reserved), or not within
   * it (nothing taken). Every bucket the request counts against is charged, or none is.
   */
  admit(d: Demand, maxWaitMs: number): Verdict {
    if (!this.active || (d.queries.length === 0 && d.transactions.length === 0)) return GO;
    const now = this.now();
    const charges: Charge[] = [];
    const user = this.users.get(d.user) ?? this.defaultUser;
    this.charge(charges, "user", "queries", d.user, user.queries, d.queries.length, user.querySetting, now);
    this.charge(charges, "user", "transactions", d.user, user.transactions, d.transactions.length, user.txSetting, now);
    this.charge(charges, "address", "queries", d.address, this.address.queries, d.queries.length, "ratelimit.address_queries_per_second", now);
    this.charge(charges, "address", "transactions", d.address, this.address.transactions, d.transactions.length, "ratelimit.address_transactions_per_second", now);
    if (this.fingerprint.queries) this.chargeEach(charges, "queries", d.queries, this.fingerprint.queries, now);
    if (this.fingerprint.transactions) this.chargeEach(charges, "transactions", d.transactions, this.fingerprint.transactions, now);
    let wait = 0;
    let worst: Charge | null = null;
    for (const c of charges) {
      c.bucket.refill(now);
      const w = c.bucket.waitFor(c.n);
      if (w > wait) {
        wait = w;
        worst = c;
      }
    }
    if (worst && wait > maxWaitMs) {
      return { kind: "over", exceeded: { scope: worst.scope, kind: worst.kind, key: worst.key, limit: worst.limit, setting: worst.setting } };
    }
    for (const c of charges) c.bucket.take(c.n);
    if (wait === 0) return GO;
    let cancelled = false;
    return {
      kind: "wait",
      ms: Math.ceil(wait),
      reservation: {
        cancel: () => {
          if (cancelled) return;
          cancelled = true;
          for (const c of charges) c.bucket.give(c.n);
        },
      },
    };
  }

  private charge(out: Charge[], scope: RateScope, kind: LimitKind, key: string, limit: Limit | null, n: number, setting: string, now: number): void {
    if (!limit || n === 0) return;
    out.push({ bucket: this.buckets[`${scope}_${kind}`].get(key, limit, now), limit, n, scope, kind, key, setting });
  }

  /** One charge per distinct fingerprint, for as many statements of it as the request has. */
  private chargeEach(out: Charge[], kind: LimitKind, keys: readonly string[], limit: Limit, now: number): void {
    const setting = `ratelimit.fingerprint_${kind}_per_second`;
    if (keys.length === 1) return this.charge(out, "fingerprint", kind, keys[0]!, limit, 1, setting, now);
    const counts = new Map<string, number>();
    for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
    for (const [k, n] of counts) this.charge(out, "fingerprint", kind, k, limit, n, setting, now);
  }

  /** Buckets held now, by scope and kind. */
  bucketCounts(): RateLimitSnapshot["buckets"] {
    const out = {} as RateLimitSnapshot["buckets"];
    for (const [k, b] of Object.entries(this.buckets)) out[k as keyof typeof out] = b.size;
    return out;
  }

  /** Counters for metrics and the admin API (a fresh object each call). */
  snapshot(): RateLimitSnapshot {
    return { active: this.active, waited: this.waited, refused: { ...this.refused }, buckets: this.bucketCounts() };
  }
}

/** A user's own limits: each of its keys overrides the matching `[ratelimit] user_*` value. */
function userLimits(u: UserConfig, i: number, c: RateLimitConfig, fallback: UserLimits): UserLimits {
  const q = u.queries_per_second;
  const t = u.transactions_per_second;
  return {
    queries: q === undefined ? fallback.queries : limitOf(q, u.queries_burst ?? c.user_queries_burst),
    transactions: t === undefined ? fallback.transactions : limitOf(t, u.transactions_burst ?? c.user_transactions_burst),
    querySetting: q === undefined ? fallback.querySetting : `users[${i}].queries_per_second`,
    txSetting: t === undefined ? fallback.txSetting : `users[${i}].transactions_per_second`,
  };
}

/** The text of ERROR 53400 for a request over `e`. */
export function describeExceeded(e: Exceeded, waitedMs: number): { message: string; detail: string; hint: string } {
  const what = e.kind === "queries" ? "statements" : "transactions";
  const who =
    e.scope === "user" ? `user "${e.key}"` : e.scope === "address" ? `client address ${e.key}` : `statement "${e.key.length > 60 ? `${e.key.slice(0, 59)}…` : e.key}"`;
  return {
    message: `pgroute: rate limit exceeded: ${who} is limited to ${e.limit.rate} ${what} per second (burst ${e.limit.burst})`,
    detail: `The statement waited ${waitedMs} ms (ratelimit.max_wait) without getting its turn.`,
    hint: `Send fewer ${what}, or raise ${e.setting}.`,
  };
}

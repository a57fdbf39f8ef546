/**
 * A circuit breaker per node. Closed, it counts failures: `failures` in a row, an error rate over
 * `error_rate` in the health window, a refused server login, or replication lag past the largest limit open it.
 * Open, the node gets no traffic until its cooldown ends (or, opened for lag, until the lag is back within the
 * limit). Half-open, it hands out `half_open_trials` trial requests; that many successes close it, a failure opens
 * it again with the cooldown doubled (up to `max_cooldown`). Closing resets the cooldown.
 *
 * Pure: time is passed in, so tests drive it with their own clock. The monitor owns every breaker and publishes
 * its {@link BreakerView} in the cluster snapshot after each change of state.
 */
import type { BreakerConfig } from "../config/types.ts";
import type { BreakerState, BreakerView } from "./state.ts";

/** Where a success or failure was seen: a request pgroute relayed, a server login, or one of the monitor's checks. */
export type Source = "request" | "login" | "check";

/** Why a breaker opened, which decides what may close it. */
export type BreakerCause = "failures" | "error_rate" | "lag" | "login";

const CLOSED: BreakerView = Object.freeze({ state: "closed", reason: null, until: null });

export class Breaker {
  private current: BreakerState = "closed";
  private why: string | null = null;
  private cause: BreakerCause | null = null;
  private openUntil: number | null = null;
  /** It opened on the monitor's failed checks: then the monitor's good checks may close it too. */
  private byChecks = false;
  private consecutive = 0;
  private cooldown: number;
  private permits = 0;
  private successes = 0;
  /** When the last trial was handed out (half-open). */
  private lastTrialAt = 0;
  private cached: BreakerView | null = CLOSED;

  constructor(private cfg: BreakerConfig) {
    this.cooldown = cfg.cooldown_ms;
  }

  /** New settings (a reload); the state is kept. */
  configure(cfg: BreakerConfig): void {
    this.cfg = cfg;
    this.cooldown = Math.min(Math.max(this.cooldown, cfg.cooldown_ms), cfg.max_cooldown_ms);
  }

  get state(): BreakerState {
    return this.current;
  }

  /** Whether it lets traffic through now: closed, or half-open with trials left to hand out. */
  get admits(): boolean {
    return this.current === "closed" || (this.current === "half-open" && this.permits > 0);
  }

  /**
   * Epoch ms when the breaker changes by itself: an open one goes half-open; a half-open one whose trials are all
   * out with no result for a cooldown gets them back (a trial can vanish: its client left before it ran). Null
   * when it is not waiting on time.
   */
  get deadline(): number | null {
    if (this.current === "open") return this.openUntil;
    if (this.current === "half-open" && this.permits === 0) return this.lastTrialAt + this.cfg.cooldown_ms;
    return null;
  }

  /** Failures in a row so far (closed). */
  get failuresInARow(): number {
    return this.consecutive;
  }

  view(): BreakerView {
    this.cached ??= Object.freeze({ state: this.current, reason: this.why, until: this.openUntil });
    return this.cached;
  }

  /** Something went well; true when that closed the breaker. */
  success(source: Source): boolean {
    this.consecutive = 0;
    if (this.current !== "half-open") return false;
    // The monitor's checks say the node answers, not that it serves queries well: they close only what they opened.
    if (source === "check" && this.cause !== "lag" && !this.byChecks) return false;
    if (++this.successes < this.cfg.half_open_trials) return false;
    this.close();
    return true;
  }

  /** Something failed for the node's sake; true when that opened the breaker. */
  failure(now: number, source: Source, why: string): boolean {
    switch (this.current) {
      case "open":
        return false;
      case "half-open":
        this.open(now, `trial failed: ${why}`, source === "login" ? "login" : "failures", source === "check", true);
        return true;
      case "closed":
        if (++this.consecutive < this.cfg.failures) return false;
        this.open(now, `${this.consecutive} consecutive failures (last: ${why})`, "failures", source === "check", false);
        return true;
    }
  }

  /** The node's error rate over the health window; true when it opened the breaker. */
  errorRate(now: number, faults: number, requests: number, windowMs: number): boolean {
    if (this.current !== "closed" || requests < this.cfg.min_requests) return false;
    const rate = faults / requests;
    if (rate <= this.cfg.error_rate) return false;
    this.open(now, `error rate ${percent(rate)} over ${windowMs / 1000} s > ${percent(this.cfg.error_rate)}`, "error_rate", false, false);
    return true;
  }

  /**
   * Opens at once: a refused server login, or lag past the limit (`why` says by how much; while open for lag, the
   * reason follows the latest figure). True when it was not open before.
   */
  trip(now: number, cause: "login" | "lag", why: string): boolean {
    if (this.current === "open") {
      if (cause === "lag" && this.cause === "lag" && this.why !== why) {
        this.why = why;
        this.cached = null;
      }
      return false;
    }
    this.open(now, why, cause, false, this.current === "half-open");
    return true;
  }

  /** The lag that opened it is back within the limit: trials may go there. True when that changed the state. */
  lagRecovered(): boolean {
    if (this.current !== "open" || this.cause !== "lag") return false;
    this.halfOpen();
    return true;
  }

  /** Time passed; true when that changed what the breaker admits (see {@link deadline}). */
  tick(now: number): boolean {
    const at = this.deadline;
    if (at === null || now < at) return false;
    if (this.current === "open") this.halfOpen();
    else this.permits = this.cfg.half_open_trials;
    return true;
  }

  /** A request went to the node as a half-open trial; true when that was its last trial (it admits no more). */
  takeTrial(now: number): boolean {
    if (this.current !== "half-open" || this.permits === 0) return false;
    this.lastTrialAt = now;
    return --this.permits === 0;
  }

  private open(now: number, why: string, cause: BreakerCause, byChecks: boolean, backoff: boolean): void {
    if (backoff) this.cooldown = Math.min(this.cfg.max_cooldown_ms, this.cooldown * 2);
    this.current = "open";
    this.why = why;
    this.cause = cause;
    this.byChecks = byChecks;
    this.openUntil = cause === "lag" ? null : now + this.cooldown;
    this.consecutive = 0;
    this.cached = null;
  }

  private halfOpen(): void {
    this.current = "half-open";
    this.openUntil = null;
    this.permits = this.cfg.half_open_trials;
    this.successes = 0;
    this.cached = null;
  }

  private close(): void {
    this.current = "closed";
    this.why = null;
    this.cause = null;
    this.byChecks = false;
    this.cooldown = this.cfg.cooldown_ms;
    this.cached = CLOSED;
  }
}

function percent(x: number): string {
  return `${Math.round(x * 1000) / 10}%`;
}

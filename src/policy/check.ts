/**
 * The policies of one session: what its relay asks before a request goes anywhere. Firewall rules and role checks
 * follow config reloads at once (a rule added on SIGHUP holds for sessions already open); the statement_timeout cap
 * and the idle-in-transaction limit are the ones the session logged in with, like its settings and routing.
 */
import type { Config, UserConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { TableSizes } from "../monitor/tables.ts";
import type { FunctionLists } from "../router/classify.ts";
import { judge, type Policies, type UserPolicy, type Verdict } from "./policy.ts";
import { timeoutChange, type TimeoutChange } from "./timeout.ts";

/** What a session's policies read from the proxy. */
export interface PolicyHost {
  readonly config: Config;
  readonly policies: Policies;
  readonly log: Logger;
  /** The current table sizes of a database. */
  tableSizes(database: string): TableSizes;
}

export class SessionPolicy {
  private policies: Policies;
  private policy: UserPolicy;
  /** The statement_timeout cap (ms) this session's settings enforce; 0: none. */
  readonly capMs: number;
  /** Idle-in-transaction limit (ms); 0: none. */
  readonly idleTimeoutMs: number;
  /** Function lists for routing this session's statements (read-only users may call set_config on replicas). */
  readonly functions: FunctionLists;

  constructor(
    private readonly host: PolicyHost,
    user: UserConfig,
    readonly database: string,
  ) {
    this.policies = host.policies;
    this.policy = host.policies.forUser(user);
    this.capMs = this.policy.statementTimeoutMs;
    this.idleTimeoutMs = this.policy.idleTimeoutMs;
    this.functions = this.policy.functions;
  }

  /** Whether anything is enforced for this session (else session pooling relays its bytes untouched). */
  get enforces(): boolean {
    return this.current().checks || this.idleTimeoutMs > 0;
  }

  /** Whether the user's rules read table sizes (its first login to a database waits for them). */
  get needsSizes(): boolean {
    return this.current().rules?.sizes ?? false;
  }

  /** The user's policy under the running config (a user removed by a reload keeps the one it had). */
  private current(): UserPolicy {
    if (this.host.policies !== this.policies) {
      this.policies = this.host.policies;
      const user = this.host.config.users.find((u) => u.name === this.policy.user);
      if (user) this.policy = this.policies.forUser(user);
    }
    return this.policy;
  }

  get user(): string {
    return this.policy.user;
  }

  /** Whether requests must be judged at all (cheap: most users have no policy). */
  get checks(): boolean {
    return this.current().checks;
  }

  /**
   * Whether what pgroute cannot read is refused: true for read-only users and users under a deny rule (a fast-path
   * FunctionCall, a statement that does not parse).
   */
  get failsClosed(): boolean {
    const p = this.current();
    return p.readOnly || (p.rules?.denies ?? false);
  }

  /** Judges a request (`key`: its shape key) and {@link report}s the verdict. */
  check(sql: string, key: string): Verdict {
    const v = this.judge(sql, key);
    this.report(sql, v);
    return v;
  }

  /** Judges a request without a word in the log. */
  judge(sql: string, key: string): Verdict {
    return judge(this.current(), sql, key, this.host.tableSizes(this.database));
  }

  /** Logs a verdict: the log rules it matched (each execution is a line), and a refusal. */
  report(sql: string, v: Verdict): void {
    const user = this.policy.user;
    for (const m of v.logged) {
      this.host.log.warn("firewall_match", { rule: m.rule.name, user, database: this.database, match: m.detail, statement: sql.length > 200 ? `${sql.slice(0, 199)}…` : sql });
    }
    if (v.refusal) this.host.log.info("policy_refused", { user, database: this.database, code: v.refusal.code, reason: v.refusal.detail ?? v.refusal.message });
  }

  /** What a request the verdict flagged does to statement_timeout, under this session's cap. */
  timeoutChange(sql: string, v: Verdict): TimeoutChange {
    return this.capMs > 0 && v.timeout ? timeoutChange(sql, this.capMs) : "none";
  }
}

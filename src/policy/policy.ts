/**
 * The policies of a config, compiled once per config: per user, its role, its timeouts and the firewall rules it is
 * under; and {@link judge}, which decides whether a request may run — on its parse tree, once per statement shape
 * (the verdict is cached like the classifier's: literals and comments do not change it), and again whenever the
 * table sizes a size rule reads are reloaded (the cache is per sizes snapshot).
 */
import type { Config, UserConfig } from "../config/types.ts";
import type { TableSizes } from "../monitor/tables.ts";
import { HotCache } from "../router/cache.ts";
import type { FunctionLists } from "../router/classify.ts";
import { parseSql } from "../router/parser.ts";
import { factsOf } from "./facts.ts";
import { compileRules, rulesFor, type Match, type Rule, type RuleSet } from "./firewall.ts";
import { refusals, type Refusal } from "./refusal.ts";
import { isReadOnly, readOnlyFunctions, readOnlyViolation } from "./roles.ts";
import { mayChangeTimeout } from "./timeout.ts";

/** Everything pgroute enforces for one user. */
export interface UserPolicy {
  readonly user: string;
  readonly readOnly: boolean;
  /** The statement_timeout cap in ms; 0: none. */
  readonly statementTimeoutMs: number;
  /** The idle-in-transaction limit in ms; 0: none. */
  readonly idleTimeoutMs: number;
  readonly rules: RuleSet | null;
  /** Function lists this user's statements are classified with (read-only users may call set_config). */
  readonly functions: FunctionLists;
  /** Whether each statement must be judged (read-only, firewall rules, or a statement_timeout cap). */
  readonly checks: boolean;
  /** Verdicts by statement shape, per sizes snapshot (one entry when no rule reads sizes). */
  readonly verdicts: WeakMap<object, HotCache<string, Verdict>>;
}

export interface Verdict {
  /** Why the request may not run, or null. */
  readonly refusal: Refusal | null;
  /** Log rules that matched (the request runs). */
  readonly logged: readonly Match[];
  /** The request may change statement_timeout: its values decide whether the cap must be restored after it. */
  readonly timeout: boolean;
}

export const ALLOW: Verdict = Object.freeze({ refusal: null, logged: Object.freeze([]) as readonly Match[], timeout: false });

/** The key of the verdict cache for users whose rules read no sizes. */
const SIZELESS = {};

export class Policies {
  private readonly rules: Rule[];
  private readonly byUser = new Map<string, UserPolicy>();
  /** Whether any rule reads table sizes (then the table-size monitor runs). */
  readonly needsSizes: boolean;

  constructor(
    private readonly config: Config,
    private readonly functions: FunctionLists,
  ) {
    this.rules = compileRules(config.firewall.rules);
    this.needsSizes = this.rules.some((r) => r.sizes);
  }

  /** The policy of `user` (one object per user and config, so its verdict cache is shared by its sessions). */
  forUser(user: UserConfig): UserPolicy {
    let p = this.byUser.get(user.name);
    if (!p) {
      const readOnly = isReadOnly(user);
      const rules = rulesFor(this.rules, user.name);
      const statementTimeoutMs = user.statement_timeout_ms ?? this.config.policy.statement_timeout_ms;
      p = {
        user: user.name,
        readOnly,
        statementTimeoutMs,
        idleTimeoutMs: user.idle_in_transaction_timeout_ms ?? this.config.policy.idle_in_transaction_timeout_ms,
        rules,
        functions: readOnly ? readOnlyFunctions(this.functions) : this.functions,
        checks: readOnly || rules !== null || statementTimeoutMs > 0,
        verdicts: new WeakMap(),
      };
      this.byUser.set(user.name, p);
    }
    return p;
  }
}

/**
 * Whether the request `sql` (shape key `key`) may run for the user of `policy`, with `sizes` the table sizes of
 * the session's database. A string that does not parse is refused when the user is read-only or under a deny rule
 * (fail closed), and otherwise goes on to the server, which reports the error itself.
 */
export function judge(policy: UserPolicy, sql: string, key: string, sizes: TableSizes): Verdict {
  if (!policy.checks || sql.length === 0) return ALLOW;
  const cacheKey = policy.rules?.sizes ? sizes : SIZELESS;
  let cache = policy.verdicts.get(cacheKey);
  if (!cache) {
    cache = new HotCache(10_000);
    policy.verdicts.set(cacheKey, cache);
  }
  const hit = cache.get(key);
  if (hit) return hit;
  const parsed = parseSql(sql);
  if (!parsed.ok) {
    // Not cached: whether a string parses may depend on a literal (an unterminated quote).
    if (policy.readOnly || policy.rules?.denies) return { refusal: refusals.unparsable(policy.user, parsed.message), logged: [], timeout: false };
    return ALLOW;
  }
  const stmts = parsed.tree.stmts ?? [];
  let refusal: Refusal | null = null;
  // A verdict that read a literal (the value set_config gives a setting) holds for this string only.
  let literal = false;
  if (policy.readOnly) ({ refusal, literal } = readOnlyViolation(stmts, policy.functions, policy.user));
  let logged: readonly Match[] = [];
  if (!refusal && policy.rules) {
    const r = policy.rules.evaluate(factsOf(stmts), sizes);
    if (r.deny) refusal = refusals.firewall(r.deny.rule.name, r.deny.rule.message, r.deny.detail);
    logged = r.logged;
  }
  const timeout = mayChangeTimeout(stmts);
  const verdict: Verdict = refusal === null && logged.length === 0 && !timeout ? ALLOW : { refusal, logged, timeout };
  if (!literal) cache.set(key, verdict);
  return verdict;
}

/**
 * What sessions count for metrics, shared by every session of a proxy: client connections opened and closed,
 * routing decisions by target and reason, and pins by reason. Plain integers in objects of fixed shape, bumped
 * on the serving path without allocating; read when /metrics is scraped.
 */
import type { PinReason } from "../router/effects.ts";
import type { Route, RouteReason } from "../router/route.ts";

export type RouteTarget = Route["target"];
export type ReasonCode = RouteReason["code"];

/** Every route target, in the order metrics list them. */
export const ROUTE_TARGETS: readonly RouteTarget[] = ["primary", "replica", "refuse", "defer"];

/** Every routing reason (a Record, so a new reason that is missing here is a type error). */
const REASONS: Record<ReasonCode, true> = {
  read_only: true,
  not_read_only: true,
  hint: true,
  session_target: true,
  user_default: true,
  in_transaction: true,
  transaction_begin: true,
  read_only_transaction: true,
  serializable_transaction: true,
  first_statement: true,
  no_replica: true,
  replica_refused: true,
  pinned: true,
  pins_session: true,
  read_your_writes: true,
};
export const REASON_CODES = Object.keys(REASONS) as ReasonCode[];

const PINS: Record<PinReason, true> = { listen: true, hold_cursor: true, advisory_lock: true, temp_table: true, sql_prepare: true, set_config: true };
export const PIN_REASONS = Object.keys(PINS) as PinReason[];

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = 0;
  return out;
}

export class SessionCounters {
  clientsOpened = 0;
  clientsClosed = 0;
  /** Sessions that took a pin, by the pin's reason (each reason counted once per session until it is released). */
  readonly pins = zeros(PIN_REASONS);
  /** Routing decisions, by where they sent the statement and why. */
  readonly routes: Record<RouteTarget, Record<ReasonCode, number>> = {
    primary: zeros(REASON_CODES),
    replica: zeros(REASON_CODES),
    refuse: zeros(REASON_CODES),
    defer: zeros(REASON_CODES),
  };

  route(r: Route): void {
    this.routes[r.target][r.reason.code]++;
  }
}

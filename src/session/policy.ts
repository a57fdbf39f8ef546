/**
 * What both message-level relays (transaction pooling, and session pooling under policies) share about the
 * policies: who the session is for the rate limiter and the mirror, and how a request is offered to the mirror.
 */
import type { PgError } from "../errors.ts";
import type { Mirror, MirrorJob } from "../policy/mirror.ts";
import { mirrorable, type ShadowRequest } from "../policy/mirror-request.ts";
import type { RateLimiter } from "../policy/ratelimit.ts";
import type { ErrorFields } from "../wire/encode.ts";
import type { SessionSettings } from "./settings.ts";

/** The policies a session is subject to, and who it is for them. */
export interface SessionPolicy {
  readonly limiter: RateLimiter;
  readonly mirror: Mirror;
  readonly user: string;
  /** The client's address. */
  readonly address: string;
  readonly database: string;
}

/**
 * The sampling draw for a request that may be mirrored (outside a transaction, no session effects: the caller
 * checked), then the request handed to the mirror; null when not sampled, not mirrorable or dropped.
 */
export function offerMirror(policy: SessionPolicy, settings: SessionSettings, key: string, write: boolean, build: () => ShadowRequest | null): MirrorJob | null {
  if (!policy.mirror.sample(write) || !mirrorable(key)) return null;
  // The settings as they are now: the shadow runs the request later, when the client may have changed them.
  return policy.mirror.offer(key, policy.database, settings.copy(), build);
}

/** pgroute's own error as the fields of an ErrorResponse. */
export function fieldsOf(e: PgError): Omit<ErrorFields, "severity"> {
  return { code: e.code, message: e.message, detail: e.detail, hint: e.hint };
}

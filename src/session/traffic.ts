/**
 * What a message-level relay needs of the traffic policies (rate limits and mirroring, shared by every session):
 * who the session is for them, and how a request is offered to the mirror.
 */
import type { Mirror, MirrorJob } from "../policy/mirror.ts";
import { mirrorable, type ShadowRequest } from "../policy/mirror-request.ts";
import type { RateLimiter } from "../policy/ratelimit.ts";
import type { SessionSettings } from "./settings.ts";

/** The rate limiter and the mirror, and who the session is for them. */
export interface TrafficPolicy {
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
export function offerMirror(traffic: TrafficPolicy, settings: SessionSettings, key: string, write: boolean, build: () => ShadowRequest | null): MirrorJob | null {
  if (!traffic.mirror.sample(write) || !mirrorable(key)) return null;
  // The settings as they are now: the shadow runs the request later, when the client may have changed them.
  return traffic.mirror.offer(key, traffic.database, settings.copy(), build);
}

/** What the statements an extended-protocol batch executes say about mirroring it, gathered one by one. */
export class MirrorDraft {
  /** The statements' shape keys, joined: the batch's fingerprint. */
  private keys = "";
  private write = false;
  private effects = false;

  add(key: string, hasEffects: boolean, readOnly: boolean): void {
    this.keys = this.keys === "" ? key : `${this.keys}; ${key}`;
    this.effects ||= hasEffects;
    this.write ||= !readOnly;
  }

  /** The batch offered to the mirror when it executes something and has no session effects. */
  offer(traffic: TrafficPolicy, settings: SessionSettings, build: () => ShadowRequest | null): MirrorJob | null {
    return this.keys !== "" && !this.effects ? offerMirror(traffic, settings, this.keys, this.write, build) : null;
  }
}

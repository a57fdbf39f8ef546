/**
 * Client authentication to pgroute (PostgreSQL docs, "Authentication Methods" and "SASL Authentication"), as a
 * step machine with no I/O: `start()` says what to send, each PasswordMessage/SASL message ('p') advances it, and
 * the end is either a success carrying the credentials pgroute will use with servers, or 28P01.
 *
 * An unknown user goes through the same exchange as a wrong password and gets the same error, so the replies do
 * not reveal which user names exist.
 */
import { randomBytes } from "node:crypto";
import type { UserConfig } from "../config/types.ts";
import { PgError, errors } from "../errors.ts";
import type { ServerCredentials } from "../pool/server.ts";
import {
  authenticationMD5,
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
} from "../wire/encode.ts";
import { decodePassword, decodeSaslInitial, decodeSaslResponse } from "../wire/frontend.ts";
import {
  SCRAM_MECHANISM,
  ScramServer,
  makeVerifier,
  md5Hash,
  md5Response,
  parseVerifier,
  safeEqual,
  type ScramVerifier,
} from "../wire/scram.ts";

export type AuthStep =
  | { kind: "send"; bytes: Uint8Array }
  | { kind: "ok"; credentials: ServerCredentials; bytes?: Uint8Array }
  | { kind: "fail"; error: PgError };

/** Verifiers derived from plaintext passwords are computed once per config snapshot (PBKDF2 is slow on purpose). */
const verifiers = new WeakMap<UserConfig, ScramVerifier>();

function verifierOf(user: UserConfig): ScramVerifier {
  let v = verifiers.get(user);
  if (!v) {
    v = user.scram_verifier ? parseVerifier(user.scram_verifier) : makeVerifier(user.password ?? "");
    verifiers.set(user, v);
  }
  return v;
}

/** What pgroute may present to servers for this user, before anything the client proves adds to it. */
export function serverCredentials(user: UserConfig): ServerCredentials {
  const password = user.server_password ?? user.password;
  if (password !== undefined) return { password };
  const sameRole = !user.server_user || user.server_user === user.name;
  return sameRole && user.md5_hash ? { md5Hash: user.md5_hash } : {};
}

type State =
  | { step: "start" }
  | { step: "md5"; salt: Uint8Array }
  | { step: "scram-initial" }
  | { step: "scram-final"; scram: ScramServer }
  | { step: "done" };

export class ClientAuth {
  private state: State = { step: "start" };

  constructor(
    /** The configured user, or undefined for a name pgroute does not know. */
    private readonly user: UserConfig | undefined,
    private readonly userName: string,
  ) {}

  start(): AuthStep {
    const method = this.user?.auth ?? "scram-sha-256";
    if (this.user && method === "trust") {
      this.state = { step: "done" };
      return { kind: "ok", credentials: serverCredentials(this.user) };
    }
    if (method === "md5") {
      const salt = randomBytes(4);
      this.state = { step: "md5", salt };
      return { kind: "send", bytes: authenticationMD5(salt) };
    }
    this.state = { step: "scram-initial" };
    return { kind: "send", bytes: authenticationSASL([SCRAM_MECHANISM]) };
  }

  /** Advances on a 'p' message body `buf[start..end)`. */
  onMessage(buf: Uint8Array, start: number, end: number): AuthStep {
    try {
      return this.step(buf, start, end);
    } catch (err) {
      // A malformed answer is a failed login, never a crash, and says no more than a wrong password would.
      this.state = { step: "done" };
      return err instanceof PgError ? { kind: "fail", error: err } : this.fail();
    }
  }

  private step(buf: Uint8Array, start: number, end: number): AuthStep {
    const s = this.state;
    switch (s.step) {
      case "md5": {
        this.state = { step: "done" };
        const got = decodePassword(buf, start, end);
        const user = this.user;
        const stored = user?.md5_hash ?? (user?.password !== undefined ? md5Hash(user.password, user.name) : null);
        // Compare even for unknown users so timing does not tell them apart.
        const expected = md5Response(stored ?? md5Hash(randomBytes(16).toString("hex"), this.userName), s.salt);
        if (!safeEqual(got, expected) || !user || !stored) return this.fail();
        return { kind: "ok", credentials: serverCredentials(user) };
      }
      case "scram-initial": {
        const { mechanism, data } = decodeSaslInitial(buf, start, end);
        if (mechanism !== SCRAM_MECHANISM) {
          this.state = { step: "done" };
          return {
            kind: "fail",
            error: new PgError("28000", `client selected an invalid SASL authentication mechanism`, "FATAL"),
          };
        }
        const scram = new ScramServer(this.user ? verifierOf(this.user) : null, this.userName);
        this.state = { step: "scram-final", scram };
        return { kind: "send", bytes: authenticationSASLContinue(scram.first(data)) };
      }
      case "scram-final": {
        this.state = { step: "done" };
        const final = s.scram.final(decodeSaslResponse(buf, start, end));
        if (final === null || !this.user) return this.fail();
        const credentials = serverCredentials(this.user);
        if (credentials.password === undefined && s.scram.clientKey) {
          credentials.scram = { kind: "clientKey", clientKey: s.scram.clientKey, verifier: verifierOf(this.user) };
        }
        return { kind: "ok", credentials, bytes: authenticationSASLFinal(final) };
      }
      case "start":
      case "done":
        return { kind: "fail", error: errors.protocolViolation("unexpected password message") };
    }
  }

  private fail(): AuthStep {
    return { kind: "fail", error: errors.authFailed(this.userName) };
  }
}

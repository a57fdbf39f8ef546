/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it (docs, "SASL Authentication"), both ends:
 * `ScramServer` verifies clients against a verifier, `ScramClient` logs in to a server with a password or, when
 * only a verifier is configured, with the ClientKey recovered from the client's own proof (pass-through, as
 * PgBouncer does). Also the md5 password hashing. No sockets here: strings in, strings out.
 */
import { createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";

export const SCRAM_MECHANISM = "SCRAM-SHA-256";
const DEFAULT_ITERATIONS = 4096;
/**
 * The most PBKDF2 iterations pgroute runs for a server's server-first-message (Postgres's own default is 4096;
 * OWASP suggests 600,000). The server picks the count, so without a bound a broken or hostile one could keep a
 * thread busy for hours.
 */
export const MAX_SERVER_ITERATIONS = 10_000_000;

export class ScramError extends Error {
  override readonly name = "ScramError";
}

/** What a server stores for a SCRAM user (pg_authid.rolpassword). */
export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const hmac = (key: Buffer, data: string | Buffer) => createHmac("sha256", key).update(data).digest();
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/**
 * SASLprep (RFC 4013) as far as it matters for passwords: non-ASCII spaces map to a space, "mapped to nothing"
 * characters vanish, then NFKC. Like Postgres, an ASCII password is used as is.
 */
export function saslprep(password: string): string {
  // biome-ignore lint: explicit ASCII check
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  return password
    .replace(/[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g, " ")
    .replace(/[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]/g, "")
    .normalize("NFKC");
}

function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(saslprep(password), salt, iterations, 32, "sha256");
}

/** Builds a verifier from a plaintext password (random salt unless given). */
export function makeVerifier(password: string, salt = randomBytes(16), iterations = DEFAULT_ITERATIONS): ScramVerifier {
  const salted = saltedPassword(password, salt, iterations);
  return {
    iterations,
    salt,
    storedKey: sha256(hmac(salted, "Client Key")),
    serverKey: hmac(salted, "Server Key"),
  };
}

/** Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`. */
export function parseVerifier(text: string): ScramVerifier {
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) throw new ScramError("invalid SCRAM verifier");
  const v = {
    iterations: Number(m[1]),
    salt: Buffer.from(m[2]!, "base64"),
    storedKey: Buffer.from(m[3]!, "base64"),
    serverKey: Buffer.from(m[4]!, "base64"),
  };
  if (v.storedKey.length !== 32 || v.serverKey.length !== 32) throw new ScramError("invalid SCRAM verifier");
  return v;
}

export function formatVerifier(v: ScramVerifier): string {
  return `SCRAM-SHA-256$${v.iterations}:${v.salt.toString("base64")}$${v.storedKey.toString("base64")}:${v.serverKey.toString("base64")}`;
}

/** Splits `a=1,b=2` attributes; values may contain '=' but not ','. */
function attributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(",")) {
    if (part.length < 2 || part[1] !== "=") throw new ScramError(`malformed SCRAM message`);
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

/** Printable nonce characters: base64 of random bytes never contains ','. */
const nonce = () => randomBytes(18).toString("base64");

/**
 * The server side of one SCRAM exchange. `verifier` null means an unknown user: the exchange runs with a
 * made-up verifier (derived from `mockSeed`, so it is stable per user name) and then fails, exactly like a
 * wrong password, so a client cannot tell which user names exist.
 */
export class ScramServer {
  private clientFirstBare = "";
  private serverFirst = "";
  private gs2 = "";
  private nonce = "";
  private readonly v: ScramVerifier;
  /** Recovered from a successful proof; lets pgroute log in to servers without the plaintext password. */
  clientKey: Buffer | null = null;

  constructor(
    verifier: ScramVerifier | null,
    mockSeed = "",
  ) {
    this.v = verifier ?? mockVerifier(mockSeed);
    this.known = verifier !== null;
  }

  private readonly known: boolean;

  /** Takes the client-first-message, returns the server-first-message. */
  first(clientFirst: string): string {
    // gs2-header: "n,," (no channel binding) or "y,," (client could bind, server offered none); "p=" asks for
    // binding we did not offer (we advertise only SCRAM-SHA-256, not -PLUS).
    const m = /^([ny]),(a=[^,]*)?,(.*)$/.exec(clientFirst);
    if (!m) {
      if (clientFirst.startsWith("p=")) throw new ScramError("channel binding is not supported");
      throw new ScramError("malformed SCRAM message");
    }
    this.gs2 = `${m[1]},${m[2] ?? ""},`;
    this.clientFirstBare = m[3]!;
    const attrs = attributes(this.clientFirstBare);
    const cnonce = attrs.get("r");
    if (!cnonce) throw new ScramError("malformed SCRAM message: missing nonce");
    this.nonce = cnonce + nonce();
    this.serverFirst = `r=${this.nonce},s=${this.v.salt.toString("base64")},i=${this.v.iterations}`;
    return this.serverFirst;
  }

  /** Takes the client-final-message; returns the server-final-message, or null when the proof is wrong. */
  final(clientFinal: string): string | null {
    const at = clientFinal.lastIndexOf(",p=");
    if (at < 0) throw new ScramError("malformed SCRAM message: missing proof");
    const withoutProof = clientFinal.slice(0, at);
    const attrs = attributes(withoutProof);
    if (attrs.get("c") !== Buffer.from(this.gs2).toString("base64")) throw new ScramError("SCRAM channel binding check failed");
    if (attrs.get("r") !== this.nonce) throw new ScramError("SCRAM nonce mismatch");
    const proof = Buffer.from(clientFinal.slice(at + 3), "base64");
    if (proof.length !== 32) return null;
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const clientKey = xor(proof, hmac(this.v.storedKey, authMessage));
    const ok = timingSafeEqual(sha256(clientKey), this.v.storedKey) && this.known;
    if (!ok) return null;
    this.clientKey = clientKey;
    return `v=${hmac(this.v.serverKey, authMessage).toString("base64")}`;
  }
}

const mockSecret = randomBytes(32);

function mockVerifier(seed: string): ScramVerifier {
  const salt = createHmac("sha256", mockSecret).update(seed).digest().subarray(0, 16);
  return { iterations: DEFAULT_ITERATIONS, salt, storedKey: randomBytes(32), serverKey: randomBytes(32) };
}

/** What pgroute knows to log in to a server with SCRAM. */
export type ScramSecret =
  | { kind: "password"; password: string }
  | { kind: "clientKey"; clientKey: Buffer; verifier: ScramVerifier };

/** The client side of one SCRAM exchange, for pgroute logging in to a server. */
export class ScramClient {
  private readonly cnonce = nonce();
  private clientFirstBare = "";
  private expectedServerSignature: Buffer | null = null;

  constructor(private readonly secret: ScramSecret) {}

  /** The client-first-message (with gs2 header "n,,": no channel binding). */
  first(): string {
    this.clientFirstBare = `n=,r=${this.cnonce}`;
    return `n,,${this.clientFirstBare}`;
  }

  /** Takes the server-first-message, returns the client-final-message. */
  final(serverFirst: string): string {
    const first = this.serverFirst(serverFirst);
    const salted = this.secret.kind === "password" ? saltedPassword(this.secret.password, first.salt, first.i) : null;
    return this.finish(serverFirst, first, salted);
  }

  /**
   * Like {@link ScramClient.final}, with PBKDF2 (whose cost the server chose) on a worker thread rather than the
   * event loop every other client depends on.
   */
  async finalAsync(serverFirst: string): Promise<string> {
    const first = this.serverFirst(serverFirst);
    let salted: Buffer | null = null;
    if (this.secret.kind === "password") {
      const password = saslprep(this.secret.password);
      salted = await new Promise<Buffer>((resolve, reject) =>
        pbkdf2(password, first.salt, first.i, 32, "sha256", (err, key) => (err ? reject(err) : resolve(key))),
      );
    }
    return this.finish(serverFirst, first, salted);
  }

  private serverFirst(serverFirst: string): { r: string; salt: Buffer; i: number } {
    const attrs = attributes(serverFirst);
    const r = attrs.get("r");
    const s = attrs.get("s");
    const i = Number(attrs.get("i"));
    if (!r || !s || !Number.isInteger(i) || i < 1) throw new ScramError("malformed SCRAM server-first-message");
    if (i > MAX_SERVER_ITERATIONS) throw new ScramError(`the server asks for ${i} SCRAM iterations, over pgroute's limit of ${MAX_SERVER_ITERATIONS}`);
    if (!r.startsWith(this.cnonce)) throw new ScramError("server SCRAM nonce does not extend ours");
    return { r, salt: Buffer.from(s, "base64"), i };
  }

  /** The client-final-message, given the salted password (null for SCRAM pass-through with a ClientKey). */
  private finish(serverFirst: string, { r, salt, i }: { r: string; salt: Buffer; i: number }, salted: Buffer | null): string {
    let clientKey: Buffer;
    let serverKey: Buffer;
    if (this.secret.kind === "password") {
      salted ??= saltedPassword(this.secret.password, salt, i);
      clientKey = hmac(salted, "Client Key");
      serverKey = hmac(salted, "Server Key");
    } else {
      const v = this.secret.verifier;
      if (!salt.equals(v.salt) || i !== v.iterations) {
        throw new ScramError("the server's SCRAM salt differs from the configured verifier; set server_password");
      }
      clientKey = this.secret.clientKey;
      serverKey = v.serverKey;
    }
    const withoutProof = `c=biws,r=${r}`; // biws = base64("n,,")
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
    this.expectedServerSignature = hmac(serverKey, authMessage);
    return `${withoutProof},p=${proof.toString("base64")}`;
  }

  /** Checks the server-final-message; a server that cannot prove it knows the key is refused. */
  verify(serverFinal: string): void {
    const attrs = attributes(serverFinal);
    if (attrs.has("e")) throw new ScramError(`server SCRAM error: ${attrs.get("e")}`);
    const v = Buffer.from(attrs.get("v") ?? "", "base64");
    if (!this.expectedServerSignature || v.length !== 32 || !timingSafeEqual(v, this.expectedServerSignature)) {
      throw new ScramError("server SCRAM signature is invalid");
    }
  }
}

/** `md5` + md5(password + user): what pg_authid stores for md5. */
export function md5Hash(password: string, user: string): string {
  return `md5${createHash("md5").update(password + user).digest("hex")}`;
}

/** The md5 PasswordMessage answer for a stored md5 hash and a 4-byte salt. */
export function md5Response(storedHash: string, salt: Uint8Array): string {
  return `md5${createHash("md5").update(storedHash.slice(3)).update(salt).digest("hex")}`;
}

/** Constant-time string equality (lengths are compared first; length is not a secret here). */
export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

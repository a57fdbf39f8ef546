// Invariant: a SCRAM exchange succeeds exactly when both ends know the same secret, and pass-through with a
// recovered ClientKey proves the same thing a password would.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import {
  ScramClient,
  ScramServer,
  formatVerifier,
  makeVerifier,
  md5Hash,
  md5Response,
  parseVerifier,
  saslprep,
} from "../../src/wire/scram.ts";

function exchange(server: ScramServer, client: ScramClient): string | null {
  const serverFirst = server.first(client.first());
  const final = server.final(client.final(serverFirst));
  if (final !== null) client.verify(final);
  return final;
}

describe("SCRAM-SHA-256", () => {
  const verifier = makeVerifier("s3cret");

  test("right password: both sides verify", () => {
    expect(exchange(new ScramServer(verifier), new ScramClient({ kind: "password", password: "s3cret" }))).toStartWith("v=");
  });

  test("wrong password: the server refuses", () => {
    expect(exchange(new ScramServer(verifier), new ScramClient({ kind: "password", password: "nope" }))).toBeNull();
  });

  test("unknown user (mock verifier): refused even with the 'right' password", () => {
    expect(exchange(new ScramServer(null, "ghost"), new ScramClient({ kind: "password", password: "s3cret" }))).toBeNull();
  });

  test("mock salt is stable per user name, so probing twice reveals nothing", () => {
    const a = new ScramServer(null, "ghost").first("n,,n=,r=abc");
    const b = new ScramServer(null, "ghost").first("n,,n=,r=abc");
    expect(a.split(",")[1]).toBe(b.split(",")[1]!);
  });

  test("pass-through: the ClientKey recovered from a client proof logs in to a server with the same verifier", () => {
    const front = new ScramServer(verifier);
    expect(exchange(front, new ScramClient({ kind: "password", password: "s3cret" }))).not.toBeNull();
    const backend = new ScramServer(verifier);
    const through = new ScramClient({ kind: "clientKey", clientKey: front.clientKey!, verifier });
    expect(exchange(backend, through)).not.toBeNull();
  });

  test("a server that does not know the key is refused by the client", () => {
    const client = new ScramClient({ kind: "password", password: "s3cret" });
    const impostor = new ScramServer(makeVerifier("s3cret"));
    const serverFirst = impostor.first(client.first());
    impostor.final(client.final(serverFirst));
    expect(() => client.verify(`v=${Buffer.alloc(32).toString("base64")}`)).toThrow("signature is invalid");
  });

  test("channel binding requests are refused, malformed messages throw", () => {
    expect(() => new ScramServer(verifier).first("p=tls-server-end-point,,n=,r=x")).toThrow("channel binding");
    expect(() => new ScramServer(verifier).first("garbage")).toThrow();
    const s = new ScramServer(verifier);
    s.first("n,,n=,r=abc");
    expect(() => s.final("c=biws,r=wrong,p=AAAA")).toThrow("nonce");
  });

  test("verifier text round-trips", () => {
    const text = formatVerifier(verifier);
    expect(text).toMatch(/^SCRAM-SHA-256\$4096:/);
    expect(formatVerifier(parseVerifier(text))).toBe(text);
    expect(() => parseVerifier("SCRAM-SHA-256$x")).toThrow();
  });

  test("saslprep leaves ASCII alone and maps non-ASCII spaces", () => {
    expect(saslprep("pa ss")).toBe("pa ss");
    expect(saslprep("pa\u00a0ss")).toBe("pa ss");
  });
});

describe("md5", () => {
  test("hash and challenge response follow Postgres's formula", () => {
    const inner = createHash("md5").update("secretalice").digest("hex");
    expect(md5Hash("secret", "alice")).toBe(`md5${inner}`);
    const salt = Uint8Array.of(1, 2, 3, 4);
    const outer = createHash("md5").update(inner).update(salt).digest("hex");
    expect(md5Response(md5Hash("secret", "alice"), salt)).toBe(`md5${outer}`);
  });
});

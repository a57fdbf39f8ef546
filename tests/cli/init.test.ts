// Invariant: `pgroute init` writes a file that loadConfig accepts, holding exactly what was given (by flags or by
// answers on a terminal), never overwrites without --force or a confirmation, exits 2 on bad flags, and never
// prints a password.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { parse } from "smol-toml";
import { renderConfigToml, type InitAnswers } from "../../src/cli/init.ts";
import { loadConfig, parseConfig } from "../../src/config/load.ts";

const ROOT = join(import.meta.dir, "../..");
/** The command line of `pgroute init`, as a user runs it. */
const INIT = [process.execPath, join(ROOT, "src/cli/main.ts"), "init"];
const SECRET = "s3cret:with'quote\"s";

const tempDir = () => mkdtemp(join(tmpdir(), "pgroute-init-"));

async function runInit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([...INIT, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: ROOT });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

describe("renderConfigToml", () => {
  test("writes only what was given, under a header pointing to the example", () => {
    const text = renderConfigToml({ nodes: [{ name: "p", host: "db", port: 5433 }], users: [] });
    expect(text).toContain("examples/pgroute.toml");
    expect(parse(text)).toEqual({ nodes: [{ name: "p", host: "db", port: 5433 }] });
    expect(parseConfig(text).pool.size).toBe(20);
  });

  test("any password survives the round trip through TOML", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), (password) => {
        const answers: InitAnswers = { nodes: [{ name: "p", host: "h", port: 1 }], users: [{ name: "u", password }] };
        expect(parseConfig(renderConfigToml(answers)).users[0]!.password).toBe(password);
      }),
    );
  });
});

describe("pgroute init from flags", () => {
  test("writes what the flags say, readable only by its owner, without printing the password", async () => {
    const out = join(await tempDir(), "x.toml");
    const result = await runInit([
      "--out", out,
      "--listen", "0.0.0.0:7000",
      "--node", "main=db1.internal:5432:primary",
      "--node", "r1=[::1]:5433",
      "--user", `app:${SECRET}`,
      "--user", "ro:pw2",
      "--auth", "md5",
      "--pool-mode", "transaction",
      "--pool-size", "7",
    ]); // prettier-ignore
    expect(result).toMatchObject({ code: 0, stdout: `wrote ${out} (2 nodes, 2 users)\n` });
    expect(result.stdout + result.stderr).not.toContain(SECRET);
    const config = await loadConfig(out);
    expect(config.listen).toEqual({ host: "0.0.0.0", port: 7000 });
    expect(config.nodes).toEqual([
      { name: "main", host: "db1.internal", port: 5432, role: "primary", weight: 1, zone: "", sslmode: "prefer" },
      { name: "r1", host: "::1", port: 5433, role: "auto", weight: 1, zone: "", sslmode: "prefer" },
    ]);
    expect(config.users).toEqual([
      { name: "app", password: SECRET, auth: "md5", databases: [], target: "auto", role: "read-write" },
      { name: "ro", password: "pw2", auth: "md5", databases: [], target: "auto", role: "read-write" },
    ]);
    expect(config.pool).toMatchObject({ mode: "transaction", size: 7 });
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  });

  test("with no flags but --out, writes the default node and nothing else", async () => {
    const out = join(await tempDir(), "x.toml");
    const result = await runInit(["--out", out]);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("no --user given");
    expect(parse(await Bun.file(out).text())).toEqual({ nodes: [{ name: "primary", host: "127.0.0.1", port: 5432, role: "auto" }] });
    expect((await loadConfig(out)).users).toEqual([]);
  });

  test("refuses to overwrite without --force, and overwrites with it", async () => {
    const out = join(await tempDir(), "x.toml");
    await writeFile(out, "keep me\n");
    const refused = await runInit(["--out", out, "--user", "a:b"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${out} exists; use --force to overwrite`);
    expect(await Bun.file(out).text()).toBe("keep me\n");

    const forced = await runInit(["--out", out, "--user", "a:b", "--force"]);
    expect(forced.code).toBe(0);
    expect((await loadConfig(out)).users.map((u) => u.name)).toEqual(["a"]);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  });

  test.each([
    [["--bogus"], "Unknown option"],
    [["--node", "nohost"], "--node nohost: expected NAME=HOST:PORT[:ROLE]"],
    [["--node", "a=h:5432:leader"], "--node a=h:5432:leader: expected NAME=HOST:PORT[:ROLE]"],
    [["--listen", "6432"], `--listen: expected HOST:PORT, got "6432"`],
    [["--pool-size", "0"], `--pool-size: expected an integer >= 1, got "0"`],
    [["--pool-mode", "statement"], `--pool-mode: expected one of session, transaction, got "statement"`],
    [["--auth", "plain"], `--auth: expected one of scram-sha-256, md5, trust, got "plain"`],
    [["--user", "app"], "--user app: expected NAME:PASSWORD"],
    [["--node", "a=h:1", "--node", "a=h:2"], `nodes[1].name: duplicate name "a"`],
  ])("bad flags %j exit 2 and write nothing", async (args, message) => {
    const out = join(await tempDir(), "x.toml");
    const result = await runInit(["--out", out, ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(await Bun.file(out).exists()).toBe(false);
  });

  test("--user NAME without a password is allowed for trust", async () => {
    const out = join(await tempDir(), "x.toml");
    expect((await runInit(["--out", out, "--user", "guest", "--auth", "trust"])).code).toBe(0);
    expect((await loadConfig(out)).users).toEqual([{ name: "guest", auth: "trust", databases: [], target: "auto", role: "read-write" }]);
  });
});

/**
 * `pgroute init` on a real pseudo-terminal (util-linux `script`), driven by keystrokes sent only once the
 * prompt they answer is on screen, so the test waits for output instead of for time.
 */
class Terminal {
  private output = "";
  private seen = 0;
  private waiter: (() => void) | undefined;
  readonly exited: Promise<number>;
  private readonly proc;

  /** Terminals still running, killed after each test so a failed test leaves no process behind. */
  static readonly open = new Set<Terminal>();

  constructor(args: string[], cwd: string) {
    // A fresh pty is 0x0, and clack wraps its output to the width it reports, so give it a real size first.
    const command = `stty cols 120 rows 50; ${[...INIT, ...args].map((a) => `'${a}'`).join(" ")}`;
    this.proc = Bun.spawn(["script", "-qfec", command, "/dev/null"], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      cwd,
      env: { ...process.env, TERM: "xterm-256color", CI: "false" },
    });
    this.exited = this.proc.exited;
    Terminal.open.add(this);
    void this.exited.then(() => Terminal.open.delete(this));
    void this.read();
  }

  private async read(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.proc.stdout) {
      this.output += decoder.decode(chunk, { stream: true });
      this.waiter?.();
    }
    this.waiter?.();
  }

  /** Everything shown so far, without colours and cursor movement. */
  get screen(): string {
    return this.output.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
  }

  /** Resolves once `text` appears after the previous match; fails if the program exits first. */
  async waitFor(text: string): Promise<void> {
    for (;;) {
      const at = this.screen.indexOf(text, this.seen);
      if (at !== -1) {
        this.seen = at + text.length;
        return;
      }
      const exited = await Promise.race([
        new Promise<false>((resolve) => (this.waiter = () => resolve(false))),
        this.exited.then(() => true),
      ]);
      if (exited && !this.screen.includes(text, this.seen)) throw new Error(`exited before showing ${JSON.stringify(text)}:\n${this.screen}`);
    }
  }

  async answer(prompt: string, keys: string): Promise<void> {
    await this.waitFor(prompt);
    this.proc.stdin.write(keys);
    await this.proc.stdin.flush();
  }

  close(): void {
    this.proc.stdin.end();
  }

  kill(): void {
    this.proc.kill();
  }
}

afterEach(() => {
  for (const term of Terminal.open) term.kill();
});

const ENTER = "\r";
const DOWN = "\x1b[B";
const CTRL_C = "\x03";

describe("pgroute init on a terminal", () => {
  test("asks, then writes the answers", async () => {
    const dir = await tempDir();
    const term = new Terminal(["--out", "answers.toml"], dir);
    await term.answer("Where should clients connect?", `0.0.0.0:7432${ENTER}`);
    await term.answer("PostgreSQL servers", `db1:5432, db2:5433, db3:5434${ENTER}`);
    await term.answer("Which server is the primary?", `${DOWN}${DOWN}${ENTER}`); // the second server
    await term.answer("User name", `alice${ENTER}`);
    await term.answer("How do clients authenticate?", `${DOWN}${ENTER}`); // md5
    await term.answer("Password for alice", `${SECRET}${ENTER}`);
    await term.answer("Pool mode", `${DOWN}${ENTER}`); // session (transaction, the default, is selected first)
    await term.answer("Server connections per node", `9${ENTER}`);
    await term.answer("Write the configuration to", ENTER); // the --out default
    await term.waitFor("Wrote answers.toml");
    term.close();
    expect(await term.exited).toBe(0);
    expect(term.screen).not.toContain(SECRET);

    const config = await loadConfig(join(dir, "answers.toml"));
    expect(config.listen).toEqual({ host: "0.0.0.0", port: 7432 });
    expect(config.nodes.map((n) => [n.name, n.host, n.port, n.role])).toEqual([
      ["replica1", "db1", 5432, "replica"],
      ["primary", "db2", 5433, "primary"],
      ["replica2", "db3", 5434, "replica"],
    ]);
    expect(config.users).toEqual([{ name: "alice", auth: "md5", password: SECRET, databases: [], target: "auto", role: "read-write" }]);
    expect(config.pool).toMatchObject({ mode: "session", size: 9 });
  });

  test("Enter everywhere takes the defaults; an existing file needs a confirmation", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "pgroute.toml"), "old\n");
    const term = new Terminal([], dir);
    await term.answer("Where should clients connect?", ENTER);
    await term.answer("PostgreSQL servers", ENTER);
    await term.answer("Role of this server", ENTER); // detect it
    await term.answer("User name", ENTER);
    await term.answer("How do clients authenticate?", ENTER);
    await term.answer("Password for app", `pw${ENTER}`);
    await term.answer("Pool mode", ENTER);
    await term.answer("Server connections per node", ENTER);
    await term.answer("Write the configuration to", ENTER);
    await term.answer("pgroute.toml exists. Overwrite it?", "y");
    await term.waitFor("Wrote pgroute.toml");
    term.close();
    expect(await term.exited).toBe(0);

    const config = await loadConfig(join(dir, "pgroute.toml"));
    expect(config.listen).toEqual({ host: "127.0.0.1", port: 6432 });
    expect(config.nodes).toEqual([{ name: "node1", host: "127.0.0.1", port: 5432, role: "auto", weight: 1, zone: "", sslmode: "prefer" }]);
    expect(config.users).toEqual([{ name: "app", auth: "scram-sha-256", password: "pw", databases: [], target: "auto", role: "read-write" }]);
    expect(config.pool).toMatchObject({ mode: "transaction", size: 20 });
  });

  test("Ctrl-C cancels with exit 1 and writes nothing", async () => {
    const dir = await tempDir();
    const term = new Terminal(["--out", "never.toml"], dir);
    await term.answer("Where should clients connect?", ENTER);
    await term.answer("PostgreSQL servers", CTRL_C);
    await term.waitFor("cancelled");
    term.close();
    expect(await term.exited).toBe(1);
    expect(await Bun.file(join(dir, "never.toml")).exists()).toBe(false);
  });
});

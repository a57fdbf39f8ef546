/**
 * `pgroute init`: writes a starter configuration. On a terminal it asks (with @clack/prompts); otherwise, or with
 * `--yes`, it takes everything from flags. Both paths build the same `InitAnswers` and render them with
 * `renderConfigToml`, and the result is checked with the real config loader before it is written.
 */
import { chmod, writeFile } from "node:fs/promises";
import * as p from "@clack/prompts";
import { stringify } from "smol-toml";
import { ConfigLoadError, parseConfig } from "../config/load.ts";
import { defaultOf } from "../config/schema.ts";
import type { ClientAuthMethod, NodeRole, PoolMode } from "../config/types.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";

/** What `init` learned; only what is set here is written, everything else is left to the defaults. */
export interface InitAnswers {
  readonly listen?: { readonly host: string; readonly port: number };
  readonly nodes: readonly { readonly name: string; readonly host: string; readonly port: number; readonly role?: NodeRole }[];
  readonly users: readonly { readonly name: string; readonly password?: string; readonly auth?: ClientAuthMethod }[];
  readonly pool?: { readonly mode?: PoolMode; readonly size?: number };
}

const HEADER = `# pgroute configuration, written by \`pgroute init\`.
# Only the keys chosen there are set; every other key takes its default.
# examples/pgroute.toml lists every key with its default and what it does.
`;

/** The TOML text for `answers`: a comment header, then only the keys that were given. Pure. */
export function renderConfigToml(answers: InitAnswers): string {
  // Built key by key so the file reads listen → nodes → users → pool and omits whatever was not given.
  const doc: Record<string, unknown> = {};
  if (answers.listen) doc.listen = { host: answers.listen.host, port: answers.listen.port };
  doc.nodes = answers.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, ...(n.role && { role: n.role }) }));
  if (answers.users.length > 0) {
    doc.users = answers.users.map((u) => ({
      name: u.name,
      ...(u.auth && { auth: u.auth }),
      ...(u.password !== undefined && { password: u.password }),
    }));
  }
  const pool = { ...(answers.pool?.mode && { mode: answers.pool.mode }), ...(answers.pool?.size && { size: answers.pool.size }) };
  if (Object.keys(pool).length > 0) doc.pool = pool;
  const secrets = answers.users.some((u) => u.password !== undefined);
  const warning = secrets ? "# It holds passwords: keep it readable only by the user that runs pgroute.\n" : "";
  return `${HEADER}${warning}\n${stringify(doc)}`;
}

// ---- flags ----

const ROLES: readonly NodeRole[] = ["primary", "replica", "auto"];
const AUTH: readonly ClientAuthMethod[] = ["scram-sha-256", "md5", "trust"];
const MODES: readonly PoolMode[] = ["session", "transaction"];

const DEFAULT_OUT = "pgroute.toml";
const DEFAULT_LISTEN = `${defaultOf("listen", "host")}:${defaultOf("listen", "port")}`;
const DEFAULT_NODE = `primary=${defaultOf("nodes", "host")}:${defaultOf("nodes", "port")}:auto`;

const FLAGS = {
  out: { type: "string", short: "o" },
  listen: { type: "string" },
  node: { type: "string", multiple: true },
  user: { type: "string", multiple: true },
  auth: { type: "string" },
  "pool-mode": { type: "string" },
  "pool-size": { type: "string" },
  force: { type: "boolean", short: "f" },
  yes: { type: "boolean", short: "y" },
} as const;

/** `HOST:PORT` or `[v6addr]:PORT`; the port must lie in min..65535. */
export function parseHostPort(text: string, min: number): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d+)$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port < min || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** `NAME=HOST:PORT[:ROLE]`. */
export function parseNode(text: string): InitAnswers["nodes"][number] {
  const eq = text.indexOf("=");
  const name = text.slice(0, eq);
  let rest = text.slice(eq + 1);
  let role: NodeRole | undefined;
  const last = rest.slice(rest.lastIndexOf(":") + 1);
  if ((ROLES as readonly string[]).includes(last)) {
    role = last as NodeRole;
    rest = rest.slice(0, rest.lastIndexOf(":"));
  }
  const address = parseHostPort(rest, 1);
  if (eq < 1 || !address) throw new UsageError(`--node ${text}: expected NAME=HOST:PORT[:ROLE] with ROLE one of ${ROLES.join(", ")}`);
  return role ? { name, ...address, role } : { name, ...address };
}

/** `NAME:PASSWORD`, or just `NAME` when clients are trusted. The password may itself contain ':'. */
function parseUser(text: string, auth: ClientAuthMethod | undefined): InitAnswers["users"][number] {
  const colon = text.indexOf(":");
  const name = colon === -1 ? text : text.slice(0, colon);
  const password = colon === -1 ? undefined : text.slice(colon + 1);
  // Never echo the argument back: it holds a password.
  if (name === "") throw new UsageError("--user: expected NAME:PASSWORD, got an empty name");
  if (password === "" || (password === undefined && auth !== "trust")) {
    throw new UsageError(`--user ${name}: expected NAME:PASSWORD (a password is needed unless --auth trust)`);
  }
  return { name, ...(password !== undefined && { password }), ...(auth && { auth }) };
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
  throw new UsageError(`--${flag}: expected one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
}

type Flags = ReturnType<typeof parseFlags<typeof FLAGS>>["values"];

/** The answers the flags give, with the default node when none is given. */
export function answersFromFlags(flags: Flags): InitAnswers {
  let listen: InitAnswers["listen"];
  if (flags.listen !== undefined) {
    listen = parseHostPort(flags.listen, 0);
    if (!listen) throw new UsageError(`--listen: expected HOST:PORT, got ${JSON.stringify(flags.listen)}`);
  }
  const auth = oneOf("auth", flags.auth, AUTH);
  const mode = oneOf("pool-mode", flags["pool-mode"], MODES);
  const sizeText = flags["pool-size"];
  const size = sizeText === undefined ? undefined : Number(sizeText);
  if (size !== undefined && !(/^\d+$/.test(sizeText!) && size >= 1)) {
    throw new UsageError(`--pool-size: expected an integer >= 1, got ${JSON.stringify(sizeText)}`);
  }
  return {
    ...(listen && { listen }),
    nodes: (flags.node ?? [DEFAULT_NODE]).map(parseNode),
    users: (flags.user ?? []).map((u) => parseUser(u, auth)),
    ...((mode || size) && { pool: { ...(mode && { mode }), ...(size && { size }) } }),
  };
}

// ---- writing ----

/** Renders, validates with the real loader, and writes with mode 0600 (the file may hold passwords). */
async function writeConfig(path: string, answers: InitAnswers, force: boolean): Promise<void> {
  const text = renderConfigToml(answers);
  try {
    parseConfig(text, path);
  } catch (err) {
    // Only flags can produce an invalid config here (e.g. two nodes with one name); that is a usage error.
    if (err instanceof ConfigLoadError) throw new UsageError(`the flags give an invalid config:\n  ${err.errors.join("\n  ")}`);
    throw err;
  }
  try {
    // "wx" refuses an existing file atomically, so there is no window between a check and the write.
    await writeFile(path, text, { flag: force ? "w" : "wx", mode: 0o600 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new Error(`${path} exists; use --force to overwrite`);
    if (code === "ENOENT") throw new Error(`cannot write ${path}: no such directory`);
    throw err;
  }
  if (force) await chmod(path, 0o600); // an overwritten file keeps its old mode otherwise
}

function summary(answers: InitAnswers): string {
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
  return `${count(answers.nodes.length, "node")}, ${count(answers.users.length, "user")}`;
}

// ---- interactive ----

/** Thrown when the user presses Ctrl-C or Escape at a prompt. */
class Cancelled extends Error {}

async function ask<T>(prompt: Promise<T | symbol>): Promise<Exclude<T, symbol>> {
  const value = await prompt;
  if (p.isCancel(value)) throw new Cancelled();
  return value as Exclude<T, symbol>;
}

const exists = (path: string) => Bun.file(path).exists();

/** Asks for everything, with the flags (if any) as the defaults. Passwords are only ever typed, never shown. */
async function askAnswers(flags: Flags, fromFlags: InitAnswers): Promise<{ answers: InitAnswers; out: string }> {
  const listenText = await ask(
    p.text({
      message: "Where should clients connect? (host:port)",
      placeholder: flags.listen ?? DEFAULT_LISTEN,
      defaultValue: flags.listen ?? DEFAULT_LISTEN,
      validate: (v) => (!v || parseHostPort(v, 0) ? undefined : "expected host:port, e.g. 0.0.0.0:6432"),
    }),
  );
  const defaultServers = fromFlags.nodes.map((n) => `${n.host}:${n.port}`).join(", ");
  const serversText = await ask(
    p.text({
      message: "PostgreSQL servers (host:port, comma-separated)",
      placeholder: defaultServers,
      defaultValue: defaultServers,
      validate: (v) => (!v || splitServers(v).every((s) => parseHostPort(s, 1)) ? undefined : "expected host:port[, host:port…]"),
    }),
  );
  const servers = splitServers(serversText).map((s) => parseHostPort(s, 1)!);
  const primary = await ask(
    p.select<number>({
      message: servers.length === 1 ? "Role of this server" : "Which server is the primary?",
      options: [
        { value: -1, label: "detect it", hint: "role = auto: follow pg_is_in_recovery()" },
        ...servers.map((s, i) => ({ value: i, label: `${s.host}:${s.port}`, hint: servers.length > 1 ? "the rest are replicas" : "primary" })),
      ],
    }),
  );
  const nodes = servers.map((s, i) => {
    if (primary === -1) return { name: `node${i + 1}`, ...s, role: "auto" as const };
    if (i === primary) return { name: "primary", ...s, role: "primary" as const };
    return { name: `replica${i < primary ? i + 1 : i}`, ...s, role: "replica" as const };
  });
  const firstUser = fromFlags.users[0]?.name ?? "app";
  const name = await ask(p.text({ message: "User name clients log in with", placeholder: firstUser, defaultValue: firstUser }));
  const auth = await ask(
    p.select<ClientAuthMethod>({
      message: "How do clients authenticate?",
      initialValue: (flags.auth as ClientAuthMethod | undefined) ?? "scram-sha-256",
      options: [
        { value: "scram-sha-256", label: "scram-sha-256", hint: "recommended" },
        { value: "md5", label: "md5", hint: "for old clients" },
        { value: "trust", label: "trust", hint: "no password: trusted networks only" },
      ],
    }),
  );
  const password =
    auth === "trust"
      ? undefined
      : await ask(p.password({ message: `Password for ${name}`, validate: (v) => (v ? undefined : "a password is required") }));
  const mode = await ask(
    p.select<PoolMode>({
      message: "Pool mode",
      initialValue: (flags["pool-mode"] as PoolMode | undefined) ?? (defaultOf("pool", "mode") as PoolMode),
      options: [
        { value: "session", label: "session", hint: "a client keeps one server connection until it disconnects" },
        { value: "transaction", label: "transaction", hint: "a server connection is lent for one transaction at a time" },
      ],
    }),
  );
  const defaultSize = String(flags["pool-size"] ?? defaultOf("pool", "size"));
  const size = await ask(
    p.text({
      message: "Server connections per node, user and database",
      placeholder: defaultSize,
      defaultValue: defaultSize,
      validate: (v) => (!v || (/^\d+$/.test(v) && Number(v) >= 1) ? undefined : "expected an integer >= 1"),
    }),
  );
  let out = flags.out ?? DEFAULT_OUT;
  for (;;) {
    out = await ask(p.text({ message: "Write the configuration to", placeholder: out, defaultValue: out }));
    if (flags.force || !(await exists(out))) break;
    if (await ask(p.confirm({ message: `${out} exists. Overwrite it?`, initialValue: false }))) break;
  }
  const listen = parseHostPort(listenText, 0)!;
  return {
    answers: { listen, nodes, users: [{ name, auth, ...(password !== undefined && { password }) }], pool: { mode, size: Number(size) } },
    out,
  };
}

function splitServers(text: string): string[] {
  return text.split(/[,\s]+/).filter((s) => s !== "");
}

async function runInteractive(flags: Flags, fromFlags: InitAnswers): Promise<number> {
  p.intro("pgroute init");
  try {
    const { answers, out } = await askAnswers(flags, fromFlags);
    const spin = p.spinner();
    spin.start(`Writing ${out}`);
    try {
      // The user confirmed any overwrite already, so write as if --force.
      await writeConfig(out, answers, true);
    } catch (err) {
      spin.error(`Could not write ${out}`);
      throw err;
    }
    spin.stop(`Wrote ${out} (${summary(answers)})`);
    p.outro("Every other key is documented in examples/pgroute.toml.");
    return 0;
  } catch (err) {
    if (!(err instanceof Cancelled)) throw err;
    p.cancel("cancelled");
    return 1;
  }
}

// ---- the command ----

/** `pgroute init`: write a starter pgroute.toml, interactively on a terminal or from flags. */
export const init: Command = {
  name: "init",
  summary: "write a starter pgroute.toml (asks on a terminal, or takes flags)",
  help: `Usage: pgroute init [options]

Writes a starter configuration. On a terminal it asks; otherwise, or with --yes, it uses the flags below.
The file holds only what was chosen; examples/pgroute.toml documents every key and its default.

Options:
  -o, --out FILE                 file to write (default: ${DEFAULT_OUT})
      --listen HOST:PORT         where clients connect (default: ${DEFAULT_LISTEN})
      --node NAME=HOST:PORT[:ROLE]
                                 a PostgreSQL server, repeatable; ROLE is ${ROLES.join(", ")}
                                 (default: ${DEFAULT_NODE})
      --user NAME:PASSWORD       a login for clients, repeatable (just NAME with --auth trust)
      --auth METHOD              client authentication: ${AUTH.join(", ")} (default: ${defaultOf("users", "auth")})
      --pool-mode MODE           ${MODES.join(" or ")} (default: ${defaultOf("pool", "mode")})
      --pool-size N              server connections per node, user and database (default: ${defaultOf("pool", "size")})
  -f, --force                    overwrite FILE if it exists
  -y, --yes                      do not ask, even on a terminal

Passwords given with --user are visible in the process list while init runs; on a shared machine,
run init interactively instead. The file is written with mode 0600.`,

  async run(argv) {
    const { values: flags } = parseFlags(argv, FLAGS);
    // Flags are checked even on a terminal, so a typo fails before any question is asked.
    const fromFlags = answersFromFlags(flags);
    if (!flags.yes && process.stdin.isTTY && process.stdout.isTTY) return runInteractive(flags, fromFlags);
    const out = flags.out ?? DEFAULT_OUT;
    await writeConfig(out, fromFlags, flags.force ?? false);
    console.log(`wrote ${out} (${summary(fromFlags)})`);
    if (fromFlags.users.length === 0) console.error("note: no --user given, so no client can log in until a [[users]] table is added");
    return 0;
  },
};

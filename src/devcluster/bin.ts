/**
 * Finding the PostgreSQL server binaries the dev cluster needs. Distributions scatter them: Debian keeps them in
 * /usr/lib/postgresql/<major>/bin (off PATH), Homebrew and source builds put them on PATH, and some setups
 * symlink only a few of them onto PATH — so a PATH hit is followed through its symlink before giving up.
 */
import { accessSync, constants, readdirSync, realpathSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { DevClusterError } from "./errors.ts";

/** Every binary the dev cluster runs; a directory qualifies only if it holds all of them. */
export const PG_BINARIES = ["initdb", "pg_ctl", "postgres", "pg_basebackup"] as const;

/** Where `findPgBin` looks for versioned installs (Debian/Ubuntu layout), newest major first. */
export const PG_LIB_ROOTS = ["/usr/lib/postgresql"] as const;

/** Inputs of `findPgBin`, injectable so tests can simulate a machine without PostgreSQL. */
export interface FindPgBinOptions {
  env?: Record<string, string | undefined>;
  libRoots?: readonly string[];
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function hasAll(dir: string): boolean {
  return PG_BINARIES.every((b) => isExecutable(join(dir, b)));
}

/** `<root>/<version>/bin` directories, highest version first ("15" > "9.6" > "9.5"). */
function versionedBins(root: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(root);
  } catch {
    return [];
  }
  const version = (v: string) => v.split(".").map((n) => Number.parseInt(n, 10) || 0);
  return entries
    .filter((e) => /^\d+(\.\d+)?$/.test(e))
    .sort((a, b) => {
      const [a0 = 0, a1 = 0] = version(a);
      const [b0 = 0, b1 = 0] = version(b);
      return b0 - a0 || b1 - a1;
    })
    .map((e) => join(root, e, "bin"));
}

/**
 * The directory holding initdb, pg_ctl, postgres and pg_basebackup.
 *
 * `PGROUTE_PG_BIN`, when set, is the only place looked at (an explicit choice that is wrong should fail, not be
 * silently replaced). Otherwise: each PATH entry with an `initdb` (and the directory its symlink resolves to),
 * then the newest `/usr/lib/postgresql/<major>/bin`.
 *
 * @throws DevClusterError listing every place looked at and how to install PostgreSQL.
 */
export function findPgBin(opts: FindPgBinOptions = {}): string {
  const env = opts.env ?? process.env;
  const looked: string[] = [];
  const explicit = env.PGROUTE_PG_BIN;
  if (explicit) {
    if (hasAll(explicit)) return explicit;
    looked.push(`$PGROUTE_PG_BIN (${explicit})`);
  } else {
    const pathDirs = (env.PATH ?? "").split(delimiter).filter(Boolean);
    for (const dir of pathDirs) {
      if (hasAll(dir)) return dir;
      const initdb = join(dir, "initdb");
      if (!isExecutable(initdb)) continue;
      try {
        const real = dirname(realpathSync(initdb));
        if (hasAll(real)) return real;
      } catch {
        // A dangling symlink: keep looking.
      }
    }
    looked.push("$PATH");
    for (const root of opts.libRoots ?? PG_LIB_ROOTS) {
      const found = versionedBins(root).find(hasAll);
      if (found) return found;
      looked.push(`${root}/*/bin`);
    }
  }
  throw new DevClusterError(
    `PostgreSQL server binaries (${PG_BINARIES.join(", ")}) not found; looked in ${looked.join(", ")}.\n` +
      "Install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) " +
      "or set PGROUTE_PG_BIN to the directory that holds them.",
  );
}

/**
 * Routing hints written in SQL comments: `/* pgroute: primary *\/`, `/* pgroute: replica *\/` (also
 * `-- pgroute: …`), and the common short forms `/* read-primary *\/` and `/* read-replica *\/`. Only comments are
 * looked at — never string literals or identifiers — so a hint cannot be smuggled in through data.
 */
export type Target = "primary" | "replica";

const HINT = /(?:^|[^\w-])(?:pgroute\s*:\s*(primary|replica)|read-(primary|replica))(?![\w-])/i;

/** The hint in a statement's comments; the last one wins when there are several. */
export function hintIn(comments: readonly string[]): Target | null {
  let found: Target | null = null;
  for (const c of comments) {
    const m = HINT.exec(c);
    if (m) found = (m[1] ?? m[2])!.toLowerCase() as Target;
  }
  return found;
}

/**
 * Names of tables and functions as a user writes them in the config (`accounts`, `billing.invoices`,
 * `"Mixed Case"`), read with SQL's rules: unquoted parts fold to lower case, double-quoted parts keep theirs
 * (`""` is a quote), parts are separated by dots. Matching a name in a statement is conservative: an unqualified
 * name in the config matches that name in any schema, and a qualified one also matches the unqualified name in a
 * statement (which may resolve to it through search_path — pgroute does not know the session's search_path).
 *
 * A leaf module (no imports): config validation uses it too.
 */

/** A name from the config: its schema (if written) and its object name, both as the catalog spells them. */
export interface QualifiedName {
  readonly schema: string | null;
  readonly name: string;
}

const UNQUOTED = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*$/;

/** The parts of a dotted SQL name, or null when it is not one. A leading `catalog.` part is dropped. */
export function parseName(text: string): QualifiedName | null {
  const parts: string[] = [];
  let i = 0;
  while (i <= text.length) {
    if (text[i] === '"') {
      let j = i + 1;
      let part = "";
      for (;;) {
        if (j >= text.length) return null; // unterminated
        if (text[j] === '"') {
          if (text[j + 1] === '"') {
            part += '"';
            j += 2;
            continue;
          }
          break;
        }
        part += text[j++];
      }
      if (part === "") return null;
      parts.push(part);
      i = j + 1;
    } else {
      let j = text.indexOf(".", i);
      if (j < 0) j = text.length;
      const part = text.slice(i, j);
      if (!UNQUOTED.test(part)) return null;
      parts.push(part.toLowerCase());
      i = j;
    }
    if (i === text.length) break;
    if (text[i] !== ".") return null;
    i++;
  }
  if (parts.length === 0 || parts.length > 3) return null;
  const name = parts[parts.length - 1]!;
  return { schema: parts.length > 1 ? parts[parts.length - 2]! : null, name };
}

/** Whether a name in a statement (`schema` null when unqualified) may be the configured `want`. */
export function nameMatches(want: QualifiedName, schema: string | null, name: string): boolean {
  if (want.name !== name) return false;
  return want.schema === null || schema === null || want.schema === schema;
}

/** How a name is shown in messages. */
export function showName(schema: string | null, name: string): string {
  return schema ? `${schema}.${name}` : name;
}

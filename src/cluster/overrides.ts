/**
 * What an operator decided about nodes, through the admin API or console, over whatever the config and the
 * monitor say: a drained node gets no new leases (running ones finish), and a node's role can be set by hand
 * (after a failover the monitor has not seen yet, or to take a node out of the read pool as a primary would be).
 * Overrides live as long as the process (a reload keeps them for nodes that remain); whoever publishes the
 * cluster snapshot folds them in, and routing respects them.
 */

/** A role set by hand; `auto` (in the API) removes the override. */
export type RoleOverride = "primary" | "replica";

export interface NodeOverride {
  readonly drained: boolean;
  readonly role: RoleOverride | null;
}

const NONE: NodeOverride = Object.freeze({ drained: false, role: null });

export class Overrides {
  private readonly drained = new Set<string>();
  private readonly roles = new Map<string, RoleOverride>();
  private listeners: (() => void)[] = [];
  /** Increments with every change. */
  version = 0;

  /** What is overridden for node `name`. */
  of(name: string): NodeOverride {
    const role = this.roles.get(name) ?? null;
    const drained = this.drained.has(name);
    return role === null && !drained ? NONE : { drained, role };
  }

  isDrained(name: string): boolean {
    return this.drained.size > 0 && this.drained.has(name);
  }

  /** The role set by hand for `name`, or null. */
  roleOf(name: string): RoleOverride | null {
    return this.roles.size > 0 ? (this.roles.get(name) ?? null) : null;
  }

  /** The node whose role was set to primary by hand, if any. */
  get primary(): string | null {
    for (const [name, role] of this.roles) if (role === "primary") return name;
    return null;
  }

  /** No new leases on `name`. Returns false when it was drained already. */
  drain(name: string): boolean {
    if (this.drained.has(name)) return false;
    this.drained.add(name);
    this.changed();
    return true;
  }

  /** Undoes {@link drain}. Returns false when it was not drained. */
  enable(name: string): boolean {
    if (!this.drained.delete(name)) return false;
    this.changed();
    return true;
  }

  /**
   * Sets (or with `auto` clears) the role of `name`. There is one primary: naming a new one clears the override
   * that named another.
   */
  setRole(name: string, role: RoleOverride | "auto"): void {
    if (role === "auto") this.roles.delete(name);
    else {
      if (role === "primary") for (const [other, r] of this.roles) if (r === "primary" && other !== name) this.roles.delete(other);
      this.roles.set(name, role);
    }
    this.changed();
  }

  /** Forgets overrides of nodes no longer configured (a reload removed them). */
  retain(names: ReadonlySet<string>): void {
    let dropped = false;
    for (const n of [...this.drained]) if (!names.has(n)) dropped = this.drained.delete(n) || dropped;
    for (const n of [...this.roles.keys()]) if (!names.has(n)) dropped = this.roles.delete(n) || dropped;
    if (dropped) this.changed();
  }

  /** Calls `l` after every change; returns the unsubscribe function. */
  subscribe(l: () => void): () => void {
    this.listeners = [...this.listeners, l];
    return () => {
      this.listeners = this.listeners.filter((x) => x !== l);
    };
  }

  private changed(): void {
    this.version++;
    for (const l of this.listeners) l();
  }
}

/**
 * The idle-in-transaction clock of one client: started each time the client is answered inside a transaction and
 * has nothing more in flight, it fires once the client has said nothing for the whole limit. One timer per idle
 * stretch rather than one per statement: when it fires early (the client spoke and went idle again since), it
 * waits for what is left.
 */
export type IdleState =
  /** No transaction any more: the clock stops. */
  | "done"
  /** A request is under way: not idle. */
  | "busy"
  | "idle";

export class IdleClock {
  /** Client messages seen, and their count when the client last went idle. */
  private touched = 0;
  private mark = 0;
  private since = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly limitMs: number,
    /** Where the session stands when the clock looks. */
    private readonly state: () => IdleState,
    /** The client sat idle in its transaction for the whole limit. */
    private readonly expire: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** A client message arrived. */
  touch(): void {
    this.touched++;
  }

  /** The client was answered inside a transaction and nothing else is in flight. */
  idle(): void {
    this.mark = this.touched;
    this.since = this.now();
    this.timer ??= setTimeout(this.check, this.limitMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private readonly check = (): void => {
    this.timer = null;
    const state = this.state();
    if (state === "done") return;
    const left = state === "busy" || this.touched !== this.mark ? this.limitMs : this.limitMs - (this.now() - this.since);
    if (left > 0) this.timer = setTimeout(this.check, left);
    else this.expire();
  };
}

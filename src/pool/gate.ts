/**
 * PAUSE and RESUME: while the gate is closed no server connection is leased, so no new transaction starts (in
 * transaction pooling) and no new session gets a server (in session pooling); sessions that hold a connection —
 * a transaction under way, a pinned or session-pooled client — go on. As with PgBouncer, a client waits for
 * RESUME however long that takes; `checkout_timeout` counts only from then.
 */
export class PauseGate {
  private waiting: (() => void)[] = [];
  private closedSince: number | null = null;

  /** Whether new leases are held back. */
  get paused(): boolean {
    return this.closedSince !== null;
  }

  /** Epoch ms when the gate was closed, or null while it is open. */
  get pausedSince(): number | null {
    return this.closedSince;
  }

  /** Clients waiting for RESUME. */
  get waiters(): number {
    return this.waiting.length;
  }

  /** Returns false when it was paused already. */
  pause(now = Date.now()): boolean {
    if (this.closedSince !== null) return false;
    this.closedSince = now;
    return true;
  }

  /** Lets every waiting client through. Returns false when it was not paused. */
  resume(): boolean {
    if (this.closedSince === null) return false;
    this.closedSince = null;
    const waiting = this.waiting;
    this.waiting = [];
    for (const go of waiting) go();
    return true;
  }

  /** Resolves at once while open, else at RESUME. */
  pass(): Promise<void> | null {
    if (this.closedSince === null) return null;
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * A broadcast "something changed" for the few callers that wait for the cluster rather than poll it: a write
 * waiting for a primary (a new snapshot may name one), a read waiting for a replica to replay a session's write
 * (the monitor read newer replay positions). Firing wakes every waiter; nothing is remembered between firings.
 */
export class Signal {
  private waiters: (() => void)[] = [];

  /** Wakes everyone waiting now. */
  fire(): void {
    if (this.waiters.length === 0) return;
    const woken = this.waiters;
    this.waiters = [];
    for (const w of woken) w();
  }

  /** Resolves at the next {@link fire}, or after `timeoutMs` (true when it fired). */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | null = null;
      const woken = () => {
        if (timer) clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(woken);
      timer = setTimeout(() => {
        const i = this.waiters.indexOf(woken);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, Math.max(0, timeoutMs));
      timer.unref?.();
    });
  }

  /** Callers waiting now. */
  get waiting(): number {
    return this.waiters.length;
  }
}

/**
 * Waiting for a condition in tests: poll, bounded by a deadline, and fail with what was seen. The short pause
 * between polls lives here so tests never sleep in place of a condition.
 */

/** Calls `read` until `accept` takes its value; rejects after `timeoutMs` with the last value seen. */
export async function waitFor<T>(what: string, read: () => Promise<T> | T, accept: (v: T) => boolean, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await read();
    if (accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await Bun.sleep(everyMs);
  }
}

/** Waits until `check` is true; rejects after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 20): Promise<void> {
  await waitFor(what, check, (ok) => ok, timeoutMs, everyMs);
}

/** Like `eventually`, but gives up quietly: for "until X, at most this long" waits whose caller checks X itself. */
export async function pollUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check()) && Date.now() <= deadline) await Bun.sleep(everyMs);
}

/**
 * A pause on purpose, never a wait for a condition: pacing input (a slow client, a split write), or the window in
 * which something must *not* happen (a connection that must stay open) or a peak is observed.
 */
export function pace(ms: number): Promise<void> {
  return Bun.sleep(ms);
}

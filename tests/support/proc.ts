/** Child processes in tests: wait for what they print instead of sleeping. */

/**
 * Reads `stream` until the text so far matches `pattern`; rejects after `timeoutMs` with what was seen.
 * Keeps reading in the background afterwards (so the child never blocks on a full pipe); `text()` returns all.
 */
export function watch(stream: ReadableStream<Uint8Array>) {
  let text = "";
  const waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const done = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      text += dec.decode(chunk, { stream: true });
      for (const w of [...waiters]) {
        const m = text.match(w.pattern);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    }
  })();
  return {
    text: () => text,
    done,
    until(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
      const m = text.match(pattern);
      if (m) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        const w = { pattern, resolve: (x: RegExpMatchArray) => (clearTimeout(timer), resolve(x)) };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}; output so far:\n${text}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
  };
}

/** `pgroute serve` as a child process: the CLI run from source. */
export const SERVE = [process.execPath, new URL("../../src/cli/main.ts", import.meta.url).pathname, "serve"];

/** The environment for a CLI child: no colours, whatever the environment running the tests asks for, and no config from it. */
export const CLI_ENV = (() => {
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1" };
  delete env.FORCE_COLOR;
  delete env.PGROUTE_CONFIG;
  return env;
})();

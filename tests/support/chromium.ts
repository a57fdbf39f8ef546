/**
 * Headless Chromium for tests that must see a page as a browser renders it (the `pgroute bench --html` report):
 * opens a file, waits until it has loaded, and evaluates an expression in it over the DevTools protocol.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { watch } from "./proc.ts";
import { waitFor } from "./wait.ts";

/** The Chromium binary; a missing one fails the test (`.ci/run` installs the Debian package). */
export function chromiumBinary(): string {
  const bin = Bun.which("chromium") ?? Bun.which("chromium-browser") ?? Bun.which("google-chrome");
  if (!bin) throw new Error("Chromium is not installed: apt-get install chromium (.ci/run installs it)");
  return bin;
}

interface CdpReply {
  id: number;
  result?: { result?: { value?: unknown }; exceptionDetails?: { text: string } };
  error?: { message: string };
}

/** Opens `file` in headless Chromium and returns the value of `expression` evaluated once the page has loaded. */
export async function evaluateInPage<T>(file: string, expression: string): Promise<T> {
  const profile = mkdtempSync(join(tmpdir(), "pgroute-chromium-"));
  const url = pathToFileURL(file).href;
  const proc = Bun.spawn(
    [chromiumBinary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0", `--user-data-dir=${profile}`, "--window-size=1280,2000", url],
    { stdout: "ignore", stderr: "pipe" },
  );
  let ws: WebSocket | null = null;
  try {
    const [, endpoint] = await watch(proc.stderr).until(/DevTools listening on (ws:\/\/\S+)/, 30_000);
    const port = new URL(endpoint!).port;
    const page = await waitFor(
      "the report's page in Chromium",
      async () => {
        const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; url: string; webSocketDebuggerUrl: string }[];
        return targets.find((t) => t.type === "page" && t.url === url) ?? null;
      },
      (t) => t !== null,
    );
    const socket = new WebSocket(page!.webSocketDebuggerUrl);
    ws = socket;
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error("cannot open the DevTools socket"));
    });
    const pending = new Map<number, (r: CdpReply) => void>();
    socket.onmessage = (e) => {
      const reply = JSON.parse(String(e.data)) as CdpReply;
      pending.get(reply.id)?.(reply);
      pending.delete(reply.id);
    };
    let next = 0;
    const evaluate = (expr: string) =>
      new Promise<unknown>((resolve, reject) => {
        const id = ++next;
        pending.set(id, (r) => {
          if (r.error) reject(new Error(r.error.message));
          else if (r.result?.exceptionDetails) reject(new Error(r.result.exceptionDetails.text));
          else resolve(r.result?.result?.value);
        });
        socket.send(JSON.stringify({ id, method: "Runtime.evaluate", params: { expression: expr, returnByValue: true } }));
      });
    // The target lists the file's URL before the navigation commits; until then the document is the initial
    // about:blank, which is already "complete".
    await waitFor("the page to load", () => evaluate(`location.href === ${JSON.stringify(url)} && document.readyState`), (s) => s === "complete");
    return (await evaluate(expression)) as T;
  } finally {
    ws?.close();
    proc.kill();
    await proc.exited;
    rmSync(profile, { recursive: true, force: true });
  }
}

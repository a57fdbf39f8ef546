// Invariant: the dashboard at GET / of the admin listener, rendered by a real browser (headless Chromium driven by
// playwright-core), shows every node of the cluster with its role, and updates by itself after traffic: the
// fingerprint sent through pgroute appears with its count, and the nodes that ran it show their requests. Without
// the token it asks for one instead of showing data.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chromium, type Browser, type Page } from "playwright-core";
import postgres from "postgres";
import { ADMIN_TOKEN, startAdminProxy, type AdminProxy } from "../support/admin.ts";
import { eventually } from "../support/wait.ts";

const CHROMIUM = "/usr/bin/chromium";

let ap: AdminProxy;
let browser: Browser;

beforeAll(async () => {
  if (!(await Bun.file(CHROMIUM).exists())) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)`);
  ap = await startAdminProxy();
  browser = await chromium.launch({ executablePath: CHROMIUM });
});
afterAll(async () => {
  await browser?.close();
  await ap?.stop();
});

/** The text of the cells of the row of node `name`, by their first class. */
async function nodeRow(page: Page, name: string): Promise<Record<string, string>> {
  const cells = page.locator(`#nodes tr[data-node="${name}"] td`);
  const out: Record<string, string> = {};
  for (let i = 0; i < (await cells.count()); i++) {
    const cell = cells.nth(i);
    out[((await cell.getAttribute("class")) ?? "").split(" ")[0]!] = (await cell.textContent()) ?? "";
  }
  return out;
}

/** The `data-*` attribute `name` of every element `selector` matches, in order. */
async function dataOf(page: Page, selector: string, name: string): Promise<(string | null)[]> {
  const els = page.locator(selector);
  const out: (string | null)[] = [];
  for (let i = 0; i < (await els.count()); i++) out.push(await els.nth(i).getAttribute(`data-${name}`));
  return out;
}

describe("the dashboard in headless Chromium", () => {
  test("without the token it asks for one", async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${ap.base}/?refresh=500`);
      await page.waitForSelector("#login:not([hidden])", { timeout: 10_000 });
      expect(await page.isHidden("#main")).toBe(true);
      await page.fill("#token", ADMIN_TOKEN);
      await page.click("#login button");
      await page.waitForSelector(`#nodes tr[data-node="${ap.tp.cluster.primary.name}"]`, { timeout: 10_000 });
    } finally {
      await page.close();
    }
  });

  test("shows the cluster's nodes, then the traffic sent through pgroute without a reload", async () => {
    const page = await browser.newPage();
    const sql = postgres(ap.tp.url(), { max: 1, onnotice: () => {}, fetch_types: false });
    try {
      await page.goto(`${ap.base}/?refresh=500#token=${ADMIN_TOKEN}`);
      const { cluster } = ap.tp;
      for (const n of cluster.nodes) await page.waitForSelector(`#nodes tr[data-node="${n.name}"]`, { timeout: 10_000 });
      expect(await dataOf(page, "#nodes tbody tr", "node")).toEqual(cluster.nodes.map((n) => n.name));
      expect(await nodeRow(page, cluster.primary.name)).toMatchObject({ name: cluster.primary.name, role: "primary", state: "up", score: "100", breaker: "closed" });
      // The monitor has measured each replica's lag (seconds and bytes behind the primary).
      for (const r of cluster.replicas) {
        const row = await nodeRow(page, r.name);
        expect(row).toMatchObject({ role: "replica", state: "up" });
        expect(row.lag).toMatch(/^\d+\.\d\d s \/ \d+(\.\d+)? [KMG]?i?B$/);
      }
      expect(page.url()).not.toContain(ADMIN_TOKEN); // the token left the address bar

      const ports = new Map<number, number>();
      for (let i = 0; i < 40; i++) {
        const [row] = await sql.unsafe<{ port: number }[]>("select inet_server_port() as port, 'dashboard' as tag").simple();
        ports.set(row!.port, (ports.get(row!.port) ?? 0) + 1);
      }
      const fingerprint = "select inet_server_port() as port, ? as tag";
      const row = page.locator("#queries tbody tr").filter({ has: page.locator(".sql", { hasText: fingerprint }) });
      await eventually("the fingerprint to show with its 40 requests", async () => (await row.count()) === 1 && (await row.locator(".count").textContent()) === "40");
      // Each replica's row counts the reads it ran (the only traffic here), and the split shows each node's share.
      for (const r of cluster.replicas) {
        const ran = String(ports.get(r.port) ?? 0);
        await eventually(`${r.name}'s row to count ${ran} requests`, async () => (await nodeRow(page, r.name)).requests === ran);
      }
      expect(await dataOf(page, "#split .row", "split-node")).toEqual(cluster.nodes.map((n) => n.name));
      expect(await page.locator(`#split .row[data-split-node="${cluster.primary.name}"] .share`).textContent()).toBe("0.0 %");
    } finally {
      await sql.end({ timeout: 1 });
      await page.close();
    }
  });
});

/**
 * The admin HTTP listener (`[admin] listen`), separate from the Postgres port: Prometheus metrics, a JSON admin
 * API and the dashboard.
 *
 *   GET  /                           the dashboard (a self-contained page; it asks for the token itself)
 *   GET  /health                     200 "ok" while pgroute runs (no token: for load balancers)
 *   GET  /metrics                    Prometheus text format
 *   GET  /status                     nodes, pools, client counts, pause state, config version
 *   GET  /queries[?limit=N]          busiest query fingerprints with counts and latency quantiles
 *   GET  /clients                    client connections
 *   POST /nodes/{name}/drain|enable  no new transactions on a node / undo
 *   POST /nodes/{name}/role          {"role": "primary"|"replica"|"auto"} (or ?role=)
 *   POST /reload | /pause | /resume
 *
 * With `admin.token` set, everything but / and /health needs `Authorization: Bearer <token>`. Without one (only
 * allowed on a loopback address), requests must name a loopback host in their Host header, so a web page cannot
 * reach the API through DNS rebinding; and a state-changing request a browser sends from another origin is
 * refused either way. The token is read for every request, so a reload changes it at once.
 */
import type { Server } from "bun";
import { createHash, timingSafeEqual } from "node:crypto";
import { isLoopback, parseAddress } from "../config/schema.ts";
import type { Proxy } from "../server.ts";
import * as actions from "./actions.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import { Metrics } from "./metrics.ts";
import { clientsView, queriesView, statusView } from "./view.ts";

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" };

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(`${JSON.stringify(body, null, 2)}\n`, { status, headers: { ...JSON_HEADERS, ...headers } });
}

const failure = (status: number, error: string, headers?: Record<string, string>) => json({ ok: false, error }, status, headers);

function outcome(o: actions.Outcome): Response {
  return o.ok ? json({ ok: true, message: o.message }) : json({ ok: false, error: o.message, code: o.code }, o.status);
}

/** Constant-time comparison of a presented token with the configured one. */
function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

export class AdminServer {
  private server: Server<undefined> | null = null;
  /** The address listened on (a reload cannot move it). */
  private boundHost = "";
  readonly metrics: Metrics;

  constructor(private readonly proxy: Proxy) {
    this.metrics = new Metrics(proxy);
  }

  /** Starts listening on `admin.listen` (port 0 picks a free one); resolves with the bound address. */
  listen(): { host: string; port: number; url: string } {
    const at = this.proxy.config.admin.listen;
    if (!at) throw new Error("admin.listen is not set");
    this.server = Bun.serve({
      hostname: at.host,
      port: at.port,
      fetch: (req) => this.handle(req),
      error: (err) => {
        this.proxy.log.error("admin_request_failed", { error: err.message });
        return failure(500, `pgroute could not answer: ${err.message}`);
      },
    });
    this.boundHost = at.host;
    const host = this.server.hostname ?? at.host;
    const port = this.server.port ?? at.port;
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/`;
    this.proxy.log.info("admin_listening", { host, port, dashboard: url, token: this.proxy.config.admin.token ? "required" : "none (loopback only)" });
    return { host, port, url };
  }

  stop(): void {
    this.server?.stop(true);
    this.server = null;
  }

  private async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const token = this.proxy.config.admin.token;
    const read = req.method === "GET" || req.method === "HEAD";
    if (path === "/health" && read) return new Response("ok\n", { headers: { "content-type": "text/plain" } });
    if (!token) {
      // A reload may have dropped the token; a listener others can reach then serves nothing but /health.
      if (!isLoopback(this.boundHost)) return failure(403, "admin.token is required on a listener that is not on a loopback address");
      if (!loopbackHost(req.headers.get("host"))) return failure(403, "the Host header must name a loopback address (admin.token is not set)");
    }
    if (path === "/" && read) return new Response(DASHBOARD_HTML, { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" } });
    if (token) {
      const auth = req.headers.get("authorization") ?? "";
      const presented = /^Bearer\s+(.+)$/i.exec(auth)?.[1]?.trim();
      if (!presented || !tokenMatches(presented, token)) return failure(401, "a valid admin token is required (Authorization: Bearer …)", { "www-authenticate": 'Bearer realm="pgroute"' });
    }
    if (req.method === "POST") {
      const origin = req.headers.get("origin");
      if (origin && origin !== url.origin) return failure(403, `requests from ${origin} may not change pgroute`);
      return this.post(path, req, url);
    }
    if (!read) return failure(405, `${req.method} is not supported`, { allow: "GET, POST" });
    return this.get(path, url);
  }

  private async get(path: string, url: URL): Promise<Response> {
    switch (path) {
      case "/metrics":
        return new Response(await this.metrics.scrape(), { headers: { "content-type": this.metrics.contentType } });
      case "/status":
        return json(statusView(this.proxy));
      case "/queries": {
        const limit = Number(url.searchParams.get("limit") ?? "");
        const table = this.proxy.traffic.fingerprints;
        return json({ capacity: table.limit, tracked: table.size, evicted: table.evicted, queries: queriesView(this.proxy, Number.isInteger(limit) && limit > 0 ? limit : undefined) });
      }
      case "/clients":
        return json({ clients: clientsView(this.proxy) });
      case "/reload":
      case "/pause":
      case "/resume":
        return failure(405, `use POST ${path}`, { allow: "POST" });
    }
    if (/^\/nodes\/[^/]+\/(drain|enable|role)$/.test(path)) return failure(405, `use POST ${path}`, { allow: "POST" });
    return failure(404, `no such endpoint: ${path}`);
  }

  private async post(path: string, req: Request, url: URL): Promise<Response> {
    const by = `http:${this.server?.requestIP(req)?.address ?? "?"}`;
    switch (path) {
      case "/reload":
        return outcome(await actions.reload(this.proxy, by));
      case "/pause":
        return outcome(actions.pause(this.proxy, by));
      case "/resume":
        return outcome(actions.resume(this.proxy, by));
    }
    const m = /^\/nodes\/([^/]+)\/(drain|enable|role)$/.exec(path);
    if (!m) return failure(path === "/metrics" || path === "/status" || path === "/queries" || path === "/clients" ? 405 : 404, `no such endpoint: POST ${path}`);
    const name = decodeURIComponent(m[1]!);
    switch (m[2]) {
      case "drain":
        return outcome(actions.drain(this.proxy, name, by));
      case "enable":
        return outcome(actions.enable(this.proxy, name, by));
      default: {
        const role = url.searchParams.get("role") ?? (await roleFromBody(req));
        if (role === null) return failure(400, `expected {"role": "primary" | "replica" | "auto"}`);
        return outcome(actions.setRole(this.proxy, name, role, by));
      }
    }
  }
}

/** `{"role": …}` from a JSON body, or null. */
async function roleFromBody(req: Request): Promise<string | null> {
  try {
    const body = (await req.json()) as { role?: unknown };
    return typeof body?.role === "string" ? body.role : null;
  } catch {
    return null;
  }
}

/** Whether a Host header names this machine (`127.0.0.1:9930`, `localhost`, `[::1]:9930`). */
function loopbackHost(host: string | null): boolean {
  if (!host) return false;
  const address = parseAddress(host);
  const name = address ? address.host : host.replace(/^\[(.*)\]$/, "$1");
  return isLoopback(name);
}

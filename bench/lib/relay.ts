#!/usr/bin/env bun
/**
 * The runtime's floor: the least a proxy written for Bun can cost per query. A plain TCP relay on Bun's own
 * sockets (`Bun.listen`, `Bun.connect`) — one server connection per client, bytes copied both ways, no protocol
 * parsing, no pooling, no routing — so its CPU per query is what Bun's event loop, socket callbacks and the kernel's
 * loopback TCP take for the four reads and writes every relayed query needs. pgroute runs on the same runtime and
 * does those same four system calls per query, plus its own work; the benchmarks show this floor beside it.
 *
 *   bun bench/lib/relay.ts LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 */
import type { Socket } from "bun";

interface Side {
  /** The other side; null until the server connection is open. */
  peer: Socket<Side> | null;
  /** Bytes for this socket that it has not taken yet (not connected yet, or a partial write). */
  queued: Uint8Array[];
}

/** Writes `bytes` to `to`, keeping what it does not take for its drain (nothing is lost under backpressure). */
function send(to: Socket<Side>, bytes: Uint8Array): void {
  if (to.data.queued.length > 0) {
    to.data.queued.push(bytes.slice());
    return;
  }
  const n = to.write(bytes);
  if (n < bytes.length) to.data.queued.push(bytes.slice(Math.max(n, 0)));
}

function drain(s: Socket<Side>): void {
  const queued = s.data.queued;
  s.data.queued = [];
  for (const [i, b] of queued.entries()) {
    const n = s.write(b);
    if (n < b.length) {
      s.data.queued = [b.slice(Math.max(n, 0)), ...queued.slice(i + 1)];
      return;
    }
  }
}

const [listenPort, upstreamHost, upstreamPort] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
if (!(listenPort > 0) || !upstreamHost || !(upstreamPort > 0)) {
  console.error("usage: bun bench/lib/relay.ts LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT");
  process.exit(2);
}

Bun.listen<Side>({
  hostname: "127.0.0.1",
  port: listenPort,
  socket: {
    open(client) {
      client.data = { peer: null, queued: [] };
      Bun.connect<Side>({
        hostname: upstreamHost,
        port: upstreamPort,
        socket: {
          open(server) {
            server.data = { peer: client, queued: client.data.queued };
            client.data = { peer: server, queued: [] };
            drain(server);
          },
          data: (server, bytes) => send(server.data.peer!, bytes),
          drain,
          close: (server) => void server.data.peer?.end(),
          connectError: () => void client.end(),
        },
      }).catch(() => void client.end());
    },
    data(client, bytes) {
      const server = client.data.peer;
      // Until the server connection is open, what the client sends waits in the queue the server side adopts.
      if (server) send(server, bytes);
      else client.data.queued.push(bytes.slice());
    },
    drain,
    close: (client) => void client.data.peer?.end(),
  },
});
console.log(`relaying 127.0.0.1:${listenPort} → ${upstreamHost}:${upstreamPort}`);

/**
 * A TCP relay that injects faults between pgroute and a real server: every chunk the server sends is held for
 * `delayMs` before it is passed on (in order), so the node looks that much slower to everyone who connects through
 * the relay — pgroute's pools and its monitor alike. Point a node's host:port at `relay.port`. The delay can be
 * changed while it runs. Listens on port 0 of 127.0.0.1.
 */
import type { Socket, TCPSocketListener } from "bun";

export interface FaultRelay {
  readonly port: number;
  /** Milliseconds added to everything the server sends. */
  delayMs: number;
  /** Connections relayed so far. */
  readonly connections: number;
  stop(): void;
}

/** Writes to a socket in order, keeping what it could not take until it drains. */
class Out {
  private pending: Uint8Array[] = [];
  socket: Socket<unknown> | null = null;

  write(bytes: Uint8Array): void {
    if (!this.socket || this.pending.length > 0) {
      this.pending.push(bytes);
      return;
    }
    const n = this.socket.write(bytes);
    if (n < bytes.length) this.pending.push(bytes.subarray(Math.max(0, n)));
  }

  drain(): void {
    while (this.socket && this.pending.length > 0) {
      const bytes = this.pending[0]!;
      const n = this.socket.write(bytes);
      if (n < bytes.length) {
        this.pending[0] = bytes.subarray(Math.max(0, n));
        return;
      }
      this.pending.shift();
    }
  }
}

interface Pair {
  toClient: Out;
  toServer: Out;
  client: Socket<Pair>;
  server: Socket<Pair> | null;
  /** When the last delayed chunk goes out, so chunks keep their order. */
  releaseAt: number;
  closed: boolean;
}

export async function startFaultRelay(target: { host: string; port: number }, delayMs = 0): Promise<FaultRelay> {
  let connections = 0;
  const pairs = new Set<Pair>();
  const close = (p: Pair) => {
    if (p.closed) return;
    p.closed = true;
    pairs.delete(p);
    p.client.end();
    p.server?.end();
  };
  const relay = {
    port: 0,
    delayMs,
    get connections() {
      return connections;
    },
    stop() {
      listener.stop(true);
      for (const p of [...pairs]) close(p);
    },
  };
  const listener: TCPSocketListener<Pair> = Bun.listen<Pair>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        connections++;
        const pair: Pair = { toClient: new Out(), toServer: new Out(), client, server: null, releaseAt: 0, closed: false };
        pair.toClient.socket = client as Socket<unknown>;
        pairs.add(pair);
        client.data = pair;
        Bun.connect<Pair>({
          hostname: target.host,
          port: target.port,
          data: pair,
          socket: {
            open(server) {
              pair.server = server;
              pair.toServer.socket = server as Socket<unknown>;
              pair.toServer.drain();
            },
            data(_server, chunk) {
              const copy = new Uint8Array(chunk);
              const now = performance.now();
              pair.releaseAt = Math.max(pair.releaseAt, now + relay.delayMs);
              setTimeout(() => pair.closed || pair.toClient.write(copy), pair.releaseAt - now);
            },
            drain() {
              pair.toServer.drain();
            },
            // The server's close follows its last (delayed) bytes.
            close() {
              setTimeout(() => close(pair), Math.max(0, pair.releaseAt - performance.now()) + 1);
            },
            error() {
              close(pair);
            },
          },
        }).catch(() => close(pair));
      },
      data(client, chunk) {
        client.data.toServer.write(new Uint8Array(chunk));
      },
      drain(client) {
        client.data.toClient.drain();
      },
      close(client) {
        close(client.data);
      },
      error(client) {
        close(client.data);
      },
    },
  });
  relay.port = listener.port;
  return relay;
}

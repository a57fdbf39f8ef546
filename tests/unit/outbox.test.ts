// Invariant: while gatherWrites runs, a client's writes are collected and reach its socket in one write, in
// order, after the step; a partial write queues the rest and blocks the owner; a closed socket is reported to the
// owner; outboxes that do not gather (server connections) and writes outside a step go out at once.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { gatherWrites, Outbox, type OutboxOwner } from "../../src/net/outbox.ts";

/** A socket that records each write and takes at most `room` bytes of it (-1: closed). */
function recordingSocket(room = Number.POSITIVE_INFINITY) {
  const writes: string[] = [];
  const socket = {
    room,
    write(buf: Uint8Array, offset = 0, length = buf.length - offset): number {
      if (socket.room < 0) return -1;
      const n = Math.min(length, socket.room);
      writes.push(Buffer.from(buf.subarray(offset, offset + n)).toString());
      return n;
    },
  };
  return { socket: socket as unknown as Socket<unknown> & { room: number }, writes };
}

function owner() {
  const events: string[] = [];
  const o: OutboxOwner = {
    onBlocked: () => events.push("blocked"),
    onUnblocked: () => events.push("unblocked"),
    onWriteFailed: () => events.push("failed"),
    onQueued: () => events.push("queued"),
  };
  return { o, events };
}

const bytes = (s: string) => new Uint8Array(Buffer.from(s));

describe("gatherWrites", () => {
  test("a client's writes during a step reach its socket as one write, in order", () => {
    const { socket, writes } = recordingSocket();
    const box = new Outbox(socket, owner().o, true);
    const chunk = bytes("..RowDescription|DataRow|ReadyForQuery..");
    gatherWrites(() => {
      box.write(chunk, 2, 17); // a view into the chunk
      box.write(bytes("[injected]"));
      box.write(chunk, 17, chunk.length - 2);
      expect(writes).toEqual([]); // nothing written during the step
    });
    expect(writes).toEqual(["RowDescription|[injected]DataRow|ReadyForQuery"]);
  });

  test("each outbox gets its own write; a nested step adds to the outer one", () => {
    const a = recordingSocket();
    const b = recordingSocket();
    const boxA = new Outbox(a.socket, owner().o, true);
    const boxB = new Outbox(b.socket, owner().o, true);
    gatherWrites(() => {
      boxA.write(bytes("a1"));
      boxB.write(bytes("b1"));
      gatherWrites(() => boxA.write(bytes("a2")));
      expect(a.writes).toEqual([]);
    });
    expect(a.writes).toEqual(["a1a2"]);
    expect(b.writes).toEqual(["b1"]);
  });

  test("outside a step, and for outboxes that do not gather, writes go out at once", () => {
    const client = recordingSocket();
    const server = recordingSocket();
    const clientBox = new Outbox(client.socket, owner().o, true);
    const serverBox = new Outbox(server.socket, owner().o);
    clientBox.write(bytes("now"));
    expect(client.writes).toEqual(["now"]);
    gatherWrites(() => {
      serverBox.write(bytes("Q1"));
      serverBox.write(bytes("Q2"));
      expect(server.writes).toEqual(["Q1", "Q2"]);
    });
  });

  test("a partial write at the end of a step queues the rest, blocks the owner until drained and reports the queue", () => {
    const { socket, writes } = recordingSocket(4);
    const { o, events } = owner();
    const box = new Outbox(socket, o, true);
    gatherWrites(() => {
      box.write(bytes("abc"));
      box.write(bytes("defgh"));
    });
    expect(writes).toEqual(["abcd"]);
    expect(box.queued).toBe(4);
    // The owner hears of the block, then of what is queued (where it applies its client buffer limit).
    expect(events).toEqual(["blocked", "queued"]);
    // Blocked: later writes queue behind, even during a step.
    gatherWrites(() => box.write(bytes("ij")));
    expect(box.queued).toBe(6);
    socket.room = Number.POSITIVE_INFINITY;
    box.drain();
    expect(writes).toEqual(["abcd", "efgh", "ij"]);
    expect(events).toEqual(["blocked", "queued", "unblocked"]);
  });

  test("a closed socket found at the end of a step is reported to the owner", () => {
    const { socket } = recordingSocket(-1);
    const { o, events } = owner();
    const box = new Outbox(socket, o, true);
    gatherWrites(() => expect(box.write(bytes("x"))).toBe(true));
    expect(events).toEqual(["failed"]);
  });

  test("flushGathered inside a step writes what was gathered now (a client closed after its FATAL gets it)", () => {
    const { socket, writes } = recordingSocket();
    const box = new Outbox(socket, owner().o, true);
    gatherWrites(() => {
      box.write(bytes("E:FATAL"));
      box.flushGathered();
      expect(writes).toEqual(["E:FATAL"]);
      box.clear(); // what Session.close does next
    });
    expect(writes).toEqual(["E:FATAL"]);
  });

  test("writes cleared during a step (the client went away) are not written", () => {
    const { socket, writes } = recordingSocket();
    const box = new Outbox(socket, owner().o, true);
    gatherWrites(() => {
      box.write(bytes("lost"));
      box.clear();
    });
    expect(writes).toEqual([]);
  });

  test("an exception in the step still writes what was gathered before it", () => {
    const { socket, writes } = recordingSocket();
    const box = new Outbox(socket, owner().o, true);
    expect(() =>
      gatherWrites(() => {
        box.write(bytes("before"));
        throw new Error("bad reply");
      }),
    ).toThrow("bad reply");
    expect(writes).toEqual(["before"]);
  });
});

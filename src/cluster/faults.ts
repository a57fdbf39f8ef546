/**
 * Which errors count against a node's health. A client's bad SQL fails on every node alike and says nothing about
 * the node, so only the node's own failures feed its error rate and circuit breaker: lost connections and refused
 * logins, resource exhaustion, shutdowns and internal errors, and on a replica the queries hot standby cancels.
 */
import type { Target } from "../pool/group.ts";

/**
 * Whether an error with SQLSTATE `code`, from a request routed to a `target`, is the node's failure. Classes 08
 * (connection exception), 53 (insufficient resources: too many connections, disk full, out of memory), 58 (system
 * error) and XX (internal error); 57P01–57P03 (administrator or crash shutdown, cannot connect now); and on a
 * replica 40001/40P01, which is how hot standby reports a query cancelled by a conflict with recovery (a
 * serialization failure cannot otherwise happen there: standbys refuse SERIALIZABLE read-write transactions).
 */
export function isNodeFault(code: string | null, target: Target): boolean {
  if (code === null || code.length !== 5) return false;
  switch (code.slice(0, 2)) {
    case "08":
    case "53":
    case "58":
    case "XX":
      return true;
    case "57":
      return code === "57P01" || code === "57P02" || code === "57P03";
    case "40":
      return target === "replica" && (code === "40001" || code === "40P01");
    default:
      return false;
  }
}

/** Why `pgroute bench` could not plan or run; the message is for a human and names what to do. */
export class BenchError extends Error {
  override readonly name = "BenchError";
}

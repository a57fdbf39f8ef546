/** Why the local development cluster could not be started, inspected or stopped; the message is for a human. */
export class DevClusterError extends Error {
  override readonly name = "DevClusterError";
}

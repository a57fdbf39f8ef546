/**
 * Loaded before every test file (bunfig.toml `[test] preload`): a generous default timeout, and stopping the
 * shared test cluster once all tests have run. Starting it is left to the first test that calls
 * `testCluster()`, so unit-only runs pay nothing.
 */
import { afterAll, setDefaultTimeout } from "bun:test";
import { stopTestCluster } from "./cluster.ts";

// Starting the shared cluster takes a few seconds on a loaded 2-core machine; 5 s (Bun's default) is too tight.
// Set here because Bun 1.4.5 ignores `[test] timeout` in bunfig.toml; applies to tests and hooks of every file.
setDefaultTimeout(60_000);

afterAll(async () => {
  await stopTestCluster();
});

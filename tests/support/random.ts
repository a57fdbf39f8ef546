/** Seeded randomness for unit tests that inject it: the same seed, the same draws (mulberry32, as `pgroute bench --seed`). */
export { seededRandom as seeded } from "../../src/bench/client.ts";

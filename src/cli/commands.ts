import type { Command } from "./command.ts";
import { serve } from "./serve.ts";
import { demo } from "./demo.ts";
import { cluster } from "./cluster.ts";
import { init } from "./init.ts";
import { explain } from "./explain.ts";
import { check } from "./check.ts";
import { bench } from "./bench.ts";

/** Every subcommand, in the order `pgroute --help` lists them. */
export const commands: readonly Command[] = [serve, demo, cluster, init, check, explain, bench];

import type { Command } from "./command.ts";

/** A command whose issue has not landed yet: says so plainly instead of pretending. */
function later(name: string, summary: string, usage: string): Command {
  return {
    name,
    summary,
    help: `Usage: pgroute ${usage}\n\n${summary}.\n\nNot available in this version of pgroute yet.`,
    async run() {
      console.error(`pgroute ${name}: not available in this version of pgroute yet`);
      return 1;
    },
  };
}

export const check = later("check", "probe the cluster: roles, replication lag, health (check lag)", "check lag [-c FILE] [--json] [--watch]");

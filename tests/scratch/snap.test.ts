import { test } from "bun:test";
import postgres from "postgres";
import { clusterNodes, startTestProxy } from "../support/proxy.ts";
import { testCluster } from "../support/cluster.ts";
import { pace } from "../support/wait.ts";

test("scratch", async () => {
  const tp = await startTestProxy({ nodes: clusterNodes(await testCluster()), pool: { mode: "transaction" }, monitor: { ping_interval: "200ms", probe_interval: "500ms" } });
  const show = () => console.log(JSON.stringify(tp.proxy.cluster.current.nodes.map(({ node, ...n }) => n), null, 1));
  show();
  const sql = postgres(tp.url(), { max: 2 });
  for (let i = 0; i < 50; i++) await sql`select inet_server_port()`;
  await pace(1500);
  show();
  await sql.end();
  await tp.stop();
});

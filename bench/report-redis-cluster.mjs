// docs/benchmarks-redis-cluster.md (to stdout), from the load generator's
// JSON reports of scripts/bench-redis-cluster: the rooms scenario on one
// Redis and on a Redis Cluster, in one run.
// Usage: node bench/report-redis-cluster.mjs DIR CONNECTIONS ROOMS RATE
import { readFileSync } from "node:fs";

const [dir, connections, rooms, rate] = process.argv.slice(2);
const setups = ["single", "cluster", "cluster+wait"];

const rows = [];
for (const setup of setups) {
  const report = JSON.parse(readFileSync(`${dir}/redis-cluster-${setup}.json`, "utf8")).reports[0];
  const roles = readFileSync(`${dir}/redis-cluster-${setup}.roles`, "utf8")
    .trim()
    .split("\n")
    .map((line) => line.split(" "))
    .map(([port, pid, role]) => ({ port, pid: Number(pid), role }));
  // servers: the two nodes first, then the Redis processes in port order.
  const [n1, n2, ...redis] = report.servers;
  const cpu = redis.map((p, i) => `${roles[i].port}${roles[i].role === "slave" ? " (replica)" : ""}: ${p.cpu_percent.toFixed(1)}%`);
  const redisTotal = redis.reduce((sum, p) => sum + p.cpu_percent, 0);
  const busiest = Math.max(...redis.map((p) => p.cpu_percent));
  rows.push({ setup, report, n1, n2, cpu, redisTotal, busiest });
}

const single = rows[0];
const fmt = (n) => Number(n).toLocaleString("en-US");
const out = [];
out.push("# Scaling out: Redis Cluster against one Redis", "");
out.push(
  `Written by \`scripts/bench-redis-cluster\` on ${new Date().toISOString().slice(0, 10)}: the rooms scenario, ` +
    `${fmt(connections)} connections in ${fmt(rooms)} rooms, each room sending ${rate} msg/s, 64-byte payloads, ` +
    "two switchboard nodes, all on this machine's 2 cores, three times in one run: on one Redis " +
    "(`redis://`), on a Redis Cluster of three masters and three replicas (`redis+cluster://`, " +
    "scripts/lib/redis-cluster.sh), and on the cluster with `REDIS_WAIT_REPLICAS=1`. CPU is each " +
    "process's average over the sending window (100% = one core), sampled by the load generator.",
  "",
);
out.push("| Redis | delivered | lost | dup | p50 ms | p99 ms | busiest Redis process CPU | all Redis CPU | nodes CPU | each Redis process |");
out.push("|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const l = r.report.latency_ms;
  out.push(
    `| ${r.setup} | ${r.report.delivered}/${r.report.expected} | ${r.report.lost} | ${r.report.duplicates} | ${l.p50} | ${l.p99} | ` +
      `${r.busiest.toFixed(1)}% | ${r.redisTotal.toFixed(1)}% | ${(r.n1.cpu_percent + r.n2.cpu_percent).toFixed(0)}% | ${r.cpu.join(", ")} |`,
  );
}
out.push("");
for (const r of rows.slice(1)) {
  const l = r.report.latency_ms;
  out.push(
    `${r.setup} / single: p99 x${(l.p99 / single.report.latency_ms.p99).toFixed(2)}, ` +
      `busiest Redis process CPU x${(r.busiest / single.busiest).toFixed(2)}, all Redis CPU x${(r.redisTotal / single.redisTotal).toFixed(2)}`,
  );
}
out.push(
  "",
  "Reading: on the cluster each master runs a third of the rooms' ordering scripts and sharded " +
    "Pub/Sub, so the busiest Redis process (the one that would saturate first) does about half the " +
    "work of the single Redis; the cluster as a whole spends more (the replicas apply every write, " +
    "and each shard has its own per-command overhead). p99 grows on the cluster (six Redis " +
    "processes share the two cores with the nodes); waiting for a replica adds a replication round " +
    "trip before every ack and more CPU on every Redis process.",
);
console.log(out.join("\n"));

// ioredis, the Node.js client a Redis user would otherwise pick, on the
// same closed-loop workload as the other clients: --conns connections (one
// ioredis instance each, its defaults), --depth calls in flight on each
// (one async loop per call slot, `await redis.echo(payload)`, as a Node
// program is written), ECHO of --size bytes, measured for --secs after
// --warm. A peer for comparison only: bench/run.py installs ioredis with
// npm into the build directory (never into the repository) and runs this
// with NODE_PATH pointing there. Options and RESULT line: bench/common.h.
"use strict";

const Redis = require("ioredis");

function args(argv) {
  const o = { proto: "resp", host: "127.0.0.1", conns: 1, depth: 1, size: 3,
              secs: 1, warm: 0.2 };
  if (argv.length % 2 !== 0) usage();
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, "");
    if (!(k in o) && k !== "port") usage();
    o[k] = k === "proto" || k === "host" ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (o.proto !== "resp" || !(o.port > 0) || !(o.conns > 0) ||
      !(o.depth > 0) || !(o.size > 0)) usage();
  return o;
}

function usage() {
  process.stderr.write("usage: ioredis_client.js --proto resp --port N " +
    "[--host A] [--conns N] [--depth N] [--size BYTES] [--secs S] " +
    "[--warm S]\n");
  process.exit(2);
}

const sleep = (s) => new Promise((done) => setTimeout(done, s * 1000));
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function main() {
  const o = args(process.argv.slice(2));
  let payload = "";
  for (let i = 0; i < o.size; i++) payload += String.fromCharCode(97 + i % 26);
  const conns = [];
  for (let i = 0; i < o.conns; i++) {
    conns.push(new Redis({ host: o.host, port: o.port, lazyConnect: true }));
  }
  // Every connection up before the clock starts, as the other clients'.
  await Promise.all(conns.map((r) => r.connect()));

  let done = 0, failed = 0, stop = false;
  async function slot(r) {
    while (!stop) {
      try {
        const reply = await r.echo(payload);
        if (reply.length === o.size) done++; else failed++;
      } catch (e) {
        failed++;
        process.stderr.write("ioredis_client.js: " + e.message + "\n");
      }
    }
  }
  const slots = [];
  for (let d = 0; d < o.depth; d++) {
    for (const r of conns) slots.push(slot(r));
  }
  await sleep(o.warm);
  const n0 = done, c0 = cpuSeconds(), t0 = process.hrtime.bigint();
  await sleep(o.secs);
  const n1 = done, c1 = cpuSeconds(), t1 = process.hrtime.bigint();
  stop = true;
  await Promise.all(slots);
  process.stdout.write(`RESULT client=ioredis calls=${n1 - n0} ` +
    `failed=${failed} secs=${(Number(t1 - t0) / 1e9).toFixed(6)} ` +
    `cpu=${(c1 - c0).toFixed(6)}\n`);
  await Promise.all(conns.map((r) => r.quit()));
  process.exitCode = failed > 0 ? 1 : 0;
}

main().catch((e) => {
  process.stderr.write("ioredis_client.js: " + (e.stack || e) + "\n");
  process.exit(1);
});

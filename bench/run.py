#!/usr/bin/env python3
"""resilnet benchmark driver: `make bench` (full) and `make bench-quick`.

Starts the servers (redis-server, rnb-echo-server, and resilnet's rnp
server once it exists), runs every client against each in one run,
interleaved so that noise on this shared machine hits all of them alike,
then writes bench.md (tables, ratios, targets), results.json (medians, a
row a line) and throughput.png (gnuplot) to the output directory, and every
raw sample to BUILD_DIR/bench-raw.json (bench-raw-quick.json), outside the
repository. The peers: hiredis (built when libhiredis-dev is installed) and
ioredis (bench/node/ioredis_client.js; npm installs ioredis into
BUILD_DIR/node when node and npm are found); a peer that is missing has
its rows skipped and bench.md says why.

  python3 bench/run.py --build BUILD_DIR [--quick] [--out DIR] [--runs N]
                       [--secs S] [--lua LUA[,LUA]] [--clients C[,C]]
  python3 bench/run.py --callgrind-only --build BUILD_DIR [--lua LUA[,LUA]]
                       [--save FILE] [--compare FILE] [--tolerance PCT]

The full run measures the Lua clients (resilnet tasks and callbacks, luv's
load generator luv_client.lua, and luv_percall.lua, a luv client that
makes calls: each request encoded, each reply taken and handed to its own
callback) under every Lua of --lua (default lua5.4,luajit, the interpreters
issue 20's targets name), in 5 rounds whose client order rotates, and keeps
medians. luv's generator runs twice in each round of a full run under the
first Lua (luv and luv-again, the control, six places apart in the order
as the resilnet clients are three or four from luv): how far one client
lands from itself in a cell is the noise an every-cell ratio has to leave
room for. --clients limits the matrix to the clients listed (uv, rn-c,
hiredis, lua-task, lua-send, luasocket, luv, luv-again, luv-percall, ioredis,
redis-benchmark; a second Lua's as lua-task@luajit): a partial run, which
bench.md says it is and which is not for committing.

--quick is a smoke run (well under a minute): one run of a few cells under
lua5.4 only, tiny scale and resilience figures; it fails (exit 1) if any
client did not complete or a result did not parse.

--callgrind-only measures instructions per call and nothing else (a few
minutes): rnb-uv-client, rnb-rn-client, rnb-hiredis-client (when built),
the resilnet Lua clients (bench/lua/rn_task.lua, rn_send.lua) and luv's
(luv_client.lua) under each Lua listed, against rnb-echo-server and, when
redis-server is installed, a redis-server of its own (1 and 50 conns x
16 in flight, 50 x 16 being the cell issue 20's targets name).
--save writes the numbers with the measured tree's commit
(bench/results/callgrind-baseline.json holds those of the commit before
issue 16's redesign); --compare prints the change against such a file and
fails (exit 1) when a resilnet client got slower by more than --tolerance
percent (default 2; an improvement is reported, not failed). The Lua
facade measured is the one of the build's own source tree, so an old
commit's build is measured with its own lua/.
Standard library only.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Which clients speak which server's protocol (titles: report.py).
PROTO_CLIENTS = {
    "resp": ["luv-again", "uv", "rn-c", "hiredis", "lua-task", "lua-send",
             "luasocket", "luv", "luv-percall", "ioredis", "redis-benchmark"],
    "length": ["luv-again", "uv", "rn-c", "lua-task", "lua-send", "luasocket",
               "luv"],
    "rnp": ["rn-c", "lua-task", "lua-send"],
}

failures = []


def note_failure(what):
    failures.append(what)
    print("bench: FAILED: " + what, file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_of(ru):
    return ru.ru_utime + ru.ru_stime


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            return out
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.bin = os.path.join(self.build, "bench")
        self.repeat = args.repeat
        self.luas = args.lua.split(",")
        self.lua = self.luas[0]
        self.source = source_of(self.build)
        self.servers = {}  # name -> (proto, port)
        self.procs = []
        self.results = {"runs": [], "meta": {}}
        # Peers that are benchmark-only dependencies: absent ones are
        # skipped, with the reason in bench.md.
        self.skipped = {}
        self.tls_ca = None  # the test CA, once the TLS redis-server runs
        self.peers = {}  # client -> what was measured ("ioredis 6.1.0 ...")
        if not os.path.exists(os.path.join(self.bin, "rnb-hiredis-client")):
            self.skipped["hiredis"] = (
                "rnb-hiredis-client not built: libhiredis-dev is not "
                "installed (tools/install-deps.sh --bench)")

    def clients_for(self, proto):
        """The matrix's clients for proto: the Lua ones once more under
        each further Lua ("lua-task@luajit"), --clients applied."""
        base = [c for c in PROTO_CLIENTS[proto] if c not in self.skipped
                and not (self.args.quick and c == "luv-again")]
        out = base + ["%s@%s" % (c, os.path.basename(lua))
                      for lua in self.luas[1:]
                      for c in ("lua-task", "lua-send", "luv", "luv-percall")
                      if c in base]
        only = self.args.clients
        return [c for c in out if not only or c in only.split(",")]

    def env_for(self, lua):
        """The environment for a Lua client under the interpreter lua: the
        bench scripts, then the facade of the build's source tree and the
        build's module."""
        tag = "jit" if "jit" in os.path.basename(lua) else \
            re.sub(r"^lua", "", os.path.basename(lua))
        env = dict(os.environ)
        env["LUA_PATH"] = ";".join([
            os.path.join(HERE, "lua", "?.lua"),
            os.path.join(self.source, "lua", "?.lua"), ""]) + ";"
        env["LUA_CPATH"] = os.path.join(
            self.build, "lua", tag, "?.so") + ";;"
        for k in list(env):
            if k.startswith("LUA_PATH_") or k.startswith("LUA_CPATH_"):
                del env[k]
        return env

    # -- servers -------------------------------------------------------------

    def start_logged(self, cmd, name):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                             text=True, start_new_session=True)
        self.procs.append(p)
        return p

    def read_port(self, p, name):
        line = p.stdout.readline()
        m = re.match(r"PORT (\d+)", line or "")
        if not m:
            return None
        return int(m.group(1))

    def start_echo(self):
        p = self.start_logged([os.path.join(self.bin, "rnb-echo-server")],
                              "echo")
        port = self.read_port(p, "echo")
        if port is None:
            sys.exit("bench: rnb-echo-server did not start")
        self.servers["echo"] = ("length", port)

    def start_redis(self):
        """A redis-server of the run's own on a free loopback port, when
        one is installed (its rows are missing otherwise, and bench.md
        says why)."""
        port = free_port()
        redis = shutil.which("redis-server")
        if redis:
            self.start_logged([redis, "--port", str(port), "--bind",
                               "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--protected-mode", "no"], "redis")
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    self.servers["redis"] = ("resp", port)
                    break
                except OSError:
                    time.sleep(0.02)
        if "redis" not in self.servers:
            note_failure("redis-server did not start")

    def start_servers(self):
        self.start_echo()
        self.start_redis()

        rnp = os.path.join(self.bin, "rnb-rnp-server")
        self.rnp_gap = "rnb-rnp-server not built"
        if os.path.exists(rnp):
            p = self.start_logged([rnp], "rnp")
            port = self.read_port(p, "rnp")
            if port is not None:
                self.servers["rnp"] = ("rnp", port)
                self.rnp_gap = None
            else:
                with open(os.path.join(self.tmp, "rnp.log")) as f:
                    self.rnp_gap = "rnb-rnp-server: " + \
                        (f.read().strip() or "did not start")

    def stop_servers(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()

    # -- clients -------------------------------------------------------------

    def client_cmd(self, client, proto, port, conns, depth, size, secs,
                   extra=()):
        common = ["--proto", proto, "--port", str(port), "--conns",
                  str(conns), "--depth", str(depth), "--size", str(size),
                  "--secs", str(secs), "--warm", str(self.args.warm)]
        common += list(extra)
        if client == "uv":
            return [os.path.join(self.bin, "rnb-uv-client")] + common, None
        if client == "rn-c":
            return [os.path.join(self.bin, "rnb-rn-client")] + common, None
        if client == "hiredis":
            return [os.path.join(self.bin, "rnb-hiredis-client")] + common, \
                None
        if client == "ioredis":
            return ["node", os.path.join(HERE, "node", "ioredis_client.js")] \
                + common, dict(os.environ, NODE_PATH=self.node_path)
        client, _, tag = client.partition("@")
        lua = ([l for l in self.luas if os.path.basename(l) == tag] or
               [self.lua])[0]
        script = {"lua-task": "rn_task.lua", "lua-send": "rn_send.lua",
                  "lua-batch": "rn_batch.lua", "lua-tx": "rn_batch.lua",
                  "luv": "luv_client.lua", "luv-again": "luv_client.lua",
                  "luv-percall": "luv_percall.lua",
                  "luasocket": "luasocket_client.lua"}[client]
        if client == "lua-tx":
            common += ["--mode", "tx"]
        return [lua, os.path.join(HERE, "lua", script)] + common, \
            self.env_for(lua)

    def run_proc(self, cmd, env, timeout):
        """(stdout, unused, ok, stderr)."""
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            return out, 0.0, False, "timed out\n" + err
        return out, 0.0, p.returncode == 0, err

    def run_luasocket(self, proto, port, conns, depth, size, secs):
        start_at = time.time() + 0.3 + 0.01 * conns
        procs = []
        for _ in range(conns):
            cmd, env = self.client_cmd("luasocket", proto, port, 1, depth,
                                       size, secs)
            cmd += ["--start-at", "%.3f" % start_at]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env,
                                          text=True))
        rate = cpu = calls = 0.0
        ok = True
        for p in procs:
            try:
                out, err = p.communicate(timeout=secs + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            r = parse_result(out)
            if p.returncode != 0 or r is None or r["calls"] <= 0:
                ok = False
                sys.stderr.write(err[-2000:])
                continue
            rate += r["calls"] / r["secs"]
            calls += r["calls"]
            cpu += r["cpu"]
        if not ok:
            return None
        return {"calls": calls, "rate": rate, "cpu": cpu, "secs": secs}

    def run_redis_benchmark(self, port, conns, depth, size, secs, estimate,
                            tls=()):
        n = max(2000, int(estimate * secs))
        payload = "".join(chr(97 + i % 26) for i in range(size))
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c",
               str(conns), "-P", str(depth), "-n", str(n), "--csv"] + \
            list(tls) + ["ECHO", payload]
        # Its CPU time: the children's rusage grows when it is reaped
        # (the servers, also children, are reaped only at the very end).
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, _ = p.communicate(timeout=secs * 20 + 30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return None
        cpu = cpu_of(resource.getrusage(resource.RUSAGE_CHILDREN)) - \
            cpu_of(before)
        rps = None
        for line in out.splitlines():
            cols = [c.strip('"') for c in line.split('","')]
            if len(cols) > 1 and cols[0].startswith("ECHO"):
                rps = float(cols[1])
        if rps is None:
            return None
        return {"calls": n, "rate": rps, "cpu": cpu, "secs": n / rps}

    def run_client(self, client, server, conns, depth, size, secs,
                   estimate=None):
        proto, port = self.servers[server]
        # The TLS server: resilnet verifies it against the test CA, and so
        # does redis-benchmark.
        ca = self.tls_ca if server == "redis-tls" else None
        if client == "luasocket":
            r = self.run_luasocket(proto, port, conns, depth, size, secs)
        elif client == "redis-benchmark":
            r = self.run_redis_benchmark(
                port, conns, depth, size, secs, estimate or 50000,
                ("--tls", "--cacert", ca) if ca else ())
        else:
            cmd, env = self.client_cmd(client, proto, port, conns, depth,
                                       size, secs,
                                       ("--tls-ca", ca) if ca else ())
            out, _, ok, err = self.run_proc(cmd, env, secs + 60)
            res = parse_result(out)
            r = None
            if ok and res and res["calls"] > 0 and res["failed"] == 0:
                r = {"calls": res["calls"], "rate": res["calls"] / res["secs"],
                     "cpu": res["cpu"], "secs": res["secs"]}
            else:
                sys.stderr.write(err[-2000:])
        if r is None:
            note_failure("%s against %s (c%d d%d %dB)" % (
                client, server, conns, depth, size))
        return r

    # -- the matrix ----------------------------------------------------------

    def matrix(self):
        a = self.args
        if a.quick:
            cells = [(8, 1, 3), (8, 16, 3)]
        else:
            cells = [(c, d, s) for c in (1, 8, 50) for d in (1, 16)
                     for s in (3, 1024)]
        servers = [s for s in ("redis", "echo", "rnp") if s in self.servers]
        runs = self.results["runs"]
        total = a.runs * sum(len(self.clients_for(self.servers[s][0]))
                             for s in servers) * len(cells)
        done = 0
        t_start = time.time()
        for rep in range(a.runs):
            for server in servers:
                clients = self.clients_for(self.servers[server][0])
                if not clients:  # --clients left none of this server's
                    continue
                for (conns, depth, size) in cells:
                    # Rotate the order each round: no client always runs
                    # first, or last. (Neighbours stay neighbours: the
                    # control, luv-again, sits as far from luv as the
                    # resilnet clients do, so that its ratio to luv has
                    # the drift theirs has.)
                    k = rep % len(clients)
                    order = clients[k:] + clients[:k]
                    if "redis-benchmark" in order:  # needs the uv estimate
                        order.remove("redis-benchmark")
                        order.append("redis-benchmark")
                    estimate = None
                    for client in order:
                        r = self.run_client(client, server, conns, depth,
                                            size, a.secs, estimate)
                        done += 1
                        if r is None:
                            continue
                        if client == "uv":
                            estimate = r["rate"]
                        r.update(client=client, server=server, conns=conns,
                                 depth=depth, size=size, rep=rep)
                        runs.append(r)
                    print("bench: run %d/%d, %s c%d d%d %dB done (%d/%d, "
                          "%.0f s)" % (rep + 1, a.runs, server, conns, depth,
                                       size, done, total,
                                       time.time() - t_start),
                          file=sys.stderr)

    # -- batches (issue 19) --------------------------------------------------

    def batches(self):
        """Against redis-server, in rounds whose order rotates: pool:batch
        of 16 from Lua tasks on 50 connections, redis-benchmark -c 50 -P 16
        and luv with 16 in flight on 50 connections (the batch targets'
        references; the Lua ones under each Lua); one-command
        pool:transaction (MULTI, ECHO, EXEC) from 50 tasks and single calls
        from 50 tasks. Rates are requests (a transaction is one) per
        second, into results["batches"]."""
        if "redis" not in self.servers:
            return
        rows = self.results.setdefault("batches", [])
        clients = ["lua-batch", "redis-benchmark", "luv", "lua-tx",
                   "lua-task"] + ["%s@%s" % (c, os.path.basename(lua))
                                  for lua in self.luas[1:]
                                  for c in ("lua-batch", "luv")]
        estimate = 200000  # redis-benchmark's call count, from lua-batch
        for rep in range(self.args.runs):
            k = rep % len(clients)
            for client in clients[k:] + clients[:k]:
                depth = 1 if client in ("lua-tx", "lua-task") else 16
                r = self.run_client(client, "redis", 50, depth, 3,
                                    self.args.secs, estimate)
                if r is None:
                    continue
                if client == "lua-batch":
                    estimate = r["rate"]
                rows.append({"client": client, "rate": r["rate"],
                             "depth": depth, "rep": rep})
        print("bench: batches done", file=sys.stderr)

    # -- instructions per call (callgrind) -----------------------------------

    def callgrind_clients(self):
        """(name, command without its call count, env) of each client whose
        instructions per call are measured: the C clients, then each
        resilnet Lua client and luv's under each Lua ("lua-task@lua5.4"),
        the peer the Lua targets compare with."""
        out = [("uv", [os.path.join(self.bin, "rnb-uv-client")], None),
               ("rn-c", [os.path.join(self.bin, "rnb-rn-client")], None)]
        if "hiredis" not in self.skipped:
            out.append(("hiredis", [os.path.join(
                self.bin, "rnb-hiredis-client")], None))
        for lua in self.luas:
            env = self.env_for(lua)
            for client, script in (("lua-task", "rn_task.lua"),
                                   ("lua-send", "rn_send.lua"),
                                   ("luv", "luv_client.lua")):
                out.append(("%s@%s" % (client, os.path.basename(lua)),
                            [lua, os.path.join(HERE, "lua", script)], env))
        return out

    def instructions(self, vg, cmd, env, cg):
        """The instructions callgrind counts for cmd (written to cg)."""
        try:
            p = subprocess.run([vg, "--tool=callgrind",
                                "--callgrind-out-file=" + cg] + cmd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return None
        if p.returncode != 0 or not os.path.exists(cg):
            sys.stderr.write(p.stderr[-2000:])
            return None
        with open(cg) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        return int(m.group(1)) if m else None

    def callgrind(self, configs=None):
        """Instructions per call of every client, (Ir(N2) - Ir(N1)) /
        (N2 - N1): two runs that differ only in their number of calls, so
        start-up (loading Lua and the module, connecting) cancels out."""
        vg = shutil.which("valgrind")
        if not vg:
            note_failure("valgrind not found: no instruction counts")
            return
        n1, n2 = (200, 1200) if self.args.quick else (2000, 12000)
        if configs is None:
            configs = [("echo", 1, 16), ("echo", 1, 1)]
            if not self.args.quick and "redis" in self.servers:
                configs += [("redis", 1, 16), ("redis", 50, 16)]
        out = []
        for server, conns, depth in configs:
            proto, port = self.servers[server]
            row = {"server": server, "conns": conns, "depth": depth,
                   "calls": [n1, n2], "runs": self.repeat}
            for client, prog, env in self.callgrind_clients():
                if client == "hiredis" and proto != "resp":
                    continue
                irs = []
                for n in (n1, n2):
                    cg = os.path.join(self.tmp, "cg-%s-%s-%d-%d.out" % (
                        client, server, depth, n))
                    cmd = prog + ["--proto", proto, "--port", str(port),
                                  "--conns", str(conns), "--depth",
                                  str(depth), "--calls", str(n)]
                    # The median of a few runs: how many replies one read
                    # brings varies with timing (LuaJIT's traces too).
                    runs = [self.instructions(vg, cmd, env, cg)
                            for _ in range(self.repeat)]
                    ir = None if None in runs else statistics.median(runs)
                    if ir is None:
                        note_failure("callgrind %s %s" % (client, server))
                        break
                    irs.append(ir)
                if len(irs) == 2:
                    row[client] = (irs[1] - irs[0]) / (n2 - n1)
                    if client == "rn-c" and depth == 16 and server == "echo":
                        self.hotspots(cg)
            out.append(row)
        self.results["callgrind"] = out

    def hotspots(self, cg):
        ann = shutil.which("callgrind_annotate")
        if not ann:
            return
        p = subprocess.run([ann, cg], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        lines = p.stdout.splitlines()
        keep = [l for l in lines if re.match(r"^\s*[\d,]+ \(", l)][:20]
        self.results["hotspots"] = keep

    # -- TLS (issue 17) ------------------------------------------------------

    def start_tls_redis(self):
        """A redis-server with only a TLS port, certificates made now by
        tools/make-test-certs.sh; None, or why it could not start."""
        redis = shutil.which("redis-server")
        if not redis or not shutil.which("openssl"):
            return "redis-server or openssl not found"
        certs = os.path.join(self.tmp, "certs")
        p = subprocess.run(["sh", os.path.join(ROOT, "tools",
                                               "make-test-certs.sh"), certs],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=120)
        if p.returncode != 0:
            return "tools/make-test-certs.sh failed: " + p.stderr[-300:]
        port = free_port()
        self.start_logged([redis, "--port", "0", "--tls-port", str(port),
                           "--bind", "127.0.0.1",
                           "--tls-cert-file", os.path.join(certs, "server.pem"),
                           "--tls-key-file", os.path.join(certs, "server.key"),
                           "--tls-ca-cert-file", os.path.join(certs, "ca.pem"),
                           "--tls-auth-clients", "no", "--save", "",
                           "--appendonly", "no", "--protected-mode", "no"],
                          "redis-tls")
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                self.servers["redis-tls"] = ("resp", port)
                self.tls_ca = os.path.join(certs, "ca.pem")
                return None
            except OSError:
                time.sleep(0.02)
        return "redis-server --tls-port did not start (built without TLS?)"

    def tls(self):
        """resilnet from Lua over TLS beside the same clients in plaintext
        and redis-benchmark --tls, interleaved in one loop so the ratios
        share their noise. Kept in results["tls"], apart from the matrix."""
        a = self.args
        why = self.start_tls_redis() if "redis" in self.servers else \
            "no plaintext redis-server to compare with"
        self.results["meta"]["tls_gap"] = why
        if why:
            print("bench: TLS rows skipped: " + why, file=sys.stderr)
            return
        cells = [(8, 1, 3)] if a.quick else [(50, 1, 3), (50, 16, 3)]
        clients = [(c, srv) for c in ("lua-task", "lua-send",
                                       "redis-benchmark")
                   for srv in ("redis-tls", "redis")]
        out = self.results["tls"] = []
        for rep in range(a.runs):
            k = rep % len(clients)
            for (conns, depth, size) in cells:
                for client, server in clients[k:] + clients[:k]:
                    r = self.run_client(client, server, conns, depth, size,
                                        a.secs, 60000 * depth)
                    if r is not None:
                        r.update(client=client, tls=server == "redis-tls",
                                 conns=conns, depth=depth, size=size, rep=rep)
                        out.append(r)
            print("bench: TLS run %d/%d done" % (rep + 1, a.runs),
                  file=sys.stderr)

    # -- latency at a fixed rate ---------------------------------------------

    def latency(self):
        rate = 2000 if self.args.quick else 10000
        secs = 0.5 if self.args.quick else 3
        out = []
        for server in ("echo", "redis"):
            if server not in self.servers:
                continue
            proto, port = self.servers[server]
            for client in ("uv", "rn-c"):
                cmd, env = self.client_cmd(client, proto, port, 8, 1, 3, secs,
                                           ["--rate", str(rate)])
                out_, _, ok, err = self.run_proc(cmd, env, secs + 60)
                r = parse_result(out_)
                if not ok or not r or "p50" not in r:
                    note_failure("latency %s %s" % (client, server))
                    sys.stderr.write(err[-2000:])
                    continue
                r.update(server=server, rate=rate, conns=8)
                out.append(r)
        self.results["latency"] = out

    # -- scale and resilience ------------------------------------------------

    def run_tool(self, cmd, timeout, what):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            note_failure(what + ": timed out")
            return []
        rows = [parse_result(l) for l in p.stdout.splitlines()
                if l.startswith("RESULT ")]
        if p.returncode != 0 or not rows:
            note_failure(what + ": " + p.stderr.strip()[-500:])
        return rows

    def scale(self):
        q = self.args.quick
        # The idle connections get a server of their own: the shared echo
        # server keeps serving nothing else meanwhile.
        p = self.start_logged([os.path.join(self.bin, "rnb-echo-server")],
                              "echo-scale")
        port = self.read_port(p, "echo-scale")
        conns = 500 if q else 10000
        # Each idle connection pings for itself every 8 intervals (1 s
        # heartbeats): a window of three such rounds shows the steady cost.
        secs = 2 if q else 24
        tool = os.path.join(self.bin, "rnb-scale")
        self.results["scale_idle"] = self.run_tool(
            [tool, "idle", "--port", str(port), "--conns", str(conns),
             "--secs", str(secs)], 180, "scale idle")
        calls = 10000 if q else 100000
        self.results["scale_inflight"] = self.run_tool(
            [tool, "inflight", "--port", str(port), "--calls", str(calls),
             "--conns", "8"], 180, "scale inflight")

    def resilience(self):
        q = self.args.quick
        tool = os.path.join(self.bin, "rnb-resilience")
        server = os.path.join(self.bin, "rnb-echo-server")
        trials = "1" if q else "5"
        self.results["deadpeer"] = self.run_tool(
            [tool, "deadpeer", "--server", server, "--timeout-ms",
             "300" if q else "1000", "--interval-ms", "100", "--trials",
             trials], 120, "deadpeer")
        self.results["restart"] = self.run_tool(
            [tool, "restart", "--server", server, "--backoff-ms", "50",
             "--down-ms", "200" if q else "300", "--trials", trials], 120,
            "restart")
        # The same verdict through the fault proxy's blackhole, and what
        # the proxy costs when it injects nothing.
        self.results["deadpeer_proxy"] = self.run_tool(
            [tool, "deadpeer", "--via", "proxy", "--server", server,
             "--timeout-ms", "300" if q else "1000", "--interval-ms", "100",
             "--trials", trials], 120, "deadpeer via proxy")
        self.results["proxycost"] = self.run_tool(
            [tool, "proxycost", "--server", server, "--conns", "8",
             "--depth", "4", "--secs", "0.3" if q else "2", "--trials",
             trials], 120, "proxycost")

    # -- everything ----------------------------------------------------------

    def run(self, callgrind_only=False):
        self.tmp = tempfile.mkdtemp(prefix="rnb-")
        t0 = time.time()
        try:
            if callgrind_only:
                self.start_echo()
                if shutil.which("redis-server"):
                    self.start_redis()
                self.callgrind()
            else:
                self.node_path, what = ioredis_setup(self.build)
                (self.peers if self.node_path else self.skipped)[
                    "ioredis"] = what
                if not self.node_path:
                    print("bench: ioredis rows skipped: " + what,
                          file=sys.stderr)
                self.start_servers()
                self.matrix()
                self.batches()
                self.tls()
                self.callgrind()
                self.latency()
                self.scale()
                self.resilience()
        finally:
            self.stop_servers()
            shutil.rmtree(self.tmp, ignore_errors=True)
        m = self.results["meta"]
        m.update(quick=self.args.quick, runs=self.args.runs,
                 secs=self.args.secs, lua=self.lua, luas=self.luas,
                 clients=self.args.clients,
                 rnp_gap=getattr(self, "rnp_gap", None),
                 skipped=self.skipped, peers=self.peers,
                 servers={k: v[0] for k, v in self.servers.items()},
                 date=time.strftime("%Y-%m-%d %H:%M"), cores=os.cpu_count(),
                 wall=time.time() - t0)


def callgrind_key(row):
    return "%s %dx%d" % (row["server"], row["conns"], row["depth"])


def callgrind_table(rows, before=None, tolerance=None):
    """Prints Ir/call per row and client; with before (rows of an earlier
    run), the change. Returns the resilnet clients beyond tolerance %."""
    old = {callgrind_key(r): r for r in (before or [])}
    beyond = []
    for row in rows:
        for client, v in sorted(row.items()):
            if not isinstance(v, float):
                continue
            was = old.get(callgrind_key(row), {}).get(client)
            line = "%-12s %-22s %9.1f Ir/call" % (callgrind_key(row), client,
                                                 v)
            if was:
                change = (v - was) / was * 100
                line += "   before %9.1f  %+6.2f%%" % (was, change)
                # Only a resilnet client that got slower fails the run:
                # the peers are not ours, and an improvement is the point.
                if client.split("@")[0] in ("rn-c", "lua-task",
                                            "lua-send") and \
                        change > tolerance:
                    line += "  BEYOND %.1f%%" % tolerance
                    beyond.append("%s %s" % (callgrind_key(row), client))
            print(line)
    return beyond


def ioredis_setup(build):
    """(NODE_PATH, what is measured) for ioredis, which npm installs into
    BUILD/node (never into the source tree) when it is not there yet; or
    (None, why not). The newest major the Node found runs (6 needs Node
    20)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm not found (Node.js 12 or later)"
    version = subprocess.run([node, "--version"], stdout=subprocess.PIPE,
                             text=True).stdout.strip()
    m = re.match(r"v(\d+)\.", version)
    if not m or int(m.group(1)) < 12:
        return None, "Node %s is older than ioredis 5 needs (12)" % version
    prefix = os.path.join(build, "node")
    modules = os.path.join(prefix, "node_modules")
    pkg = os.path.join(modules, "ioredis", "package.json")
    if not os.path.exists(pkg):
        want = "ioredis@6" if int(m.group(1)) >= 20 else "ioredis@5"
        print("bench: npm install --prefix %s %s" % (prefix, want),
              file=sys.stderr)
        try:
            p = subprocess.run([npm, "install", "--prefix", prefix,
                                "--no-audit", "--no-fund", "--loglevel=error",
                                "--fetch-retries=1", "--fetch-timeout=30000",
                                want],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=300)
            why = "; ".join(p.stderr.strip().splitlines()[:2]) \
                if p.returncode != 0 else None
        except subprocess.TimeoutExpired:
            why = "timed out"
        if why or not os.path.exists(pkg):
            return None, "npm install %s failed: %s" % (want, why)
    with open(pkg) as f:
        return modules, "ioredis %s, Node %s" % (json.load(f)["version"],
                                                 version)


def build_type_of(build):
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", f.read(), re.M)
        return m.group(1) if m else ""
    except OSError:
        return ""


def source_of(build):
    """The source tree a CMake build directory was configured from."""
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            m = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", f.read(),
                          re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    return ROOT


def commit_of(tree):
    """The commit checked out in tree, '+dirty' when it has changes."""
    def git(*a):
        p = subprocess.run(["git", "-C", tree] + list(a),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        return p.stdout.strip() if p.returncode == 0 else ""
    commit = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def preflight(lua):
    """The tools the harness needs beyond the build; exits naming them."""
    missing = [t for t in ("redis-server", "redis-benchmark", "gnuplot",
                           "valgrind", lua) if not shutil.which(t)]
    if shutil.which(lua):
        p = subprocess.run([lua, "-e", 'require "socket"; require "luv"'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if p.returncode != 0:
            missing.append("LuaSocket and luv for " + lua)
    if missing:
        sys.exit("bench: missing: %s\nbench: on Debian: apt-get install "
                 "redis-server valgrind gnuplot-nox lua-socket lua-luv "
                 "lua5.4" % ", ".join(missing))


def callgrind_only(a):
    if not shutil.which("valgrind"):
        sys.exit("bench: valgrind not found (apt-get install valgrind)")
    for prog in ("rnb-uv-client", "rnb-rn-client", "rnb-echo-server"):
        if not os.path.exists(os.path.join(a.build, "bench", prog)):
            sys.exit("bench: %s not built in %s (RESILNET_BUILD_BENCH=ON)"
                     % (prog, a.build))
    b = Bench(a)
    b.run(callgrind_only=True)
    m = b.results["meta"]
    res = {"commit": commit_of(b.source), "source": b.source,
           "build": b.build, "build_type": build_type_of(b.build),
           "date": m["date"], "wall": round(m["wall"], 1),
           "callgrind": b.results.get("callgrind", [])}
    print("bench: callgrind, %s (%s build) at %s, %d and %d calls, %.0f s" % (
        res["source"], res["build_type"] or "?", res["commit"],
        res["callgrind"][0]["calls"][0] if res["callgrind"] else 0,
        res["callgrind"][0]["calls"][1] if res["callgrind"] else 0,
        res["wall"]))
    print("bench: each the median of %d run(s)" % b.repeat)
    before = None
    if a.compare:
        with open(a.compare) as f:
            base = json.load(f)
        before = base["callgrind"]
        print("bench: compared with %s (%s)" % (a.compare, base["commit"]))
    beyond = callgrind_table(res["callgrind"], before, a.tolerance)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
            f.write("\n")
        print("bench: saved to " + a.save)
    if failures or beyond:
        print("bench: %s" % "; ".join(failures + beyond), file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--secs", type=float, default=None)
    ap.add_argument("--warm", type=float, default=None)
    ap.add_argument("--lua", default=None,
                    help="the Luas for the Lua clients, comma-separated: "
                    "the matrix and callgrind run under each, the TLS and "
                    "batch stages under the first (default: lua5.4,luajit; "
                    "--quick and --callgrind-only: lua5.4)")
    ap.add_argument("--clients", default=None,
                    help="only these clients in the matrix (a partial run)")
    ap.add_argument("--callgrind-only", action="store_true",
                    help="only instructions per call, printed")
    ap.add_argument("--save", help="with --callgrind-only: write the "
                    "numbers and the commit to this JSON file")
    ap.add_argument("--compare", help="with --callgrind-only: a file "
                    "written by --save to compare with")
    ap.add_argument("--repeat", type=int, default=None,
                    help="callgrind runs per count, the median kept "
                    "(--callgrind-only: 3 unless given)")
    ap.add_argument("--tolerance", type=float, default=2.0,
                    help="percent a resilnet client may get slower "
                    "(--compare)")
    a = ap.parse_args()
    if a.lua is None:
        a.lua = "lua5.4" if a.quick or a.callgrind_only else "lua5.4,luajit"
    if a.repeat is None:
        a.repeat = 3 if a.callgrind_only else 1
    if a.callgrind_only:
        callgrind_only(a)
        return
    if a.runs is None:
        a.runs = 1 if a.quick else 5
    if a.secs is None:
        a.secs = 0.3 if a.quick else 0.5
    if a.warm is None:
        a.warm = 0.1 if a.quick else 0.2
    if a.out is None:
        a.out = os.path.join(a.build, "bench-quick") if a.quick else \
            os.path.join(HERE, "results")
    for lua in a.lua.split(","):
        preflight(lua)
    for prog in ("rnb-uv-client", "rnb-rn-client", "rnb-echo-server",
                 "rnb-scale", "rnb-resilience"):
        if not os.path.exists(os.path.join(a.build, "bench", prog)):
            sys.exit("bench: %s not built in %s (RESILNET_BUILD_BENCH=ON)"
                     % (prog, a.build))
    os.makedirs(a.out, exist_ok=True)
    b = Bench(a)
    b.run()
    sys.path.insert(0, HERE)
    import report
    # Every sample stays in the build directory; the output directory (the
    # committed bench/results for make bench) gets their medians.
    raw = os.path.join(a.build, "bench-raw%s.json" % ("-quick" if a.quick
                                                      else ""))
    with open(raw, "w") as f:
        json.dump(b.results, f, indent=1)
    report.write(b.results, a.out, failures)
    print("bench: results in %s, raw samples in %s (%.0f s)" % (
        a.out, raw, b.results["meta"]["wall"]), file=sys.stderr)
    if failures:
        print("bench: %d failure(s):\n  %s" % (len(failures),
              "\n  ".join(failures)), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

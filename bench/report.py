"""Turns the driver's results into bench.md, results.json and
throughput.png. Kept apart from run.py so a results.json can be re-rendered
without running anything again:

  python3 bench/report.py DIR [RAW]

The driver's raw samples (every run of every client and cell) stay in the
build directory (BUILD/bench-raw.json); DIR/results.json, which make bench
commits, keeps their medians only, a row a line, so that a run's diff
shows what moved. With RAW, DIR's files are made again from that file."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

CLIENT_ORDER = ["uv", "rn-c", "hiredis", "lua-task", "lua-send",
                "luasocket", "luv", "luv-again", "luv-percall", "ioredis",
                "redis-benchmark"]
TITLES = {
    "uv": "C baseline",
    "rn-c": "resilnet C",
    "hiredis": "hiredis async (libuv adapter)",
    "lua-task": "resilnet Lua tasks",
    "lua-send": "resilnet Lua callbacks",
    "luasocket": "LuaSocket",
    "luv": "luv (pure Lua)",
    "luv-again": "luv again (control)",
    "luv-percall": "luv making calls (pure Lua)",
    "ioredis": "ioredis (Node.js)",
    "redis-benchmark": "redis-benchmark",
}
# The peer ratios printed for every cell where both clients ran; True:
# once per Lua the matrix ran (the targets' ratios).
PEER_RATIOS = [("rn-c", "hiredis", False), ("lua-task", "luv", True),
               ("lua-send", "luv", True), ("lua-task", "luv-percall", True),
               ("lua-send", "luv-percall", True), ("lua-task", "ioredis", False),
               ("lua-send", "ioredis", False), ("luv-again", "luv", False),
               ("rn-c", "redis-benchmark", False),
               ("lua-task", "redis-benchmark", True),
               ("lua-send", "redis-benchmark", True)]
SHORT = {"uv": "baseline", "rn-c": "resilnet C", "hiredis": "hiredis",
         "lua-task": "Lua tasks", "lua-send": "Lua callbacks",
         "luv": "luv", "luv-again": "luv again", "luv-percall": "luv calls", "ioredis": "ioredis",
         "redis-benchmark": "redis-benchmark"}
# The clients run again under each further Lua ("lua-task@luajit").
LUA_CLIENTS = ("lua-task", "lua-send", "luv", "luv-percall")


def title(client, names=TITLES):
    """A client's title; one under a further Lua says which."""
    base, _, lua = client.partition("@")
    return names[base] + (" (%s)" % lua if lua else "")


# A colour per client, the same in every panel; a further Lua's run of a
# client in a lighter shade of it.
COLORS = {"uv": "#555555", "rn-c": "#1f77b4", "hiredis": "#d62728",
          "lua-task": "#2ca02c", "lua-send": "#9467bd", "luasocket": "#8c564b",
          "luv": "#ff7f0e", "luv-again": "#ffbb78", "luv-percall": "#bcbd22", "ioredis": "#e377c2", "redis-benchmark": "#17becf"}


def color(client):
    base, _, lua = client.partition("@")
    rgb = COLORS[base]
    if not lua:
        return rgb
    return "#" + "".join("%02x" % ((int(rgb[i:i + 2], 16) + 255) // 2)
                         for i in (1, 3, 5))


def peer_pairs(clients):
    """PEER_RATIOS for the clients present, the Lua ones once per Lua."""
    tags = [""] + sorted({"@" + c.partition("@")[2] for c in clients
                          if "@" in c})
    out = []
    for c, ref, every_lua in PEER_RATIOS:
        for tag in tags if every_lua else [""]:
            pair = (c + tag, ref + tag if ref in LUA_CLIENTS else ref)
            if pair[0] in clients and pair[1] in clients and \
                    pair not in out:
                out.append(pair)
    return out
SERVER_TITLES = {
    "redis": "redis-server (resp, ECHO)",
    "echo": "rnb-echo-server (length frames, C echo)",
    "rnp": "resilnet rnp server (C handler)",
}


def fmt_rate(x):
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e3:
        return "%.1fk" % (x / 1e3)
    return "%.0f" % x


def medians(rows, key_fields, cpu=False):
    """Rows of the same key_fields grouped into one: the median rate, its
    min, max and count and, with cpu, the median CPU us per call."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key_fields), []).append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rates = [r["rate"] for r in rs]
        row = dict(zip(key_fields, key))
        row.update(median=statistics.median(rates), min=min(rates),
                   max=max(rates), n=len(rates))
        if cpu:
            cpus = [r["cpu"] / r["calls"] * 1e6 for r in rs
                    if r.get("cpu") is not None and r["calls"] > 0]
            row["cpu_us"] = statistics.median(cpus) if cpus else None
        out.append(row)
    return out


def tidy(v):
    """Numbers rounded to what a reader compares: rates and counts whole,
    small figures to 3 decimals, so the committed file does not churn in
    digits nobody reads."""
    if isinstance(v, dict):
        return {k: tidy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [tidy(x) for x in v]
    if isinstance(v, float):
        if v == int(v) or abs(v) >= 1000:
            return int(round(v))
        return round(v, 1 if abs(v) >= 100 else 3)
    return v


def summarize(raw):
    """The committed summary of a raw run: medians of the throughput, TLS
    and batch stages; the other stages, already one row per trial or per
    client, as they are."""
    if "throughput" in raw:  # a summary already
        return raw
    s = {k: v for k, v in raw.items() if k not in ("runs", "tls", "batches")}
    s["throughput"] = medians(raw.get("runs", []), (
        "server", "conns", "depth", "size", "client"), cpu=True)
    s["tls"] = medians(raw.get("tls", []), (
        "client", "tls", "conns", "depth", "size"))
    s["batches"] = medians(raw.get("batches", []), ("client", "depth"))
    # An object's name without its directory: the same line whichever tree
    # was measured.
    s["hotspots"] = [re.sub(r"\[[^\]]*/([^\]/]+)\]", r"[\1]", l)
                     for l in raw.get("hotspots", [])]
    return tidy(s)


def dump(s, path):
    """JSON with a list element or a dict entry a line (sorted keys): a
    new run changes the lines of what moved, and only those."""
    def one(v):
        return json.dumps(v, sort_keys=True)
    parts = []
    for k in sorted(s):
        v = s[k]
        if isinstance(v, list) and v:
            body = "[\n" + ",\n".join("  " + one(x) for x in v) + "\n ]"
        elif isinstance(v, dict) and v:
            body = "{\n" + ",\n".join("  %s: %s" % (one(kk), one(vv))
                                        for kk, vv in sorted(v.items())) \
                + "\n }"
        else:
            body = one(v)
        parts.append(" %s: %s" % (one(k), body))
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def aggregate(summary):
    """{(server, conns, depth, size, client): row} of the throughput."""
    return {(r["server"], r["conns"], r["depth"], r["size"], r["client"]): r
            for r in summary.get("throughput", [])}


def cells_of(agg, server):
    return sorted({k[1:4] for k in agg if k[0] == server})


def clients_of(agg, server):
    present = {k[4] for k in agg if k[0] == server}
    return sorted(present, key=lambda c: (
        CLIENT_ORDER.index(c.partition("@")[0]), c))


def ratio(agg, server, cell, client, ref):
    a = agg.get((server,) + cell + (client,))
    b = agg.get((server,) + cell + (ref,))
    if not a or not b or b["median"] == 0:
        return None
    return a["median"] / b["median"]


def cell_name(cell):
    c, d, s = cell
    return "%d conn%s x %d in flight, %s" % (
        c, "" if c == 1 else "s", d, "3 B" if s == 3 else
        ("1 KiB" if s == 1024 else "%d B" % s))


def cell_table(lines, intro, cells, columns, heads, value):
    """A table of one row per cell and one column per entry of columns:
    value(cell, column) is its text."""
    lines.append(intro + "\n")
    lines.append("| cell | " + " | ".join(heads) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for cell in cells:
        lines.append("| %s | %s |" % (cell_name(cell), " | ".join(
            value(cell, col) for col in columns)))
    lines.append("")


def throughput_tables(agg, lines):
    for server in ("redis", "echo", "rnp"):
        cells = cells_of(agg, server)
        if not cells:
            continue
        clients = clients_of(agg, server)
        lines.append("### %s\n" % SERVER_TITLES[server])

        def rate(cell, c):
            a = agg.get((server,) + cell + (c,))
            if not a:
                return "-"
            r = ratio(agg, server, cell, c, "uv")
            return "%s %s[%s-%s]" % (
                fmt_rate(a["median"]),
                "(%.2fx) " % r if r is not None and c != "uv" else "",
                fmt_rate(a["min"]), fmt_rate(a["max"]))

        def peer(cell, pair):
            r = ratio(agg, server, cell, pair[0], pair[1])
            return "%.2fx" % r if r is not None else "-"

        def cpu(cell, c):
            a = agg.get((server,) + cell + (c,))
            return "%.2f" % a["cpu_us"] if a and a.get("cpu_us") \
                is not None else "-"

        heads = [title(c) for c in clients]
        cell_table(lines, "Calls/s, median of the runs, with the ratio to "
                   "the C baseline and [min-max].", cells, clients, heads,
                   rate)
        pairs = peer_pairs(clients)
        if pairs:
            cell_table(lines, "Ratios to the peers (medians, same cell):",
                       cells, pairs, ["%s / %s" % (title(c, SHORT), title(ref, SHORT))
                                      for c, ref in pairs], peer)
        cell_table(lines, "Client CPU time per call (us, median):", cells,
                   clients, heads, cpu)


def worst(values):
    values = [v for v in values if v is not None]
    return min(values) if values else None


def tls_medians(res):
    """{(client, tls, conns, depth, size): median calls/s} of the TLS
    stage."""
    return {(r["client"], r["tls"], r["conns"], r["depth"], r["size"]):
            r["median"] for r in res.get("tls", [])}


def batch_medians(res):
    """{client: median requests/s} of the batch stage."""
    return {r["client"]: r["median"] for r in res.get("batches", [])}


def tls_table(res, lines):
    med = tls_medians(res)
    gap = res["meta"].get("tls_gap")
    lines.append("## TLS (issue 17)\n")
    if gap or not med:
        lines.append("Not measured: %s.\n" % (gap or "no TLS runs"))
        return
    lines.append("redis-server with only a TLS port (certificates made at "
                 "bench time by tools/make-test-certs.sh, verified by every "
                 "client against the test CA) beside the plaintext one, "
                 "interleaved in the same loop. Calls/s, medians; TLS/plain "
                 "is each client's own ratio.\n")
    lines.append("| cell | client | TLS | plaintext | TLS/plain | "
                 "TLS / redis-benchmark --tls |")
    lines.append("|---|---|---:|---:|---:|---:|")
    cells = sorted({k[2:] for k in med})
    for cell in cells:
        rb = med.get(("redis-benchmark", True) + cell)
        for client in ("lua-task", "lua-send", "redis-benchmark"):
            t = med.get((client, True) + cell)
            pl = med.get((client, False) + cell)
            if t is None and pl is None:
                continue
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                cell_name(cell),
                TITLES[client] + (" --tls" if client == "redis-benchmark"
                                  else ""),
                fmt_rate(t) if t else "-", fmt_rate(pl) if pl else "-",
                "%.2fx" % (t / pl) if t and pl else "-",
                "%.2fx" % (t / rb) if t and rb else "-"))
    lines.append("")


def targets(res, agg):
    """[(target, measured text, holds)]"""
    out = []

    def add(name, vals, bound):
        """bound None: not a target (the control): its spread, no verdict."""
        if not vals:
            out.append((name, "not measured in this run", None))
            return
        w = min(vals)
        spread = ", ".join("%.2f" % v for v in vals)
        if bound is None:
            out.append((name, "%.2fx-%.2fx (%s)" % (w, max(vals), spread),
                        None))
            return
        out.append((name, "worst %.2fx (%s)" % (w, spread), w >= bound))

    # Issue 20's targets. Retired (issue 20, item 4): the ratios to a
    # client with no per-call state at all (instructions per call <= 1.3x
    # the C baseline, 3x LuaSocket, 1.5x luv, 0.75x and 0.9x the C
    # baseline), which no client that keeps per-call state can meet.
    both = ["redis", "echo"]
    lua = res["meta"].get("lua", "lua")

    def every_cell(client, ref, depths, server_list=both, conns=None):
        vals = []
        for server in server_list:
            for cell in cells_of(agg, server):
                if cell[1] in depths and (conns is None or
                                          cell[0] in conns):
                    vals.append(ratio(agg, server, cell, client, ref))
        return [v for v in vals if v is not None]

    bm = batch_medians(res)
    for tag in [""] + ["@" + os.path.basename(l)
                       for l in res["meta"].get("luas", [])[1:]]:
        for c in ("lua-task", "lua-send"):
            name = "%s (%s)" % (TITLES[c], tag[1:] or lua)
            add("%s >= 1.0x luv on the same Lua, every cell, single calls"
                % name, every_cell(c + tag, "luv" + tag, (1, 16)), 1.0)
            # Not one of the targets: the same ratio to a luv
            # client that makes calls (luv_client.lua replays one frame
            # and only counts replies), redis-server only.
            add("(yardstick) %s >= 1.0x luv making calls, every cell"
                % name, every_cell(c + tag, "luv-percall" + tag, (1, 16),
                                   ["redis"]), 1.0)
            add("%s >= 1.0x redis-benchmark -c 50" % name,
                every_cell(c + tag, "redis-benchmark", (1,), ["redis"],
                           (50,)), 1.0)
        if not tag:
            # The control, not a target: luv's generator against itself,
            # run twice in every round. How far from 1.0x one client lands
            # beside itself is the noise an every-cell ratio must allow.
            add("(control, not a target) luv (%s) against itself, every "
                "cell" % lua, every_cell("luv-again", "luv", (1, 16)), None)
        batch = bm.get("lua-batch" + tag)
        for ref, bound, name in (
                ("luv" + tag, 1.3, "luv with 16 in flight"),
                ("redis-benchmark", 0.9, "redis-benchmark -c 50 -P 16")):
            add("resilnet Lua batches of 16 (%s) >= %.1fx %s, 50 conns"
                % (tag[1:] or lua, bound, name),
                [batch / bm[ref]] if batch and bm.get(ref) else [], bound)
    skipped = res["meta"].get("skipped") or {}
    if "hiredis" in skipped:
        out.append(("resilnet C >= 1.5x hiredis async, 16 in flight; "
                    ">= 1.0x at 1x1", "not measured: " + skipped["hiredis"],
                    None))
    else:
        add("resilnet C >= 1.5x hiredis async, every cell with 16 in flight",
            every_cell("rn-c", "hiredis", (16,), ["redis"]), 1.5)
        add("resilnet C >= 1.0x hiredis async at 1 conn x 1",
            every_cell("rn-c", "hiredis", (1,), ["redis"], (1,)), 1.0)
    add("resilnet C >= 0.95x C baseline, 50 conns x 16",
        every_cell("rn-c", "uv", (16,), both, (50,)), 0.95)
    # Instructions per call with 16 in flight, the worst row (1 and 50
    # connections; fewer replies per read at 50 cost a little more).
    cg16 = [r for r in res.get("callgrind", []) if r.get("depth") == 16]
    for client, bound, what in (
            ("rn-c", 700, "resilnet C"),
            ("lua-task@lua5.4", 3500, "resilnet Lua tasks (lua5.4)")):
        vals = [(r["server"], r[client]) for r in cg16 if r.get(client)]
        if vals:
            w = max(v for _, v in vals)
            out.append(("%s <= %d instructions per call, 16 in flight"
                        % (what, bound), ", ".join(
                            "%.0f (%s)" % (v, srv) for srv, v in vals),
                        w <= bound))
        else:
            out.append(("%s <= %d instructions per call, 16 in flight"
                        % (what, bound), "not measured", None))
    tm = tls_medians(res)
    tls_vals = [tm[k] / tm[("redis-benchmark", True) + k[2:]]
                for k in tm if k[0] in ("lua-task", "lua-send") and k[1]
                and k[3] == 1 and ("redis-benchmark", True) + k[2:] in tm]
    add("resilnet Lua over TLS >= 1.0x redis-benchmark --tls, single calls",
        tls_vals, 1.0)
    for key, how in (("deadpeer", ""),
                     ("deadpeer_proxy", " through the proxy's blackhole")):
        dp = res.get(key, [])
        if dp:
            worst_dp = max(r["silence_ms"] / r["timeout_ms"] for r in dp)
            out.append(("dead peer declared within heartbeat timeout + 5%"
                        + how,
                        "worst %.3fx the timeout (silence from the last "
                        "reply)" % worst_dp, worst_dp <= 1.05 and all(
                            r["detected"] for r in dp)))
    pc = res.get("proxycost", [])
    if pc:
        failed = sum(r["failed"] for r in pc)
        out.append(("no call fails through the proxy without faults",
                    "%d failed of %d" % (failed, sum(r["calls"] for r in pc)),
                    failed == 0))
    rs = res.get("restart", [])
    if rs:
        w = max(r["first_success_ms"] for r in rs)
        ok = all(r["first_success_ms"] >= 0 for r in rs)
        out.append(("first success after a restart within backoff + 5 ms",
                    "worst %.1f ms after the server listened (bound %d ms)"
                    % (w, rs[0]["backoff_ms"] + 5),
                    ok and w <= rs[0]["backoff_ms"] + 5))
    si = res.get("scale_idle", [])
    if si:
        r = si[0]
        out.append(("idle pooled connection <= 2 KiB user-space memory",
                    "%.0f B heap in use, %.0f B resident (%d conns)" % (
                        r["heap_per_conn"], r["rss_per_conn"], r["conns"]),
                    r["heap_per_conn"] <= 2048))
        out.append(("%d idle connections, 1 s heartbeats <= 3%% of a core"
                    % r["conns"], "%.1f%%" % (r["cpu_share"] * 100),
                    r["cpu_share"] <= 0.03))
    return out


def chart(agg, outdir, lines):
    gp = shutil.which("gnuplot")
    servers = [s for s in ("redis", "echo", "rnp") if cells_of(agg, s)]
    if not gp or not servers:
        lines.append("(no chart: gnuplot not found)\n")
        return
    plots = []
    for server in servers:
        clients = clients_of(agg, server)
        dat = os.path.join(outdir, "throughput-%s.dat" % server)
        with open(dat, "w") as f:
            f.write("cell " + " ".join('"%s"' % title(c) for c in clients)
                    + "\n")
            for cell in cells_of(agg, server):
                vals = []
                for c in clients:
                    a = agg.get((server,) + cell + (c,))
                    vals.append("%.0f" % a["median"] if a else "?")
                f.write('"c%d d%d %s" %s\n' % (cell[0], cell[1],
                        "3B" if cell[2] == 3 else "1K", " ".join(vals)))
        cols = " , ".join(
            "'%s' using %d:xtic(1) title columnheader(%d) lc rgb '%s'" % (
                os.path.basename(dat), i + 2, i + 2, color(c))
            for i, c in enumerate(clients))
        plots.append("set title '%s'\nplot %s\n" % (SERVER_TITLES[server],
                                                     cols))
    script = """set terminal pngcairo size 1400,%d font ',9'
set output 'throughput.png'
set multiplot layout %d,1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set logscale y
set ylabel 'calls/s (log)'
set xtics rotate by -30
set key outside right top
set datafile missing '?'
set grid ytics
%s
unset multiplot
""" % (420 * len(servers), len(servers), "".join(plots))
    with open(os.path.join(outdir, "throughput.gp"), "w") as f:
        f.write(script)
    p = subprocess.run([gp, "throughput.gp"], cwd=outdir,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        # pngcairo may be missing (gnuplot-nox has the gd "png" terminal)
        script = script.replace("pngcairo size 1400,%d font ',9'" % (
            420 * len(servers)), "png size 1400,%d" % (420 * len(servers)))
        with open(os.path.join(outdir, "throughput.gp"), "w") as f:
            f.write(script)
        p = subprocess.run([gp, "throughput.gp"], cwd=outdir,
                           stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        lines.append("(chart failed: %s)\n" % p.stderr.strip()[-300:])
    else:
        lines.append("![throughput](throughput.png)\n")


def batch_lines(res, lines):
    """The batch rows (issue 19): medians of the interleaved runs."""
    med = batch_medians(res)
    if not med:
        return
    lines.append("## Batches and transactions (issue 19)\n")
    lines.append("redis-server, 3-byte `ECHO`, 50 connections, medians of "
                 "%d run(s) in rotating order; requests per second.\n"
                 % max(r["n"] for r in res["batches"]))
    lines.append("| client | requests/s | against | ratio | target |")
    lines.append("|---|---:|---|---:|---|")

    def row(name, client, ref, factor=1, target=None):
        if client not in med:
            return
        if target is None or ref not in med:
            lines.append("| %s | %s | - | - | reference |" % (
                name, fmt_rate(med[client])))
        else:
            ratio = med[client] / med[ref] * factor
            holds = "yes" if ratio >= target[1] else "**no**"
            lines.append("| %s | %s | %s | %.2fx | %s: %s |" % (
                name, fmt_rate(med[client]), title(ref), ratio, target[0],
                holds))
    lua = res["meta"].get("lua", "lua")
    tags = [""] + sorted({c.partition("@")[1] + c.partition("@")[2]
                          for c in med if "@" in c})
    for tag in tags:
        batch, luv = "lua-batch" + tag, "luv" + tag
        name = "`pool:batch` of 16, %s" % (tag[1:] or lua)
        row(name, batch, "redis-benchmark",
            target=(">= 0.9x redis-benchmark -c 50 -P 16", 0.9))
        row(name, batch, luv, target=(">= 1.3x luv, 16 in flight", 1.3))
    row("redis-benchmark -c 50 -P 16", "redis-benchmark", None)
    for tag in tags:
        row("luv, pure Lua, %s, 16 in flight" % (tag[1:] or lua),
            "luv" + tag, None)
    # A transaction costs less than three single calls when its rate is
    # above a third of theirs: ratio = tx rate x 3 / single-call rate.
    row("`pool:transaction{ECHO}` (MULTI, ECHO, EXEC), %s" % lua, "lua-tx",
        "lua-task", 3, ("tx rate x 3 / single calls > 1", 1.0))
    row("single `pool:call`, Lua tasks, %s" % lua, "lua-task", None)
    lines.append("")


def write(raw, outdir, failures=()):
    res = summarize(raw)
    agg = aggregate(res)
    m = res["meta"]
    lines = ["# resilnet benchmark results\n"]
    lines.append(
        "%s, %s cores (shared; compare ratios within this run, not absolute "
        "numbers across runs). %d round(s) of %.1f s per client and cell, "
        "the clients' order rotating each round; Lua clients on `%s`%s. "
        "Reproduce: `make bench` (full) or `make bench-quick`.%s\n" % (
            m["date"], m["cores"], m["runs"], m["secs"], m["lua"],
            "".join(" and, in the throughput tables and instruction counts, "
                    "`%s`" % os.path.basename(l)
                    for l in m.get("luas", [])[1:]),
            " **Quick smoke run: not for comparison.**" if m["quick"]
            else ""))
    for client, why in sorted((m.get("skipped") or {}).items()):
        lines.append("**Skipped: %s** (%s).\n" % (TITLES.get(client, client),
                                                   why))
    for client, what in sorted((m.get("peers") or {}).items()):
        lines.append("%s: %s.\n" % (TITLES.get(client, client), what))
    if m.get("clients"):
        lines.append("**Partial run: the matrix has only %s** (--clients); "
                     "not for comparison with a full run.\n" % m["clients"])
    if m.get("rnp_gap"):
        lines.append("**Gap: resilnet's rnp server is not in the matrix** "
                     "(%s); it is added automatically once it starts.\n"
                     % m["rnp_gap"])
    lines.append("## Targets (issue 20; issue 7's resilience targets kept)\n")
    lines.append("| target | measured | holds |")
    lines.append("|---|---|---|")
    for name, text, ok in targets(res, agg):
        lines.append("| %s | %s | %s |" % (
            name, text, "-" if ok is None else ("yes" if ok else "**no**")))
    lines.append("")
    lines.append("## Throughput\n")
    chart(agg, outdir, lines)
    throughput_tables(agg, lines)
    tls_table(res, lines)

    batch_lines(res, lines)
    lines.append("## Instructions per call (callgrind)\n")
    lines.append("Client instructions per call, (Ir at N2 - Ir at N1) / "
                 "(N2 - N1), so start-up cancels out.\n")
    cg_rows = res.get("callgrind", [])
    # The Lua clients, one column each: "lua-task@lua5.4" and the like.
    lua_cols = sorted({k for r in cg_rows for k in r if "@" in k})
    lines.append("| server | conns x in flight | C baseline | resilnet C | "
                 "ratio | hiredis |" + "".join(" %s (%s) |" % (
                     TITLES[c.split("@")[0]], c.split("@")[1])
                     for c in lua_cols))
    lines.append("|---|---|---:|---:|---:|---:|" + "---:|" * len(lua_cols))
    for r in cg_rows:
        if r.get("uv") and r.get("rn-c"):
            lines.append("| %s | %d x %d | %.0f | %.0f | %.2fx | %s |" % (
                r["server"], r["conns"], r["depth"], r["uv"], r["rn-c"],
                r["rn-c"] / r["uv"],
                "%.0f" % r["hiredis"] if r.get("hiredis") else "-") + "".join(
                    " %s |" % ("%.0f" % r[c] if r.get(c) else "-")
                    for c in lua_cols))
    if res.get("hotspots"):
        lines.append("\nresilnet C, echo, 1 x 16: top functions by "
                     "instructions (self), whole run:\n")
        lines.append("```")
        lines.extend(res["hotspots"][:20])
        lines.append("```")
    lines.append("")

    lines.append("## Latency at a fixed offered rate\n")
    lines.append("Each call's latency counts from the time it was due, not "
                 "from when it was sent (no coordinated omission). Calls are "
                 "released by a 1 ms timer, so up to 1 ms of the figure is "
                 "the schedule's granularity, the same for both clients.\n")
    lines.append("| server | client | rate | conns | p50 us | p99 us | "
                 "p99.9 us | max us |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res.get("latency", []):
        lines.append("| %s | %s | %d/s | %d | %.0f | %.0f | %.0f | %.0f |" % (
            r["server"], TITLES.get(r["client"], r["client"]), r["rate"],
            r["conns"], r["p50"], r["p99"], r["p999"], r["max"]))
    lines.append("")

    lines.append("## Scale\n")
    for r in res.get("scale_idle", []):
        lines.append(
            "- %d idle pooled connections, 1 s heartbeats: all ready after "
            "%.2f s; **%.0f B** of heap in use per connection (%.0f B "
            "resident); **%.2f%%** of one core while idle (%.0f pings/s, "
            "%d dead-peer verdicts)." % (
                r["conns"], r["ready_secs"], r["heap_per_conn"],
                r["rss_per_conn"], r["cpu_share"] * 100, r["pings_per_s"],
                r["dead_peers"]))
    for r in res.get("scale_inflight", []):
        lines.append(
            "- %d calls in flight at once on 8 connections: %d completed, "
            "%d failed, in %.2f s (%s calls/s); %.0f B of heap per call in "
            "flight; peak RSS %.1f MiB." % (
                r["calls"], r["completed"], r["failed"], r["secs"],
                fmt_rate(r["calls_per_s"]), r["heap_per_call"],
                r["maxrss_kb"] / 1024))
    lines.append("")

    lines.append("## Resilience\n")
    # Dead-peer detection, by SIGSTOP and through the proxy's blackhole.
    for key, how, since in (
            ("deadpeer", "server frozen with SIGSTOP", "the freeze"),
            ("deadpeer_proxy", "through the fault proxy's blackhole, "
             "rn_proxy in the client's process dropping every byte both "
             "ways", "the fault was added")):
        dp = res.get(key, [])
        if dp:
            lines.append(
                "- Dead peer (%s; heartbeat interval %d ms, timeout %d ms): "
                "declared after %s ms of silence (from the last reply), %s "
                "ms after %s." % (
                    how, dp[0]["interval_ms"], dp[0]["timeout_ms"],
                    ", ".join("%.0f" % r["silence_ms"] for r in dp),
                    ", ".join("%.0f" % r["after_stop_ms"] for r in dp),
                    since))
    rs = res.get("restart", [])
    if rs:
        lines.append(
            "- Restart (SIGKILL, same port again after %d ms, constant "
            "reconnect backoff %d ms, 2 idempotent + 2 other call chains): "
            "first success %s ms after the new server listened; calls "
            "failed across the restart: idempotent %s, others %s (all "
            "with maybe_executed: %s)." % (
                rs[0]["down_ms"], rs[0]["backoff_ms"],
                ", ".join("%.1f" % r["first_success_ms"] for r in rs),
                ", ".join("%d" % r["failed_idempotent"] for r in rs),
                ", ".join("%d" % r["failed_other"] for r in rs),
                ", ".join("%d" % r["maybe_executed"] for r in rs)))
    pc = res.get("proxycost", [])
    direct = [r for r in pc if r["via"] == "direct"]
    proxied = [r for r in pc if r["via"] == "proxy"]
    if direct and proxied:
        def med(rows, k):
            return statistics.median(r[k] for r in rows)
        lines.append(
            "- The proxy's own cost, no fault (%d connections x %d calls in "
            "flight, 3-byte frames to the echo server, median of %d "
            "run%s per path; the proxy shares the client's loop, as in a "
            "harness): %s calls/s through it against %s straight "
            "(**%.2fx**); p50 %.0f us against %.0f, p99 %.0f us against "
            "%.0f; CPU of the client process per call %.1f us against "
            "%.1f (the proxy's share: %.1f us)." % (
                direct[0]["conns"], direct[0]["depth"], len(direct),
                "" if len(direct) == 1 else "s",
                fmt_rate(med(proxied, "calls_per_s")),
                fmt_rate(med(direct, "calls_per_s")),
                med(proxied, "calls_per_s") / med(direct, "calls_per_s"),
                med(proxied, "p50"), med(direct, "p50"),
                med(proxied, "p99"), med(direct, "p99"),
                med(proxied, "cpu_us_per_call"),
                med(direct, "cpu_us_per_call"),
                med(proxied, "cpu_us_per_call") -
                med(direct, "cpu_us_per_call")))
    lines.append("")
    if failures:
        lines.append("## Failures in this run\n")
        lines.extend("- " + f for f in failures)
        lines.append("")
    with open(os.path.join(outdir, "bench.md"), "w") as f:
        f.write("\n".join(lines))
    dump(res, os.path.join(outdir, "results.json"))


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results")
    src = sys.argv[2] if len(sys.argv) > 2 else os.path.join(d, "results.json")
    with open(src) as f:
        write(json.load(f), d)

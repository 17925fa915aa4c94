#!/usr/bin/env python3
"""bench_report.py - turn scripts/bench.sh's raw results into the benchmark report.

    scripts/bench_report.py [--raw out/bench/raw.csv] [--meta out/bench/meta.txt]
                            [--callgrind out/bench/callgrind.csv] [--out-dir docs]

Writes
    docs/BENCHMARKS.md   machine, commands, one table per benchmark (median, min-max,
                         peak RSS, ratios to the peers), and a summary
    docs/benchmarks.csv  the summary: one row per benchmark and allocator
    docs/benchmarks.svg  a chart: speed and peak RSS of each allocator relative to the best
                         peer of that benchmark (= 1.0), hakmem highlighted

Ratios (>1 always means "more than the best peer"):
    speed = hakmem / best peer for ops/s, best peer / hakmem for seconds (>1: hakmem faster)
    RSS   = hakmem median peak RSS / smallest peer median peak RSS (<1: hakmem smaller)
Python 3 standard library only.
"""
import argparse
import csv
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
from xml.sax.saxutils import escape

ALLOCS = ["hakmem", "system", "mi", "je", "tc"]
PEERS = ["system", "mi", "je", "tc"]
ALLOC_NAME = {
    "hakmem": "hakmem",
    "system": "glibc",
    "mi": "mimalloc",
    "je": "jemalloc",
    "tc": "tcmalloc",
}
PEER_PKG = {"system": "libc6", "mi": "libmimalloc2.0", "je": "libjemalloc2", "tc": "libtcmalloc-minimal4"}
COLOR = {"hakmem": "#d62728", "system": "#8c8c8c", "mi": "#6d9bd1", "je": "#72b872", "tc": "#e9a053"}

DESCRIPTION = {
    "larson-t1": "Larson server workload, 8-128 B blocks, 1 thread",
    "larson-t2": "Larson server workload, 8-128 B blocks, 2 threads",
    "larson-t4": "Larson server workload, 8-128 B blocks, 4 threads on 2 cores",
    "larson-t8": "Larson server workload, 8-128 B blocks, 8 threads on 2 cores",
    "random_mixed": "random free/malloc of 16-1039 B blocks in a working set of slots",
    "fixed_size-16": "free/malloc of 16 B blocks in a working set of slots",
    "fixed_size-256": "free/malloc of 256 B blocks in a working set of slots",
    "xthread-t2": "producer/consumer: blocks freed by another thread, 2 threads",
    "xthread-t4": "producer/consumer: blocks freed by another thread, 4 threads on 2 cores",
    "mid-t1": "mid sizes (1-256 KiB), 1 thread",
    "mid-t2": "mid sizes (1-256 KiB), 2 threads",
    "large": "large blocks and realloc growth/shrink (1-64 MiB)",
    "thread_churn": "many short-lived threads, 2 alive at a time",
    "python": "Python allocation workload (PYTHONMALLOC=malloc), LD_PRELOAD",
    "gcc": "gcc -O2 -c of a generated C file of ~1,900 lines, LD_PRELOAD",
    "sort": "LC_ALL=C sort of a generated 30 MB text file (2 threads), LD_PRELOAD",
}
SECTIONS = [
    ("speed", "Speed: 1 and 2 threads"),
    ("contention", "Contention and oversubscription: 4 and 8 threads on 2 cores"),
    ("real", "Real programs under LD_PRELOAD"),
]


def section_of(kind, threads):
    if kind == "real":
        return "real"
    try:
        return "contention" if int(threads) >= 4 else "speed"
    except ValueError:
        return "speed"


# --------------------------------------------------------------------------- data
def read_meta(path):
    meta = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    meta[k] = v
    return meta


def fnum(s):
    try:
        v = float(s)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None


def load(raw_path):
    """{bench: {"kind", "threads", "metric", "allocs": {alloc: {"vals", "rss", "fails"}}}}"""
    benches = {}
    with open(raw_path, newline="") as f:
        for row in csv.DictReader(f):
            b = benches.setdefault(row["bench"], {
                "kind": row["kind"], "threads": row["threads"], "metric": "",
                "allocs": {a: {"vals": [], "rss": [], "fails": []} for a in ALLOCS},
            })
            a = b["allocs"].setdefault(row["alloc"], {"vals": [], "rss": [], "fails": []})
            if row["metric"] and not b["metric"]:
                b["metric"] = row["metric"]
            v = fnum(row["value"])
            if row["status"] == "OK" and v is not None:
                a["vals"].append(v)
                r = fnum(row["maxrss_kb"])
                if r is not None:
                    a["rss"].append(r)
            else:
                a["fails"].append(row.get("note") or row["status"])
    return benches


def summarize(benches):
    """Adds per-allocator statistics and ratios; returns the list of summary rows."""
    rows = []
    for name, b in benches.items():
        higher = b["metric"] != "seconds"
        st = {}
        for a, d in b["allocs"].items():
            s = {"n": len(d["vals"]), "nfail": len(d["fails"]), "fails": d["fails"]}
            if d["vals"]:
                s.update(med=statistics.median(d["vals"]), lo=min(d["vals"]), hi=max(d["vals"]))
            if d["rss"]:
                s.update(rss=statistics.median(d["rss"]), rss_lo=min(d["rss"]), rss_hi=max(d["rss"]))
            st[a] = s
        peers = [p for p in PEERS if "med" in st.get(p, {})]
        best = None
        if peers:
            best = (max if higher else min)(peers, key=lambda p: st[p]["med"])
        rss_peers = [p for p in PEERS if "rss" in st.get(p, {})]
        small = min(rss_peers, key=lambda p: st[p]["rss"]) if rss_peers else None
        for a, s in st.items():
            if best and "med" in s and s["med"] > 0:
                bm = st[best]["med"]
                s["speed"] = s["med"] / bm if higher else bm / s["med"]
                if "med" in st.get("system", {}):
                    sm = st["system"]["med"]
                    s["speed_sys"] = s["med"] / sm if higher else sm / s["med"]
            if small and "rss" in s and st[small]["rss"] > 0:
                s["rss_ratio"] = s["rss"] / st[small]["rss"]
                if "rss" in st.get("system", {}) and st["system"]["rss"] > 0:
                    s["rss_sys"] = s["rss"] / st["system"]["rss"]
        b.update(stats=st, best=best, small=small, higher=higher,
                 section=section_of(b["kind"], b["threads"]))
        for a in ALLOCS:
            s = st.get(a, {})
            rows.append({
                "bench": name, "section": b["section"], "kind": b["kind"], "threads": b["threads"],
                "metric": b["metric"], "alloc": a, "runs_ok": s.get("n", 0), "runs_fail": s.get("nfail", 0),
                "median": s.get("med", ""), "min": s.get("lo", ""), "max": s.get("hi", ""),
                "maxrss_kb_median": s.get("rss", ""), "maxrss_kb_min": s.get("rss_lo", ""),
                "maxrss_kb_max": s.get("rss_hi", ""),
                "speed_vs_best_peer": round(s["speed"], 4) if "speed" in s else "",
                "best_peer": best or "",
                "rss_vs_smallest_peer": round(s["rss_ratio"], 4) if "rss_ratio" in s else "",
                "smallest_rss_peer": small or "",
                "speed_vs_glibc": round(s["speed_sys"], 4) if "speed_sys" in s else "",
                "rss_vs_glibc": round(s["rss_sys"], 4) if "rss_sys" in s else "",
                "fail_notes": "; ".join(sorted(set(s.get("fails", [])))),
            })
    return rows


# --------------------------------------------------------------------------- machine
def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    info = {}
    cpu, nproc_listed = "", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("processor"):
                    nproc_listed += 1
    except OSError:
        pass
    info["cpu"] = cpu or platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = "%s usable (%d listed in /proc/cpuinfo)" % (usable, nproc_listed)
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory"] = "%.1f GiB" % (kb / 1048576)
    except (OSError, ValueError, IndexError):
        info["memory"] = "unknown"
    info["kernel"] = "%s %s" % (platform.system(), platform.release())
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        glibc = ""
    info["glibc"] = glibc or "unknown"
    vers = {}
    for a, pkg in PEER_PKG.items():
        v = sh(["dpkg-query", "-W", "-f=${Version}", pkg])
        vers[a] = "%s %s" % (pkg, v) if v else "%s (not installed)" % pkg
    info["versions"] = vers
    info["rustc"] = sh(["rustc", "--version"]) or "unknown"
    info["cc"] = (sh(["cc", "--version"]).splitlines() or ["unknown"])[0]
    return info


# --------------------------------------------------------------------------- formatting
def fmt_metric(v, metric):
    if v is None or v == "":
        return "-"
    if metric == "seconds":
        return "%.3f s" % v
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return "%.3g %s/s" % (v / div, unit)
    return "%.3g /s" % v


def fmt_range(s, metric):
    if "med" not in s:
        return "-"
    if metric == "seconds":
        return "%.3f s (%.3f–%.3f)" % (s["med"], s["lo"], s["hi"])
    m = fmt_metric(s["med"], metric)
    num, unit = m.split(" ", 1)
    scale = float(num) / s["med"] if s["med"] else 1
    return "%s %s (%.3g–%.3g)" % (num, unit, s["lo"] * scale, s["hi"] * scale)


def mib(kb):
    return "%.1f MiB" % (kb / 1024.0)


def fmt_ratio(r):
    return "%.2f×" % r if r is not None else "-"


def runs_cell(s, total_default):
    n, nf = s.get("n", 0), s.get("nfail", 0)
    if nf == 0:
        return "%d" % n
    notes = sorted(set(s.get("fails", [])))
    note = notes[0] if notes else "FAIL"
    if len(note) > 60:
        note = note[:57] + "..."
    more = " (+%d more reasons)" % (len(notes) - 1) if len(notes) > 1 else ""
    return "%d ok, **%d FAIL**: %s%s" % (n, nf, note.replace("|", "/"), more)


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


# --------------------------------------------------------------------------- markdown
def write_markdown(path, benches, meta, info, callgrind, svg_name, csv_name):
    L = []
    date = meta.get("date_start") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    runs = meta.get("runs", "?")
    L.append("# hakmem benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench_report.py` from the results of `%s` "
             "(%s mode, %s run(s) per allocator and benchmark, allocators interleaved round by round). "
             "Every figure is the median of the runs, with min–max beside it, and is compared with the "
             "peers measured in the same session. Regenerate with `scripts/bench.sh` (or `--full`)."
             % (meta.get("invocation", "scripts/bench.sh"), meta.get("mode", "?"), runs))
    L.append("")
    L.append("![speed and peak RSS relative to the best peer](%s)" % svg_name)
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("| --- | --- |")
    L.append("| date | %s%s |" % (date, " – " + meta["date_end"] if meta.get("date_end") else ""))
    L.append("| CPU | %s |" % info["cpu"])
    L.append("| cores | %s |" % info["cores"])
    L.append("| memory | %s |" % info["memory"])
    L.append("| kernel | %s |" % info["kernel"])
    L.append("| glibc | %s (%s) |" % (info["glibc"], info["versions"]["system"]))
    for a in ("mi", "je", "tc"):
        L.append("| %s | %s |" % (ALLOC_NAME[a], info["versions"][a]))
    L.append("| hakmem | revision %s, %s |" % (meta.get("hakmem_rev", "?"), info["rustc"]))
    L.append("| C compiler | %s |" % info["cc"])
    if meta.get("elapsed_s"):
        L.append("| session length | %s s |" % meta["elapsed_s"])
    L.append("")
    L.append("The machine is shared with other work; absolute numbers drift between sessions, "
             "ratios from one session are what to compare. With 2 cores, 4 and 8 threads measure "
             "contention and oversubscription, not scaling.")
    L.append("")

    missing = [(a, meta["missing." + a]) for a in ALLOCS if meta.get("missing." + a)]
    if missing:
        L.append("**Missing in this session:** " + "; ".join("%s: %s" % (ALLOC_NAME[a], w) for a, w in missing)
                 + ". Its runs are shown as FAIL.")
        L.append("")

    # summary
    L.append("## Summary: hakmem relative to the peers")
    L.append("")
    L.append("Speed ratio: hakmem/best peer for throughput, best peer/hakmem for wall time, so "
             "**>1 means hakmem is faster** than the fastest peer. RSS ratio: hakmem's median peak "
             "RSS / the smallest median peak RSS among the peers, so **<1 means hakmem uses less "
             "memory** than the leanest peer.")
    L.append("")
    L.append("| benchmark | threads | hakmem | best peer | speed vs best peer | speed vs glibc "
             "| hakmem peak RSS | smallest peer RSS | RSS vs smallest peer | RSS vs glibc |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    agg = {sec: {"speed": [], "rss": [], "speed_sys": [], "rss_sys": []} for sec, _ in SECTIONS}
    for sec, title in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if names:
            L.append("| ***%s*** | | | | | | | | | |" % title)
        for n in names:
            b = benches[n]
            st, h = b["stats"], b["stats"].get("hakmem", {})
            best, small = b["best"], b["small"]
            hcell = fmt_metric(h.get("med"), b["metric"]) if "med" in h else "**FAIL**"
            if h.get("nfail") and "med" in h:
                hcell += " (%d FAIL)" % h["nfail"]
            bcell = "%s %s" % (ALLOC_NAME[best], fmt_metric(st[best]["med"], b["metric"])) if best else "-"
            scell = "%s %s" % (ALLOC_NAME[small], mib(st[small]["rss"])) if small else "-"
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, b["threads"], hcell, bcell,
                ("**%s**" % fmt_ratio(h["speed"])) if "speed" in h else "-",
                fmt_ratio(h.get("speed_sys")),
                mib(h["rss"]) if "rss" in h else "-", scell,
                ("**%s**" % fmt_ratio(h["rss_ratio"])) if "rss_ratio" in h else "-",
                fmt_ratio(h.get("rss_sys"))))
            for k, key in (("speed", "speed"), ("rss", "rss_ratio"), ("speed_sys", "speed_sys"), ("rss_sys", "rss_sys")):
                if key in h:
                    agg[sec][k].append(h[key])
    for sec, title in SECTIONS:
        a = agg[sec]
        if a["speed"] or a["rss"]:
            L.append("| *geometric mean, %s* | | | | *%s* | *%s* | | | *%s* | *%s* |" % (
                sec, fmt_ratio(geomean(a["speed"])), fmt_ratio(geomean(a["speed_sys"])),
                fmt_ratio(geomean(a["rss"])), fmt_ratio(geomean(a["rss_sys"]))))
    L.append("")
    L.append("Per-benchmark tables: below. Summary as CSV: [`%s`](%s)." % (csv_name, csv_name))
    L.append("")

    # commands
    L.append("## Commands")
    L.append("")
    L.append("```sh")
    L.append("%s        # builds, runs, then: scripts/bench_report.py" % meta.get("invocation", "scripts/bench.sh"))
    L.append("./build.sh                 # target/release/libhakmem.so and libhakmem.a")
    L.append("./build.sh PROG_ALLOC      # bench-c/PROG.c -> out/release/PROG_ALLOC, ALLOC in hakmem system mi je tc")
    L.append("```")
    L.append("")
    L.append("C benchmarks are linked against each allocator (hakmem: the static `libhakmem.a`; "
             "mimalloc, jemalloc, tcmalloc: their Debian shared objects; glibc: nothing). Real programs "
             "run with `LD_PRELOAD` of the allocator's shared object; wall time and peak RSS come from "
             "`/usr/bin/time -f '%e %M'`, and each run's output is checked against the glibc run's. "
             "A run that fails (non-zero exit, timeout, no RESULT line, wrong output) is counted as FAIL.")
    L.append("")
    L.append("| allocator | LD_PRELOAD for real programs |")
    L.append("| --- | --- |")
    for a in ALLOCS:
        L.append("| %s (`%s`) | `%s` |" % (ALLOC_NAME[a], a, meta.get("preload." + a, "?")))
    L.append("")
    L.append("| benchmark | command (`{ALLOC}` = hakmem system mi je tc) |")
    L.append("| --- | --- |")
    for n in benches:
        cmd = meta.get("cmd." + n, "")
        L.append("| %s | `%s` |" % (n, cmd.replace("|", "\\|")))
    L.append("")

    # per-benchmark tables
    for sec, title in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if not names:
            continue
        L.append("## %s" % title)
        L.append("")
        for n in names:
            b = benches[n]
            metric = b["metric"] or "?"
            better = "higher is better" if b["higher"] else "lower is better"
            L.append("### %s" % n)
            L.append("")
            L.append("%s. Metric: `%s` (%s); threads: %s." % (DESCRIPTION.get(n, n), metric, better, b["threads"]))
            if meta.get("cmd." + n):
                L.append("Command: `%s`." % meta["cmd." + n])
            L.append("")
            L.append("| allocator | median (min–max) | speed vs best peer | peak RSS median (min–max) "
                     "| RSS vs smallest peer | runs |")
            L.append("| --- | ---: | ---: | ---: | ---: | --- |")
            for a in ALLOCS:
                s = b["stats"].get(a, {})
                if s.get("n", 0) == 0 and s.get("nfail", 0) == 0:
                    continue
                name = ALLOC_NAME[a]
                if a == b["best"]:
                    name += " (best peer)"
                cells = [
                    name,
                    fmt_range(s, metric) if "med" in s else "**FAIL**",
                    fmt_ratio(s.get("speed")),
                    "%s (%.1f–%.1f)" % (mib(s["rss"]), s["rss_lo"] / 1024, s["rss_hi"] / 1024) if "rss" in s else "-",
                    fmt_ratio(s.get("rss_ratio")),
                    runs_cell(s, runs),
                ]
                if a == "hakmem":
                    cells = ["**%s**" % c if c not in ("-",) and not c.startswith("**") and i < 5 else c
                             for i, c in enumerate(cells)]
                L.append("| " + " | ".join(cells) + " |")
            L.append("")

    # callgrind
    if callgrind:
        L.append("## Fast-path cost (callgrind)")
        L.append("")
        L.append("Instructions per malloc/free pair of one size on a fixed loop (`bench-c/bench_pair.c`), "
                 "from two runs under `valgrind --tool=callgrind` with different pair counts so start-up cost "
                 "cancels: (Ir(N) − Ir(N0)) / (N − N0). Includes ~5 loop instructions per pair, the same for "
                 "every allocator. Repeatable where wall time is not. Measured by `scripts/callgrind.sh` "
                 "on %s." % callgrind["date"])
        L.append("")
        L.append("| size (bytes) | " + " | ".join(ALLOC_NAME[a] for a in ALLOCS) + " | hakmem / cheapest peer |")
        L.append("| ---: | " + " | ".join("---:" for _ in ALLOCS) + " | ---: |")
        for size in callgrind["sizes"]:
            row = callgrind["data"][size]
            cells = []
            for a in ALLOCS:
                v = row.get(a)
                cells.append("%.1f" % v if isinstance(v, float) else (v or "-"))
            peers = [row[p] for p in PEERS if isinstance(row.get(p), float)]
            h = row.get("hakmem")
            rel = "%.2f×" % (h / min(peers)) if isinstance(h, float) and peers and min(peers) > 0 else "-"
            L.append("| %s | %s | %s |" % (size, " | ".join(cells), rel))
        L.append("")

    with open(path, "w") as f:
        f.write("\n".join(L))


def read_callgrind(path):
    if not path or not os.path.exists(path):
        return None
    data, sizes, date = {}, [], ""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            size = row["size"]
            if size not in data:
                data[size] = {}
                sizes.append(size)
            date = row.get("date", date)
            v = fnum(row.get("ir_per_pair"))
            data[size][row["alloc"]] = v if (row["status"] == "OK" and v is not None) else row["status"]
    if not sizes:
        return None
    return {"data": data, "sizes": sizes, "date": date}


# --------------------------------------------------------------------------- svg
def nice_max(vmax, floor, cap):
    v = min(max(vmax * 1.05, floor), cap)
    step = 0.25 if v <= 2 else 0.5
    return math.ceil(v / step) * step


def write_svg(path, benches, meta):
    LABEL_W = 190          # benchmark names
    PANEL_W = 400          # plot area of each panel
    GAP = 70
    W = LABEL_W + 10 + 2 * PANEL_W + GAP + 50
    X0 = [LABEL_W + 10, LABEL_W + 10 + PANEL_W + GAP]
    BAR_H, BAR_GAP, GROUP_GAP, SEC_H = 9, 2, 12, 26
    TOP = 118

    def ratios(key):
        return [s[key] for b in benches.values() for s in b["stats"].values() if key in s]

    smax = nice_max(max(ratios("speed") or [1.0]), 1.25, 2.5)
    rmax = nice_max(max(ratios("rss_ratio") or [1.0]), 1.5, 4.0)
    scales = [smax, rmax]

    order = []
    for sec, title in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if names:
            order.append(("section", title))
            order += [("bench", n) for n in names]
    group_h = len(ALLOCS) * (BAR_H + BAR_GAP) - BAR_GAP
    height = TOP + sum(SEC_H if k == "section" else group_h + GROUP_GAP for k, _ in order) + 60

    o = []
    o.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="Helvetica, Arial, sans-serif">' % (W, height, W, height))
    o.append('<rect width="100%" height="100%" fill="#ffffff"/>')
    title = "hakmem vs glibc, mimalloc, jemalloc, tcmalloc"
    sub = "median of %s run(s) per allocator, %s; each bar relative to the best peer of its benchmark (= 1.0)" % (
        meta.get("runs", "?"), meta.get("date_start", ""))
    o.append('<text x="20" y="28" font-size="18" font-weight="bold" fill="#222">%s</text>' % escape(title))
    o.append('<text x="20" y="47" font-size="11.5" fill="#555">%s</text>' % escape(sub))
    # legend
    lx = 20
    for a in ALLOCS:
        o.append('<rect x="%d" y="58" width="12" height="12" fill="%s"/>' % (lx, COLOR[a]))
        weight = ' font-weight="bold"' if a == "hakmem" else ""
        o.append('<text x="%d" y="68.5" font-size="12" fill="#222"%s>%s</text>' % (lx + 16, weight, ALLOC_NAME[a]))
        lx += 16 + 8 * len(ALLOC_NAME[a]) + 22
    # panel titles
    ptitles = ["Speed relative to fastest peer  (higher is better →)",
               "Peak RSS relative to smallest peer  (← lower is better)"]
    for p in range(2):
        o.append('<text x="%d" y="94" font-size="13" font-weight="bold" fill="#222">%s</text>'
                 % (X0[p], escape(ptitles[p])))

    y_plot_top = TOP - 8
    y_plot_bot = height - 48

    def xpos(p, v):
        return X0[p] + PANEL_W * min(v, scales[p]) / scales[p]

    # grid and ticks
    for p in range(2):
        step = 0.25 if scales[p] <= 2 else 0.5
        t = 0.0
        while t <= scales[p] + 1e-9:
            x = xpos(p, t)
            if abs(t - 1.0) > 1e-9:
                o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e6e6e6" stroke-width="1"/>'
                         % (x, y_plot_top, x, y_plot_bot))
            lab = ("%.2f" % t).rstrip("0").rstrip(".") if t else "0"
            one = ' font-weight="bold" fill="#222"' if abs(t - 1.0) < 1e-9 else ' fill="#666"'
            for ty in (y_plot_bot + 14, y_plot_top - 3):
                o.append('<text x="%.1f" y="%d" font-size="10"%s text-anchor="middle">%s×</text>'
                         % (x, ty, one, lab))
            t += step
        o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999" stroke-width="1"/>'
                 % (X0[p], y_plot_top, X0[p], y_plot_bot))

    y = TOP
    labels = []  # value labels go on top of the 1.0 axis
    for kind, name in order:
        if kind == "section":
            o.append('<text x="20" y="%d" font-size="12.5" font-weight="bold" fill="#333">%s</text>'
                     % (y + 17, escape(name)))
            o.append('<line x1="20" y1="%d" x2="%d" y2="%d" stroke="#ccc" stroke-width="1"/>'
                     % (y + 22, W - 20, y + 22))
            y += SEC_H
            continue
        b = benches[name]
        o.append('<text x="%d" y="%d" font-size="12" fill="#222" text-anchor="end">%s</text>'
                 % (LABEL_W, y + group_h / 2 - 1, escape(name)))
        unit = "ops/s, t=%s" % b["threads"] if b["metric"] == "ops_per_sec" else "wall time, t=%s" % b["threads"]
        o.append('<text x="%d" y="%d" font-size="9.5" fill="#888" text-anchor="end">%s</text>'
                 % (LABEL_W, y + group_h / 2 + 10, escape(unit)))
        for i, a in enumerate(ALLOCS):
            s = b["stats"].get(a, {})
            by = y + i * (BAR_H + BAR_GAP)
            for p, key in enumerate(("speed", "rss_ratio")):
                if key in s:
                    v = s[key]
                    x1 = xpos(p, v)
                    stroke = ' stroke="#7a0f10" stroke-width="0.8"' if a == "hakmem" else ""
                    o.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"%s><title>%s %s: %.3f×</title></rect>'
                             % (X0[p], by, max(x1 - X0[p], 0.5), BAR_H, COLOR[a], stroke,
                                escape(ALLOC_NAME[a]), escape(name), v))
                    clipped = v > scales[p]
                    if clipped:  # break mark at the end of a clipped bar
                        o.append('<path d="M%.1f %d l4 %d" stroke="#fff" stroke-width="2"/>'
                                 % (x1 - 8, by - 1, BAR_H + 2))
                    weight = ' font-weight="bold"' if a == "hakmem" else ""
                    if clipped:  # value inside the end of the bar
                        labels.append('<text x="%.1f" y="%d" font-size="8.5" fill="#fff" font-weight="bold" '
                                 'text-anchor="end">%.2f »</text>' % (x1 - 12, by + BAR_H - 1, v))
                    else:
                        labels.append('<text x="%.1f" y="%d" font-size="8.5" fill="%s"%s stroke="#fff" '
                                 'stroke-width="2.5" paint-order="stroke">%.2f</text>'
                                 % (x1 + 3, by + BAR_H - 1, "#7a0f10" if a == "hakmem" else "#555", weight, v))
                elif s.get("nfail"):
                    o.append('<text x="%d" y="%d" font-size="8.5" font-weight="bold" fill="#d62728">%s FAIL</text>'
                             % (X0[p] + 3, by + BAR_H - 1, escape(ALLOC_NAME[a])))
                else:
                    o.append('<text x="%d" y="%d" font-size="8.5" fill="#999">%s n/a</text>'
                             % (X0[p] + 3, by + BAR_H - 1, escape(ALLOC_NAME[a])))
        y += group_h + GROUP_GAP

    # the 1.0 axis, drawn last so it sits on top of the bars
    for p in range(2):
        x = xpos(p, 1.0)
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-width="1.2" '
                 'stroke-dasharray="4,3"/>' % (x, y_plot_top, x, y_plot_bot))
    o += labels
    o.append('<text x="20" y="%d" font-size="10" fill="#777">%s</text>' % (
        height - 12,
        escape("Speed: ops/s ÷ best peer's, or best peer's wall time ÷ own. RSS: median peak RSS ÷ smallest "
               "peer's. Bars past the axis end are cut (»). Source: docs/BENCHMARKS.md, docs/benchmarks.csv.")))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# --------------------------------------------------------------------------- main
def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(root, "out/bench/raw.csv"))
    ap.add_argument("--meta", default=os.path.join(root, "out/bench/meta.txt"))
    ap.add_argument("--callgrind", default=os.path.join(root, "out/bench/callgrind.csv"))
    ap.add_argument("--out-dir", default=os.path.join(root, "docs"))
    args = ap.parse_args()

    if not os.path.exists(args.raw):
        sys.exit("bench_report.py: %s not found; run scripts/bench.sh first" % args.raw)
    benches = load(args.raw)
    if not benches:
        sys.exit("bench_report.py: no rows in %s" % args.raw)
    rows = summarize(benches)
    meta = read_meta(args.meta)
    info = machine_info()
    callgrind = read_callgrind(args.callgrind)

    os.makedirs(args.out_dir, exist_ok=True)
    md = os.path.join(args.out_dir, "BENCHMARKS.md")
    csv_path = os.path.join(args.out_dir, "benchmarks.csv")
    svg = os.path.join(args.out_dir, "benchmarks.svg")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    write_svg(svg, benches, meta)
    write_markdown(md, benches, meta, info, callgrind, os.path.basename(svg), os.path.basename(csv_path))

    # short summary on the terminal
    print("bench_report.py: wrote %s, %s, %s" % (md, csv_path, svg))
    print("%-16s %14s %10s %22s %10s" % ("benchmark", "hakmem", "speed", "best peer", "RSS ratio"))
    for n, b in benches.items():
        h = b["stats"].get("hakmem", {})
        best = b["best"]
        print("%-16s %14s %10s %22s %10s" % (
            n, fmt_metric(h.get("med"), b["metric"]) if "med" in h else "FAIL",
            fmt_ratio(h.get("speed")),
            "%s %s" % (ALLOC_NAME[best], fmt_metric(b["stats"][best]["med"], b["metric"])) if best else "-",
            fmt_ratio(h.get("rss_ratio"))))


if __name__ == "__main__":
    main()

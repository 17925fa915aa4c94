#!/usr/bin/env python3
"""bench_report.py - turn scripts/bench.sh's raw results into the benchmark report.

    scripts/bench_report.py [--raw out/bench/raw.csv] [--meta out/bench/meta.txt]
                            [--served out/bench/served.csv]
                            [--callgrind out/bench/callgrind.csv] [--out-dir docs]

Writes
    docs/BENCHMARKS.md   machine, allocator versions, exact commands, the targets, a summary,
                         the served check, one table per benchmark (median, min-max, peak RSS,
                         ratios), the callgrind table
    docs/benchmarks.csv  one row per benchmark and allocator
    docs/benchmarks.svg  two heat maps (speed relative to the fastest peer, peak RSS relative
                         to the leanest peer), one row per benchmark, one column per allocator

"hakmem" is hakmem's shared object under LD_PRELOAD, like every peer; "hakmem-linked" (the
benchmark linked to libhakmem.a) is shown but is never a peer and never the hakmem figure.
Ratios (>1 always means "more than the best peer"):
    speed = X / best peer for ops/s, best peer / X for seconds (>1: X faster than every peer)
    RSS   = X median peak RSS / smallest peer median peak RSS (<1: X leaner than every peer)
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

HAKMEM = "hakmem"
LINKED = "hakmem-linked"
KNOWN = ["hakmem", "hakmem-linked", "system", "mi2deb", "mi3", "mi2", "sn", "je", "tc"]
PEERS = ["system", "mi2deb", "mi3", "mi2", "sn", "je", "tc"]
NAME = {
    "hakmem": "hakmem",
    "hakmem-linked": "hakmem (linked)",
    "system": "glibc",
    "mi2deb": "mimalloc 2.0 (Debian)",
    "mi3": "mimalloc 3",
    "mi2": "mimalloc 2",
    "sn": "snmalloc",
    "je": "jemalloc",
    "tc": "tcmalloc",
    # ids an older callgrind.csv may use
    "mi": "mimalloc 2.0 (Debian)",
}
# two-line column heads of the chart
HEAD = {
    "hakmem": ("hakmem", "preload"), "hakmem-linked": ("hakmem", "linked"), "system": ("glibc", ""),
    "mi2deb": ("mimalloc", "2.0 Debian"), "mi3": ("mimalloc", "3"), "mi2": ("mimalloc", "2"),
    "sn": ("snmalloc", ""), "je": ("jemalloc", ""), "tc": ("tcmalloc", ""),
}
HOW = {
    "hakmem": "`LD_PRELOAD=target/release/libhakmem.so`",
    "hakmem-linked": "`out/release/PROG_hakmem` (`libhakmem.a` linked in; C benchmarks only; not a peer)",
    "system": "nothing preloaded",
}

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
    "xmalloc-fixed-t2": "xmalloc-style: producers allocate 64 B blocks, consumers free them, 2 threads",
    "xmalloc-fixed-t4": "xmalloc-style: producers allocate 64 B blocks, consumers free them, 4 threads",
    "xmalloc-random-t2": "xmalloc-style: producers allocate 8-1024 B blocks, consumers free them, 2 threads",
    "xmalloc-random-t4": "xmalloc-style: producers allocate 8-1024 B blocks, consumers free them, 4 threads",
    "cache_scratch-t1": "cache-scratch (passive false sharing), 1 thread",
    "cache_scratch-t2": "cache-scratch (passive false sharing), 2 threads",
    "cache_scratch-t4": "cache-scratch (passive false sharing), 4 threads",
    "cache_thrash-t1": "cache-thrash (active false sharing), 1 thread",
    "cache_thrash-t2": "cache-thrash (active false sharing), 2 threads",
    "cache_thrash-t4": "cache-thrash (active false sharing), 4 threads",
    "mstress-t1": "mstress: threads pass blocks around and keep them long, 1 thread",
    "mstress-t2": "mstress: many threads pass blocks around and keep them long, 2 threads",
    "mstress-t4": "mstress: many threads pass blocks around and keep them long, 4 threads",
    "rptest-t1": "rptest: random sizes 8 B-16 KiB, live set growing and shrinking, 1 thread",
    "rptest-t2": "rptest: random sizes 8 B-16 KiB, live set growing and shrinking, 2 threads",
    "rptest-t4": "rptest: random sizes 8 B-16 KiB, live set growing and shrinking, 4 threads",
    "glibc_loop-t1": "glibc-simple: tight malloc/free loop, 1 thread",
    "glibc_loop-t2": "glibc-thread: tight malloc/free loop, 2 threads",
    "glibc_loop-t8": "glibc-thread: tight malloc/free loop, 8 threads on 2 cores",
    "malloc_large": "malloc-large: 5-25 MiB blocks churned",
    "big_heap": "big heap: millions of small blocks live, then churn",
    "handoff-t2": "threads allocate, hand their blocks over and exit (thread rotation)",
    "python": "Python allocation workload (PYTHONMALLOC=malloc)",
    "gcc": "gcc -O2 -c of a generated C file of ~1,900 lines",
    "sort": "LC_ALL=C sort of a generated 30 MB text file (2 threads)",
    "javac": "javac of generated Java sources (the JVM: JIT and GC threads)",
    "redis": "redis-server (preloaded) under redis-benchmark SET/GET/LPUSH/LPOP, pipelined 16 deep",
    "xz": "xz -T2 -6 of generated log-like text (2 threads)",
}
CHART_SECTION = {"speed": "1 and 2 threads", "contention": "4 and 8 threads on 2 cores",
                 "real": "real programs"}
SECTIONS = [
    ("speed", "Speed: 1 and 2 threads"),
    ("contention", "Contention and oversubscription: 4 and 8 threads on 2 cores"),
    ("real", "Real programs under LD_PRELOAD"),
]
TARGET_GEOMEAN = 1.10
TARGET_RSS = 1.10


def section_of(kind, threads):
    if kind == "real":
        return "real"
    try:
        return "contention" if int(threads) >= 4 else "speed"
    except ValueError:
        return "speed"


def name(a):
    return NAME.get(a, a)


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


def empty():
    return {"vals": [], "rss": [], "fails": []}


def load(raw_path):
    """({bench: {"kind", "threads", "metric", "allocs": {alloc: {"vals", "rss", "fails"}}}}, [allocs])"""
    benches, seen = {}, []
    with open(raw_path, newline="") as f:
        for row in csv.DictReader(f):
            b = benches.setdefault(row["bench"], {
                "kind": row["kind"], "threads": row["threads"], "metric": "", "allocs": {}})
            al = row["alloc"]
            if al not in seen:
                seen.append(al)
            a = b["allocs"].setdefault(al, empty())
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
    order = [a for a in KNOWN if a in seen] + [a for a in seen if a not in KNOWN]
    return benches, order


def summarize(benches, allocs):
    """Adds per-allocator statistics and ratios; returns the CSV rows."""
    rows = []
    for bname, b in benches.items():
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
        best = (max if higher else min)(peers, key=lambda p: st[p]["med"]) if peers else None
        rss_peers = [p for p in PEERS if "rss" in st.get(p, {})]
        small = min(rss_peers, key=lambda p: st[p]["rss"]) if rss_peers else None
        # peers that ran but failed every run: a best peer chosen without them is flagged
        failed_peers = [p for p in PEERS if p in st and "med" not in st[p] and st[p]["nfail"]]
        for a, s in st.items():
            if best and "med" in s and s["med"] > 0:
                bm = st[best]["med"]
                s["speed"] = s["med"] / bm if higher else bm / s["med"]
            if small and "rss" in s and st[small]["rss"] > 0:
                s["rss_ratio"] = s["rss"] / st[small]["rss"]
        b.update(stats=st, best=best, small=small, higher=higher, failed_peers=failed_peers,
                 section=section_of(b["kind"], b["threads"]))
        for a in allocs:
            if a not in st:
                continue
            s = st[a]
            rows.append({
                "bench": bname, "section": b["section"], "kind": b["kind"], "threads": b["threads"],
                "metric": b["metric"], "alloc": a, "is_peer": int(a in PEERS),
                "runs_ok": s.get("n", 0), "runs_fail": s.get("nfail", 0),
                "median": s.get("med", ""), "min": s.get("lo", ""), "max": s.get("hi", ""),
                "maxrss_kb_median": s.get("rss", ""), "maxrss_kb_min": s.get("rss_lo", ""),
                "maxrss_kb_max": s.get("rss_hi", ""),
                "speed_vs_best_peer": round(s["speed"], 4) if "speed" in s else "",
                "best_peer": best or "",
                "rss_vs_leanest_peer": round(s["rss_ratio"], 4) if "rss_ratio" in s else "",
                "leanest_peer": small or "",
                "fail_notes": "; ".join(sorted(set(s.get("fails", [])))),
            })
    return rows


def read_served(path):
    """{bench: {alloc: (status, detail)}}, in file order"""
    out = {}
    if path and os.path.exists(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out.setdefault(row["bench"], {})[row["alloc"]] = (row["status"], row["detail"])
    return out


def read_callgrind(path):
    if not path or not os.path.exists(path):
        return None
    data, sizes, ids, date = {}, [], [], ""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            size = row["size"]
            if size not in data:
                data[size] = {}
                sizes.append(size)
            if row["alloc"] not in ids:
                ids.append(row["alloc"])
            date = row.get("date", date)
            v = fnum(row.get("ir_per_pair"))
            data[size][row["alloc"]] = v if (row["status"] == "OK" and v is not None) else row["status"]
    if not sizes:
        return None
    ids = [a for a in KNOWN if a in ids] + [a for a in ids if a not in KNOWN]
    return {"data": data, "sizes": sizes, "ids": ids, "date": date}


# --------------------------------------------------------------------------- machine
def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(meta):
    """From meta.txt (written by bench.sh at run time), else from this machine now."""
    info = {}
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = meta.get("cpu") or cpu or platform.processor() or "unknown"
    info["cores"] = meta.get("cores") or "%s usable" % (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    info["memory"] = meta.get("memory", "unknown")
    info["kernel"] = meta.get("kernel") or "%s %s" % (platform.system(), platform.release())
    info["glibc"] = meta.get("glibc") or (os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "unknown")
    info["rustc"] = meta.get("rustc") or sh(["rustc", "--version"]) or "unknown"
    info["cc"] = meta.get("cc") or (sh(["cc", "--version"]).splitlines() or ["unknown"])[0]
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


def runs_cell(s):
    n, nf = s.get("n", 0), s.get("nfail", 0)
    if nf == 0:
        return "%d" % n
    notes = sorted(set(s.get("fails", [])))
    note = notes[0] if notes else "FAIL"
    if len(note) > 90:
        note = note[:87] + "..."
    more = " (+%d more reasons)" % (len(notes) - 1) if len(notes) > 1 else ""
    return "%d ok, **%d FAIL**: %s%s" % (n, nf, note.replace("|", "/"), more)


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def md_cell(s):
    return str(s).replace("|", "\\|")


# --------------------------------------------------------------------------- markdown
def targets(benches):
    """The issue's targets, evaluated for hakmem (the preloaded one)."""
    t = {"speed12": [], "below12": [], "below48": [], "real_slower": [], "rss_over": [], "nodata": []}
    for n, b in benches.items():
        h = b["stats"].get(HAKMEM, {})
        if not b["best"]:
            t["nodata"].append((n, "no peer result"))
            continue
        if "speed" not in h:
            t["nodata"].append((n, "hakmem: no successful run"))
            (t["below12"] if b["section"] == "speed" else
             t["below48"] if b["section"] == "contention" else t["real_slower"]).append((n, None, b["best"]))
            continue
        if b["section"] == "speed":
            t["speed12"].append(h["speed"])
            if h["speed"] < 1.0:
                t["below12"].append((n, h["speed"], b["best"]))
        elif b["section"] == "contention":
            if h["speed"] < 1.0:
                t["below48"].append((n, h["speed"], b["best"]))
        elif h["speed"] < 1.0:
            t["real_slower"].append((n, h["speed"], b["best"]))
        if "rss_ratio" in h and h["rss_ratio"] > TARGET_RSS:
            t["rss_over"].append((n, h["rss_ratio"], b["small"]))
    return t


def repo_relative(path):
    """A path under the repository as the README's commands spell it (the
    peers built into target/peers), so that the table reads the same from
    any clone; other paths (Debian's libraries) as they are."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if path.startswith(root + os.sep):
        return os.path.relpath(path, root)
    return path


def write_markdown(path, benches, allocs, meta, info, served, callgrind, svg_name, csv_name):
    L = []
    date = meta.get("date_start") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    runs = meta.get("runs", "?")
    inv = meta.get("invocation", "scripts/bench.sh")
    L += ["# hakmem benchmarks", "",
          "Generated by `scripts/bench_report.py` from the results of `%s` (%s mode, %s round(s): every "
          "configuration once per allocator per round, the allocator order rotated from round to round). "
          "Every figure is the median of the runs, with min–max beside it, compared with the peers measured "
          "in the same session. Every allocator, hakmem included, is loaded the same way: the benchmark "
          "binary is built once against glibc and run under `LD_PRELOAD` of the allocator's shared object. "
          "The *hakmem (linked)* column (the same benchmark linked to `libhakmem.a`) is shown for "
          "reference only; it is never a peer and never the hakmem figure of a ratio."
          % (inv, meta.get("mode", "?"), runs), "",
          "![speed and peak RSS relative to the best peer](%s)" % svg_name, ""]

    # machine and versions
    L += ["## Machine and allocators", "", "| | |", "| --- | --- |"]
    L.append("| date | %s%s |" % (date, " – " + meta["date_end"] if meta.get("date_end") else ""))
    for k, label in (("cpu", "CPU"), ("cores", "cores"), ("memory", "memory"), ("kernel", "kernel"),
                     ("glibc", "glibc")):
        L.append("| %s | %s |" % (label, info[k]))
    L.append("| hakmem | revision %s, %s |" % (meta.get("hakmem_rev", "?"), info["rustc"]))
    L.append("| C compiler | %s |" % info["cc"])
    if meta.get("elapsed_s"):
        s = int(meta["elapsed_s"])
        L.append("| session length | %d s (%d min) |" % (s, round(s / 60)))
    L.append("")
    L += ["| allocator | id | version | how it is loaded |", "| --- | --- | --- | --- |"]
    for a in allocs:
        how = HOW.get(a) or ("`LD_PRELOAD=%s`" % repo_relative(meta.get("preload." + a, "?")))
        ver = meta.get("version." + a, "?")
        miss = meta.get("missing." + a)
        L.append("| %s | `%s` | %s | %s%s |" % (name(a), a, md_cell(ver), how,
                                              " — **missing: %s**" % md_cell(miss) if miss else ""))
    progs = [(k[5:], v) for k, v in meta.items() if k.startswith("prog.")]
    if progs:
        L.append("")
        L.append("Real programs: " + "; ".join("%s: %s" % (k, md_cell(v)) for k, v in progs) + ".")
    L += ["", "The machine is shared with other work; absolute numbers drift between sessions, ratios "
          "from one session are what to compare. With 2 cores, 4 and 8 threads measure contention and "
          "oversubscription, not scaling.", ""]
    missing = [(a, meta["missing." + a]) for a in allocs if meta.get("missing." + a)]
    if missing:
        L += ["**Missing in this session:** " + "; ".join("%s: %s" % (name(a), w) for a, w in missing)
              + ". Their runs are shown as FAIL.", ""]
    skipped = [(k[8:], v) for k, v in meta.items() if k.startswith("skipped.")]
    if skipped:
        L += ["**Not run in this session:** " + "; ".join("%s (%s)" % (k, v) for k, v in skipped) + ".", ""]

    # targets
    t = targets(benches)
    g = geomean(t["speed12"])

    def lst(items, fmt="%s %s (best peer %s)"):
        if not items:
            return "none"
        return ", ".join(fmt % (n, fmt_ratio(r) if r is not None else "FAIL", name(p)) for n, r, p in items)
    L += ["## Targets", "",
          "hakmem (preloaded) against the best peer of each benchmark, from this session. "
          "Speed ratio: hakmem/best peer for throughput, best peer/hakmem for wall time (**>1: hakmem "
          "faster** than every peer). RSS ratio: hakmem's median peak RSS / the leanest peer's "
          "(**<1: hakmem leaner**).", "",
          "| target | measured | met |", "| --- | --- | :---: |"]
    L.append("| geometric mean of the speed ratio, 1–2-thread benchmarks ≥ %.2f× | %s over %d benchmarks | %s |" % (
        TARGET_GEOMEAN, fmt_ratio(g), len(t["speed12"]),
        "-" if g is None else "yes" if g >= TARGET_GEOMEAN else "**no**"))
    n12 = len([1 for b in benches.values() if b["section"] == "speed"])
    n48 = len([1 for b in benches.values() if b["section"] == "contention"])
    nreal = len([1 for b in benches.values() if b["section"] == "real"])
    L.append("| every 1–2-thread benchmark ≥ 1.00× | %d of %d below | %s |" % (
        len(t["below12"]), n12, "yes" if not t["below12"] else "**no**"))
    L.append("| every 4–8-thread benchmark ≥ 1.00× | %d of %d below | %s |" % (
        len(t["below48"]), n48, "yes" if not t["below48"] else "**no**"))
    L.append("| real programs: wall time ≤ the best peer's | %d of %d slower | %s |" % (
        len(t["real_slower"]), nreal, "yes" if not t["real_slower"] else "**no**"))
    L.append("| peak RSS ≤ %.2f× the leanest peer's, every benchmark | %d of %d over | %s |" % (
        TARGET_RSS, len(t["rss_over"]), len(benches), "yes" if not t["rss_over"] else "**no**"))
    L.append("")
    for key, title, fmt in (("below12", "Below 1.00× at 1–2 threads", "%s %s (best peer %s)"),
                            ("below48", "Below 1.00× at 4–8 threads", "%s %s (best peer %s)"),
                            ("real_slower", "Real programs slower than the best peer", "%s %s (best peer %s)"),
                            ("rss_over", "Peak RSS over %.2f× the leanest peer" % TARGET_RSS, "%s %s (leanest %s)")):
        if t[key]:
            worst_first = sorted(t[key], key=lambda x: x[1] if x[1] is not None else 0, reverse=key == "rss_over")
            L.append("- %s (worst first): %s." % (title, lst(worst_first, fmt)))
    if t["nodata"]:
        L.append("")
        L.append("No ratio: " + "; ".join("%s (%s)" % x for x in t["nodata"]) + ".")
    L.append("")

    # summary table
    L += ["## Summary", "",
          "| benchmark | threads | hakmem | best peer | speed vs best peer | hakmem (linked) vs best peer "
          "| hakmem peak RSS | leanest peer | RSS vs leanest peer |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    agg = {sec: {"speed": [], "rss": []} for sec, _ in SECTIONS}
    for sec, title in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if not names:
            continue
        L.append("| ***%s*** | | | | | | | | |" % title)
        for n in names:
            b = benches[n]
            st, h, lk = b["stats"], b["stats"].get(HAKMEM, {}), b["stats"].get(LINKED, {})
            best, small = b["best"], b["small"]
            hcell = fmt_metric(h.get("med"), b["metric"]) if "med" in h else ("**FAIL**" if h else "-")
            if h.get("nfail") and "med" in h:
                hcell += " (%d FAIL)" % h["nfail"]
            bcell = "%s %s" % (name(best), fmt_metric(st[best]["med"], b["metric"])) if best else "-"
            if b["failed_peers"]:
                bcell += " (FAIL: %s)" % ", ".join(name(p) for p in b["failed_peers"])
            scell = "%s %s" % (name(small), mib(st[small]["rss"])) if small else "-"
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, b["threads"], hcell, bcell,
                ("**%s**" % fmt_ratio(h["speed"])) if "speed" in h else "-",
                fmt_ratio(lk.get("speed")) if lk else "",
                mib(h["rss"]) if "rss" in h else "-", scell,
                ("**%s**" % fmt_ratio(h["rss_ratio"])) if "rss_ratio" in h else "-"))
            if "speed" in h:
                agg[sec]["speed"].append(h["speed"])
            if "rss_ratio" in h:
                agg[sec]["rss"].append(h["rss_ratio"])
    for sec, title in SECTIONS:
        a = agg[sec]
        if a["speed"] or a["rss"]:
            L.append("| *geometric mean, %s* | | | | *%s* | | | | *%s* |" % (
                sec, fmt_ratio(geomean(a["speed"])), fmt_ratio(geomean(a["rss"]))))
    L += ["", "Per-benchmark tables: below. All figures as CSV: [`%s`](%s)." % (csv_name, csv_name), ""]

    # served check
    if served:
        cols = [a for a in allocs if any(a in v for v in served.values())]
        L += ["## Served check", "",
              "Once per session, outside the timed runs, each real program (and one C benchmark, standing "
              "for all: they are built the same way) ran once under each allocator with "
              "`LD_DEBUG=bindings`; `scripts/real/served.py` checked that every binding of `malloc`, "
              "`calloc`, `realloc` and `free` — by the main executable (and `libjvm.so` for javac), by "
              "every library, in every process (gcc's `cc1` and `as` included) — resolves to the "
              "preloaded library (glibc's `libc.so.6` when nothing is preloaded). An allocator that "
              "does not serve a program has that program's runs recorded as FAIL.", "",
              "| program | " + " | ".join(name(a) for a in cols) + " |",
              "| --- | " + " | ".join(":---:" for _ in cols) + " |"]
        notes = []
        for prog, row in served.items():
            cells = []
            for a in cols:
                if a not in row:
                    cells.append("-")
                    continue
                st, detail = row[a]
                mark = {"OK": "yes", "FAIL": "**NO**", "UNKNOWN": "?"}.get(st, st)
                if st != "OK" or "warning" in detail or "this untimed run" in detail:
                    notes.append("%s, %s: %s" % ("C benchmarks" if prog == "c" else prog, name(a), detail))
                    mark += " [%d]" % len(notes)
                cells.append(mark)
            L.append("| %s | %s |" % ("C benchmarks" if prog == "c" else prog, " | ".join(cells)))
        L.append("")
        for i, nt in enumerate(notes, 1):
            L.append("%d. %s" % (i, md_cell(nt)))
        if notes:
            L.append("")

    # commands
    L += ["## Commands", "", "```sh",
          "%s        # builds, checks, runs, then: scripts/bench_report.py" % inv,
          "./build.sh                 # target/release/libhakmem.so and libhakmem.a",
          "scripts/peers.sh           # target/peers/libmimalloc3.so, libmimalloc2.so, libsnmalloc.so (cached)",
          "./build.sh PROG_system     # bench-c/PROG.c -> out/release/PROG_system, the binary every allocator runs",
          "./build.sh PROG_hakmem     # the same linked to libhakmem.a: the hakmem (linked) column",
          "```", "",
          "Each run: `timeout %s /usr/bin/time -f '%%e %%M' env LD_PRELOAD={SO} COMMAND` (no `LD_PRELOAD` for "
          "glibc). C benchmarks print a `RESULT` line with their own throughput and peak RSS; for real programs "
          "the metric is the wall time and peak RSS from `/usr/bin/time`, and each run's output is checked "
          "against a reference made without preload (redis: the server's state after the run; xz: the output "
          "decompresses to the input; javac: the class files). A run that fails (non-zero exit, timeout, no "
          "RESULT line, wrong output, not served) is counted as FAIL." % meta.get("timeout_s", "?"), "",
          "| benchmark | command |", "| --- | --- |"]
    for n in benches:
        L.append("| %s | `%s` |" % (n, md_cell(meta.get("cmd." + n, ""))))
    L.append("")

    # per-benchmark tables
    for sec, title in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if not names:
            continue
        L += ["## %s" % title, ""]
        for n in names:
            b = benches[n]
            metric = b["metric"] or "?"
            better = "higher is better" if b["higher"] else "lower is better"
            L += ["### %s" % n, "",
                  "%s. Metric: `%s` (%s); threads: %s." % (DESCRIPTION.get(n, n), metric, better, b["threads"])]
            if meta.get("cmd." + n):
                L.append("Command: `%s`." % md_cell(meta["cmd." + n]))
            if meta.get("note." + n):
                L.append(meta["note." + n])
            L += ["", "| allocator | median (min–max) | speed vs best peer | peak RSS median (min–max) "
                  "| RSS vs leanest peer | runs |", "| --- | ---: | ---: | ---: | ---: | --- |"]
            for a in allocs:
                s = b["stats"].get(a)
                if not s:
                    continue
                label = name(a)
                tags = []
                if a == b["best"]:
                    tags.append("fastest peer")
                if a == b["small"]:
                    tags.append("leanest peer")
                if tags:
                    label += " (%s)" % ", ".join(tags)
                cells = [
                    label,
                    fmt_range(s, metric) if "med" in s else "**FAIL**",
                    fmt_ratio(s.get("speed")),
                    "%s (%.1f–%.1f)" % (mib(s["rss"]), s["rss_lo"] / 1024, s["rss_hi"] / 1024) if "rss" in s else "-",
                    fmt_ratio(s.get("rss_ratio")),
                    runs_cell(s),
                ]
                if a == HAKMEM:
                    cells = ["**%s**" % c if c != "-" and not c.startswith("**") and i < 5 else c
                             for i, c in enumerate(cells)]
                elif a == LINKED:
                    cells = ["*%s*" % c if c != "-" and not c.startswith("**") and i < 5 else c
                             for i, c in enumerate(cells)]
                L.append("| " + " | ".join(cells) + " |")
            L.append("")

    # callgrind
    if callgrind:
        ids = callgrind["ids"]
        L += ["## Fast-path cost (callgrind)", "",
              "Instructions per malloc/free pair of one size on a fixed loop (`bench-c/bench_pair.c`, built "
              "once against glibc and run under `LD_PRELOAD` of each allocator), from two runs under "
              "`valgrind --tool=callgrind` with different pair counts so start-up cost cancels: "
              "(Ir(N) − Ir(N0)) / (N − N0). Includes the loop's own instructions, the same for every "
              "allocator. Repeatable where wall time is not. Measured by `scripts/callgrind.sh` on %s."
              % callgrind["date"], "",
              "| size (bytes) | " + " | ".join(name(a) for a in ids) + " | hakmem / cheapest peer |",
              "| ---: | " + " | ".join("---:" for _ in ids) + " | ---: |"]
        for size in callgrind["sizes"]:
            row = callgrind["data"][size]
            cells = []
            for a in ids:
                v = row.get(a)
                cells.append("%.1f" % v if isinstance(v, float) else (v or "-"))
            peers = [row[p] for p in ids if not p.startswith("hakmem") and isinstance(row.get(p), float)]
            h = row.get(HAKMEM)
            rel = "%.2f×" % (h / min(peers)) if isinstance(h, float) and peers and min(peers) > 0 else "-"
            L.append("| %s | %s | %s |" % (size, " | ".join(cells), rel))
        L.append("")

    with open(path, "w") as f:
        f.write("\n".join(L))


# --------------------------------------------------------------------------- svg
def lerp(c1, c2, t):
    t = max(0.0, min(1.0, t))
    a = [int(c1[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(c2[i:i + 2], 16) for i in (1, 3, 5)]
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * t) for x, y in zip(a, b))


WHITE, GREEN, RED = "#f7f7f7", "#1a9850", "#d73027"


def speed_color(v):   # higher is better; 1.0 = the fastest peer
    if v >= 1.0:
        return lerp(WHITE, GREEN, (v - 1.0) / 0.5)
    return lerp(WHITE, RED, (1.0 - v) / 0.5)


def rss_color(v):     # lower is better; 1.0 = the leanest peer
    if v <= 1.0:
        return lerp(WHITE, GREEN, (1.0 - v) / 0.4)
    return lerp(WHITE, RED, (v - 1.0) / 1.0)


def ink(fill):
    r, g, b = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#222222"


def write_svg(path, benches, allocs, meta):
    LABEL_W, CELL_W, ROW_H, GAP = 180, 62, 20, 36
    ncol = len(allocs)
    PANEL_W = ncol * CELL_W
    X0 = [LABEL_W + 10, LABEL_W + 10 + PANEL_W + GAP]
    W = X0[1] + PANEL_W + 20
    TOP = 128
    order = []
    for sec, _ in SECTIONS:
        names = [n for n, b in benches.items() if b["section"] == sec]
        if names:
            order.append(("section", CHART_SECTION[sec]))
            order += [("bench", n) for n in names]
    SEC_H = 24
    height = TOP + sum(SEC_H if k == "section" else ROW_H for k, _ in order) + 88

    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="Helvetica, Arial, sans-serif">' % (W, height, W, height),
         '<rect width="100%" height="100%" fill="#ffffff"/>']
    peers = ", ".join(name(a) for a in allocs if a in PEERS)
    o.append('<text x="20" y="28" font-size="18" font-weight="bold" fill="#222">%s</text>'
             % escape("hakmem vs %s" % peers))
    o.append('<text x="20" y="47" font-size="11.5" fill="#555">%s</text>' % escape(
        "all through LD_PRELOAD of the same glibc-built binary; median of %s run(s) per allocator, %s; "
        "each cell relative to the best peer of its row (= 1.00)" % (meta.get("runs", "?"), meta.get("date_start", ""))))
    ptitles = ["Speed ÷ fastest peer's  (higher is better)", "Peak RSS ÷ leanest peer's  (lower is better)"]
    for p in range(2):
        o.append('<text x="%d" y="72" font-size="13" font-weight="bold" fill="#222">%s</text>'
                 % (X0[p], escape(ptitles[p])))
        for i, a in enumerate(allocs):
            cx = X0[p] + i * CELL_W + CELL_W / 2
            l1, l2 = HEAD.get(a, (a, ""))
            weight = ' font-weight="bold"' if a == HAKMEM else (' font-style="italic"' if a == LINKED else "")
            o.append('<text x="%.1f" y="%d" font-size="10.5" fill="#222" text-anchor="middle"%s>%s</text>'
                     % (cx, TOP - 22, weight, escape(l1)))
            if l2:
                o.append('<text x="%.1f" y="%d" font-size="9.5" fill="#555" text-anchor="middle"%s>%s</text>'
                         % (cx, TOP - 10, weight, escape(l2)))

    y = TOP
    for kind, nm in order:
        if kind == "section":
            o.append('<text x="20" y="%d" font-size="12" font-weight="bold" fill="#333">%s</text>'
                     % (y + 16, escape(nm)))
            y += SEC_H
            continue
        b = benches[nm]
        o.append('<text x="%d" y="%d" font-size="11.5" fill="#222" text-anchor="end">%s</text>'
                 % (LABEL_W, y + 14, escape(nm)))
        for p, key in enumerate(("speed", "rss_ratio")):
            for i, a in enumerate(allocs):
                s = b["stats"].get(a)
                x = X0[p] + i * CELL_W
                if s is None:
                    fill, text, tip = "#ffffff", "", "%s: not run" % name(a)
                elif key in s:
                    v = s[key]
                    fill = speed_color(v) if key == "speed" else rss_color(v)
                    text = "%.2f" % v
                    tip = "%s %s: %.3f×" % (name(a), nm, v)
                elif s.get("nfail"):
                    fill, text, tip = "#555555", "FAIL", "%s: %s" % (name(a), "; ".join(sorted(set(s["fails"])))[:200])
                else:
                    fill, text, tip = "#e0e0e0", "n/a", "%s: no figure" % name(a)
                o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="#ffffff" stroke-width="1">'
                         '<title>%s</title></rect>' % (x, y, CELL_W, ROW_H, fill, escape(tip)))
                if text:
                    weight = ' font-weight="bold"' if a == HAKMEM else (' font-style="italic"' if a == LINKED else "")
                    o.append('<text x="%.1f" y="%d" font-size="10.5" fill="%s" text-anchor="middle"%s>%s</text>'
                             % (x + CELL_W / 2, y + 14, ink(fill), weight, text))
        y += ROW_H
    # hakmem's column outlined, the linked column set off by a dashed line
    for p in range(2):
        if HAKMEM in allocs:
            i = allocs.index(HAKMEM)
            o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#222" stroke-width="2"/>'
                     % (X0[p] + i * CELL_W, TOP - 36, CELL_W, y - TOP + 36))
        if LINKED in allocs:
            i = allocs.index(LINKED)
            o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#222" stroke-width="1" stroke-dasharray="3,3"/>'
                     % (X0[p] + (i + 1) * CELL_W, TOP - 36, X0[p] + (i + 1) * CELL_W, y))
    # legend
    ly = y + 22
    lx = 20
    o.append('<text x="%d" y="%d" font-size="10.5" fill="#444">speed:</text>' % (lx, ly + 11))
    lx += 42
    for v in (0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5):
        f = speed_color(v)
        o.append('<rect x="%d" y="%d" width="40" height="15" fill="%s"/>' % (lx, ly, f))
        o.append('<text x="%d" y="%d" font-size="10" fill="%s" text-anchor="middle">%.2f</text>' % (lx + 20, ly + 11, ink(f), v))
        lx += 41
    lx += 30
    o.append('<text x="%d" y="%d" font-size="10.5" fill="#444">peak RSS:</text>' % (lx, ly + 11))
    lx += 58
    for v in (0.6, 0.8, 0.9, 1.0, 1.1, 1.5, 2.0):
        f = rss_color(v)
        o.append('<rect x="%d" y="%d" width="40" height="15" fill="%s"/>' % (lx, ly, f))
        o.append('<text x="%d" y="%d" font-size="10" fill="%s" text-anchor="middle">%.2f</text>' % (lx + 20, ly + 11, ink(f), v))
        lx += 41
    foot = ["Speed: ops/s ÷ the fastest peer's, or the fastest peer's wall time ÷ own. Peak RSS: median ÷ the "
            "leanest peer's. FAIL: no successful run.",
            "Peers: glibc, mimalloc 2.0 (Debian), mimalloc 3, mimalloc 2, snmalloc, jemalloc, tcmalloc. hakmem "
            "(outlined) is preloaded like them; hakmem linked is shown only. Source: docs/BENCHMARKS.md, "
            "docs/benchmarks.csv."]
    for i, line in enumerate(foot):
        o.append('<text x="20" y="%d" font-size="10" fill="#777">%s</text>' % (ly + 34 + 13 * i, escape(line)))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# --------------------------------------------------------------------------- main
README_BEGIN = "<!-- results:begin (written by scripts/bench_report.py) -->"
README_END = "<!-- results:end -->"


def write_readme_results(readme, benches, meta):
    """The README's results table: hakmem against the best peer per benchmark,
    between the README_BEGIN and README_END markers (left alone if absent)."""
    try:
        with open(readme) as f:
            text = f.read()
    except OSError:
        return False
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        return False
    t = targets(benches)
    date = (meta.get("date_start") or "?").split(" ")[0]
    L = [README_BEGIN, "",
         "From `make bench` of %s (hakmem %s; %s interleaved rounds, medians; every allocator through "
         "`LD_PRELOAD`). Speed: hakmem / the fastest of the seven peers (> 1: hakmem faster); RSS: hakmem's "
         "peak / the leanest peer's (< 1: hakmem smaller). Details, versions and commands: "
         "[docs/BENCHMARKS.md](docs/BENCHMARKS.md)." % (date, meta.get("hakmem_rev", "?"), meta.get("runs", "?")),
         "",
         "| benchmark | threads | hakmem | fastest peer | speed | RSS |",
         "| --- | --- | --- | --- | --- | --- |"]
    for n, b in benches.items():
        h = b["stats"].get(HAKMEM, {})
        best = b["best"]
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            n, b["threads"],
            fmt_metric(h.get("med"), b["metric"]) if "med" in h else "FAIL",
            "%s %s" % (name(best), fmt_metric(b["stats"][best]["med"], b["metric"])) if best else "-",
            fmt_ratio(h.get("speed")), fmt_ratio(h.get("rss_ratio"))))
    L += ["", "Geometric mean of the speed ratio at 1-2 threads: %s." % fmt_ratio(geomean(t["speed12"])), "",
          README_END]
    with open(readme, "w") as f:
        f.write(text[:i] + "\n".join(L) + text[j + len(README_END):])
    return True


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(root, "out/bench/raw.csv"))
    ap.add_argument("--meta", default=os.path.join(root, "out/bench/meta.txt"))
    ap.add_argument("--served", default=os.path.join(root, "out/bench/served.csv"))
    ap.add_argument("--callgrind", default=os.path.join(root, "out/bench/callgrind.csv"))
    ap.add_argument("--out-dir", default=os.path.join(root, "docs"))
    args = ap.parse_args()

    if not os.path.exists(args.raw):
        sys.exit("bench_report.py: %s not found; run scripts/bench.sh first" % args.raw)
    benches, allocs = load(args.raw)
    if not benches:
        sys.exit("bench_report.py: no rows in %s" % args.raw)
    rows = summarize(benches, allocs)
    meta = read_meta(args.meta)
    info = machine_info(meta)
    served = read_served(args.served)
    callgrind = read_callgrind(args.callgrind)

    os.makedirs(args.out_dir, exist_ok=True)
    md = os.path.join(args.out_dir, "BENCHMARKS.md")
    csv_path = os.path.join(args.out_dir, "benchmarks.csv")
    svg = os.path.join(args.out_dir, "benchmarks.svg")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    write_svg(svg, benches, allocs, meta)
    write_markdown(md, benches, allocs, meta, info, served, callgrind, os.path.basename(svg),
                   os.path.basename(csv_path))

    # short summary on the terminal
    print("bench_report.py: wrote %s, %s, %s" % (md, csv_path, svg))
    if os.path.abspath(args.out_dir) == os.path.join(root, "docs") and write_readme_results(
            os.path.join(root, "README.md"), benches, meta):
        print("bench_report.py: updated the results table in README.md")
    print("%-20s %14s %8s %8s %30s %8s" % ("benchmark", "hakmem", "speed", "linked", "best peer", "RSS"))
    for n, b in benches.items():
        h = b["stats"].get(HAKMEM, {})
        lk = b["stats"].get(LINKED, {})
        best = b["best"]
        print("%-20s %14s %8s %8s %30s %8s" % (
            n, fmt_metric(h.get("med"), b["metric"]) if "med" in h else ("FAIL" if h else "-"),
            fmt_ratio(h.get("speed")), fmt_ratio(lk.get("speed")) if lk else "",
            "%s %s" % (name(best), fmt_metric(b["stats"][best]["med"], b["metric"])) if best else "-",
            fmt_ratio(h.get("rss_ratio"))))
    t = targets(benches)
    g = geomean(t["speed12"])
    print("geomean speed, 1-2 threads: %s (target >= %.2f); below 1.00 at 1-2 threads: %d, at 4-8: %d; "
          "real programs slower: %d; RSS over %.2f: %d" % (
              fmt_ratio(g), TARGET_GEOMEAN, len(t["below12"]), len(t["below48"]), len(t["real_slower"]),
              TARGET_RSS, len(t["rss_over"])))


if __name__ == "__main__":
    main()

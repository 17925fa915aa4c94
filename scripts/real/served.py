#!/usr/bin/env python3
"""Is a program really served by the allocator it was started under?  (scripts/bench.sh)

    served.py --expect SO|libc --main NAME[,NAME...] DIR

DIR holds the files that glibc's ld.so wrote for one run of the program with
LD_DEBUG=bindings LD_DEBUG_OUTPUT=DIR/ld (one file ld.PID per process, children
included).  Every binding of malloc, calloc, realloc and free, by any object of any
process, must resolve to SO (`libc`: glibc's libc.so.6, for runs with nothing
preloaded), and each NAME (the main executable as ld.so names it, i.e. argv[0], or a
library such as libjvm.so; matched on the basename, NAME or NAME followed by more
characters) must have bound at least one of them.  Other allocation functions
(posix_memalign, aligned_alloc, memalign, valloc, pvalloc, reallocarray,
malloc_usable_size) resolved elsewhere are reported as a warning: the program may then
mix two allocators on those paths (not reallocarray: glibc's calls realloc through the
PLT).  A binding to a non-PIE executable's canonical PLT entry (it takes malloc's
address) counts as the binding of that executable's own PLT slot.

Prints one line and exits 0 (served), 1 (not served) or 2 (no binding data: LD_DEBUG
unsupported, or the program never called malloc).
"""
import argparse
import os
import re
import sys

CORE = ("malloc", "calloc", "realloc", "free")
EXTRA = ("posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc", "reallocarray",
         "malloc_usable_size")
LINE = re.compile(r"binding file (.+?) \[\d+\] to (.+?) \[\d+\]: normal symbol `([^']+)'")


def short(path):
    return os.path.basename(path) or path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--main", required=True)
    ap.add_argument("dir")
    args = ap.parse_args()

    if args.expect == "libc":
        def ok(target):
            return short(target).startswith("libc.so")
        want = "libc.so.6"
    else:
        real = os.path.realpath(args.expect)

        def ok(target):
            return os.path.realpath(target) == real
        want = short(args.expect)
    mains = [m for m in args.main.split(",") if m]

    procs = 0
    bad, warn = {}, {}
    seen_main = {m: False for m in mains}
    objs = set()
    for name in sorted(os.listdir(args.dir)):
        if not name.startswith("ld"):
            continue
        procs += 1
        binds = []
        with open(os.path.join(args.dir, name), errors="replace") as f:
            for line in f:
                if "normal symbol" not in line:
                    continue
                m = LINE.search(line)
                if m and m.group(3) in CORE + EXTRA:
                    binds.append(m.groups())
        # A non-PIE executable that takes the address of malloc has a canonical PLT entry:
        # every object (itself included) then binds `malloc` to the executable, whose own
        # PLT slot binds it onward.  Such a target is as good as where it forwards to.
        fwd = {}
        for who, target, sym in binds:
            if who != target:
                fwd.setdefault((who, sym), set()).add(target)

        def served_by(target, sym):
            return ok(target) or any(ok(t) for t in fwd.get((target, sym), ()))

        for who, target, sym in binds:
            if sym in CORE:
                objs.add(who)
                if served_by(target, sym):
                    for mm in mains:
                        if short(who).startswith(mm):
                            seen_main[mm] = True
                else:
                    bad.setdefault((short(who), short(target)), set()).add(sym)
            elif sym != "reallocarray" and not served_by(target, sym):
                # glibc's reallocarray calls realloc through the PLT: it ends up in the
                # preloaded allocator anyway.  Its memalign family and malloc_usable_size do not.
                warn.setdefault((short(who), short(target)), set()).add(sym)

    def fmt(d):
        return "; ".join("%s: %s -> %s" % (who, ",".join(sorted(syms)), tgt)
                         for (who, tgt), syms in sorted(d.items())[:4]) + (" ..." if len(d) > 4 else "")

    if procs == 0 or not objs:
        print("UNKNOWN: no malloc bindings recorded (%d LD_DEBUG files)" % procs)
        return 2
    missing = [m for m, s in seen_main.items() if not s]
    if bad or missing:
        parts = []
        if bad:
            parts.append("bound elsewhere: " + fmt(bad))
        if missing:
            parts.append("no malloc/calloc/realloc/free binding to %s from %s" % (want, ", ".join(missing)))
        print("FAIL: " + "; ".join(parts))
        return 1
    msg = "OK: malloc/calloc/realloc/free of %s and all %d binding objects (%d process%s) -> %s" % (
        ", ".join(mains), len(objs), procs, "" if procs == 1 else "es", want)
    if warn:
        msg += "; warning: " + fmt(warn)
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Allocation-heavy, deterministic Python workload for scripts/test-real-programs.sh.

Usage: alloc_workload.py [SCALE]   (SCALE: float, default 1.0)

Prints one digest line per phase and a final digest; the output depends only
on SCALE (run with PYTHONHASHSEED=0; PYTHONMALLOC=malloc routes every object
allocation through malloc/realloc/free instead of pymalloc's arenas).
"""
import array
import collections
import gc
import hashlib
import json
import random
import sys
import threading
import zlib


def h(obj):
    return hashlib.sha256(repr(obj).encode()).hexdigest()[:16]


def phase_dicts(rng, n):
    d = {}
    for i in range(n):
        d["k%d_%x" % (i, rng.getrandbits(24))] = (i, str(i) * (i % 7), [i] * (i % 5))
    keys = sorted(d)
    for k in keys[::3]:
        del d[k]
    for i in range(n // 2):
        d["extra%d" % i] = {"v": i, "s": "x" * (i % 100)}
    c = collections.Counter(k[:3] for k in d)
    od = collections.OrderedDict(sorted(d.items())[: n // 4])
    od.move_to_end(next(iter(od)))
    return [len(d), sorted(c.items()), list(od)[-3:], sum(len(repr(v)) for v in d.values())]


def phase_lists(rng, n):
    a = [rng.randint(-10**9, 10**9) for _ in range(n)]
    b = sorted(a)
    c = sorted(a, key=lambda x: (x % 1000, -x))
    t = [(str(x), x & 0xff, float(x) / 7) for x in a[: n // 2]]
    t.sort(key=lambda r: (r[1], r[0]))
    growing = []
    for i in range(n):
        growing.append(i)
        if i % 1000 == 999:
            del growing[: len(growing) // 2]
    arr = array.array("q", a)
    arr.extend(arr[: n // 3])
    return [b[:: max(1, n // 50)], c[:20], t[:5], len(growing), sum(arr) & 0xffffffff]


def phase_strings(rng, n):
    words = ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(1, 12))) for _ in range(n)]
    text = " ".join(words)
    up = text.upper().replace("A", "<a>").split("E")
    parts = []
    for i, w in enumerate(words[: n // 2]):
        parts.append(f"{i}:{w!r}:{w[::-1]}:{len(w):04d}")
    joined = "|".join(parts)
    s = ""
    for w in words[: n // 20]:      # quadratic-ish concatenation -> realloc
        s += w + ","
    fmt = ["%s-%d-%x-%.3f" % (w, len(w), hash(w) & 0xffff, len(w) / 3) for w in words[:2000]]
    return [len(text), len(up), hashlib.sha256(joined.encode()).hexdigest(), len(s),
            hashlib.sha256("".join(fmt).encode()).hexdigest()]


def phase_bytes(rng, n):
    ba = bytearray()
    for i in range(n):
        ba += bytes([i & 0xff]) * (i % 300)
        if i % 4000 == 3999:
            del ba[: len(ba) // 3]
    blobs = [rng.randbytes(rng.randint(1, 70000)) for _ in range(max(4, n // 100))]
    comp = [zlib.compress(b + b[: len(b) // 2], 6) for b in blobs]
    back = [zlib.decompress(c) for c in comp]
    assert all(x[: len(b)] == b for x, b in zip(back, blobs))
    mv = memoryview(ba)
    chunks = [bytes(mv[i:i + 4096]) for i in range(0, len(ba), 4096)]
    return [len(ba), hashlib.sha256(ba).hexdigest(), sum(map(len, comp)),
            hashlib.sha256(b"".join(chunks[::2])).hexdigest()]


def make_tree(rng, depth, width):
    if depth == 0:
        r = rng.random()
        if r < 0.3:
            return rng.randint(-10**12, 10**12)
        if r < 0.6:
            return "s" * rng.randint(0, 40) + str(rng.random())
        if r < 0.8:
            return rng.random() * 1e6
        return [None, True, False][rng.randrange(3)]
    if rng.random() < 0.5:
        return {"key%d_%d" % (depth, i): make_tree(rng, depth - 1, width) for i in range(rng.randint(1, width))}
    return [make_tree(rng, depth - 1, width) for _ in range(rng.randint(1, width))]


def phase_json(rng, depth, width):
    tree = make_tree(rng, depth, width)
    s1 = json.dumps(tree, sort_keys=True)
    back = json.loads(s1)
    s2 = json.dumps(back, sort_keys=True, indent=1)
    back2 = json.loads(s2)
    assert back2 == back
    return [len(s1), len(s2), hashlib.sha256(s1.encode()).hexdigest()]


class Node:
    __slots__ = ("val", "peer", "kids", "__weakref__")

    def __init__(self, val):
        self.val = val
        self.peer = None
        self.kids = []


def phase_gc(rng, n):
    roots = []
    for i in range(n // 10):
        a, b = Node(i), Node(-i)
        a.peer, b.peer = b, a              # reference cycle
        a.kids = [Node(j) for j in range(i % 8)]
        for k in a.kids:
            k.peer = a                     # more cycles
        if i % 3 == 0:
            roots.append(a)
    cyc = [[] for _ in range(n // 10)]
    for i, l in enumerate(cyc):
        l.append(cyc[(i * 7 + 1) % len(cyc)])
    del cyc
    collected = gc.collect()
    total = sum(len(r.kids) for r in roots)
    del roots
    collected += gc.collect()
    return [total, collected > 0]


def work(seed, scale):
    rng = random.Random(seed)
    n = max(1000, int(60000 * scale))
    out = []
    out.append(("dicts", h(phase_dicts(rng, n))))
    out.append(("lists", h(phase_lists(rng, n))))
    out.append(("strings", h(phase_strings(rng, n))))
    out.append(("bytes", h(phase_bytes(rng, n))))
    out.append(("json", h(phase_json(rng, 6 if scale >= 0.5 else 5, 8))))
    out.append(("gc", h(phase_gc(rng, n))))
    return out


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    results = {}
    main_res = work(12345, scale)
    for name, d in main_res:
        print("main %-8s %s" % (name, d))
    results["main"] = main_res

    nthreads = 4
    tres = [None] * nthreads
    errors = []

    def run(idx):
        try:
            tres[idx] = work(1000 + idx, scale / 2)
        except BaseException as e:  # report, do not hang
            errors.append("thread %d: %r" % (idx, e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    for i, r in enumerate(tres):
        print("thread%d %s" % (i, h(r)))
        results["t%d" % i] = r
    gc.collect()
    print("digest", hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest())


if __name__ == "__main__":
    main()

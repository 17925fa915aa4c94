#!/usr/bin/env python3
"""Deterministic input generators for scripts/test-real-programs.sh.

Always run WITHOUT the allocator under test preloaded; the outputs are the
inputs of the real-program workloads and must be byte-identical across runs.

  gen_inputs.py lines NLINES SEED OUT      text for sort/perl/awk/sed
  gen_inputs.py tree  NFILES SEED OUTDIR   git rounds OUTDIR/round{1,2,3,f}
  gen_inputs.py csrc  NFUNCS SEED OUT      a C program for gcc
"""
import os
import random
import sys

SYLLABLES = ("ka ri to mo na shi ve lo qua zen ex tri pol dar um ist ob ful "
             "gre ath ne wy or bu ci pe sa ju xo").split()


def vocabulary(rng, n):
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def gen_lines(nlines, seed, out):
    rng = random.Random(seed)
    vocab = vocabulary(rng, 20000)
    # Zipf-ish word choice so that the perl/awk frequency tables are skewed.
    cum, acc = [], 0.0
    for i in range(len(vocab)):
        acc += 1.0 / (i + 1) ** 0.8
        cum.append(acc)
    buf = []
    with open(out, "w", encoding="ascii", newline="\n") as f:
        for i in range(nlines):
            ws = rng.choices(vocab, cum_weights=cum, k=rng.randint(2, 5))
            buf.append("%s %d %.6f %s %s\n" % (
                ws[0], rng.randint(-10**9, 10**9), rng.uniform(-1e6, 1e6),
                "%08x" % rng.getrandbits(32), " ".join(ws[1:])))
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


def text_file(rng, vocab, nlines):
    lines = []
    for _ in range(nlines):
        lines.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 14))))
    return "\n".join(lines) + "\n"


def write_tree(root, files):
    for rel, content in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="ascii", newline="\n") as f:
            f.write(content)


def gen_tree(nfiles, seed, outdir):
    rng = random.Random(seed)
    vocab = vocabulary(rng, 3000)
    dirs = ["src/%s" % rng.choice(vocab) for _ in range(max(4, nfiles // 25))]
    dirs = sorted(set(dirs)) + ["doc", "data"]
    files = {}
    while len(files) < nfiles:
        d = rng.choice(dirs)
        name = "%s/%s_%d.txt" % (d, rng.choice(vocab), len(files))
        files[name] = text_file(rng, vocab, rng.randint(10, 160))
    write_tree(os.path.join(outdir, "round1"), files)

    # round2: edit a third of the files (line edits, appends, deletions), add new ones.
    names = sorted(files)
    for name in rng.sample(names, len(names) // 3):
        lines = files[name].splitlines()
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(lines) + 1)
            if op < 0.4 or not lines:
                lines.insert(pos, text_file(rng, vocab, 1).rstrip("\n"))
            elif op < 0.7:
                del lines[min(pos, len(lines) - 1)]
            else:
                lines[min(pos, len(lines) - 1)] += " " + rng.choice(vocab)
        files[name] = "\n".join(lines) + "\n"
    for i in range(nfiles // 10):
        files["src/new/added_%d.txt" % i] = text_file(rng, vocab, rng.randint(5, 80))
    write_tree(os.path.join(outdir, "round2"), files)

    # round3: delete some, rename some (with small edits), one big file.
    names = sorted(files)
    for name in rng.sample(names, len(names) // 12):
        del files[name]
    names = sorted(files)
    for name in rng.sample(names, len(names) // 10):
        content = files.pop(name)
        if rng.random() < 0.5:
            content += rng.choice(vocab) + "\n"
        files["moved/" + os.path.basename(name)] = content
    files["data/big.txt"] = text_file(rng, vocab, 4000)
    write_tree(os.path.join(outdir, "round3"), files)

    # feature branch: files only under feature/, merged into main later.
    feat = {"feature/f_%d.txt" % i: text_file(rng, vocab, rng.randint(5, 50))
            for i in range(max(3, nfiles // 20))}
    write_tree(os.path.join(outdir, "roundf"), feat)


def gen_csrc(nfuncs, seed, out):
    rng = random.Random(seed)
    o = ["#include <stdio.h>", "#include <stdint.h>", "#include <string.h>", "",
         "struct S { uint32_t a, b; uint64_t c; int16_t d[8]; };", ""]
    for i in range(nfuncs):
        kind = i % 4
        k1, k2, k3 = rng.randint(3, 97), rng.randint(1, 31), rng.randint(1000, 99999)
        o.append("__attribute__((noinline)) static uint64_t f%d(uint64_t x) {" % i)
        if kind == 0:
            o += ["    uint64_t acc = %du;" % k3,
                  "    for (int i = 0; i < %d; i++) {" % (k1 + 10),
                  "        acc = acc * 6364136223846793005ull + (x ^ (uint64_t)i);",
                  "        acc ^= acc >> %d;" % k2,
                  "        if (acc & 1) acc += %du; else acc -= x >> 3;" % k1,
                  "    }",
                  "    return acc;"]
        elif kind == 1:
            o.append("    switch ((x >> %d) %% 8) {" % (k2 % 16))
            for c in range(8):
                o.append("    case %d: x = x * %du + %du; break;" % (
                    c, rng.randint(3, 999), rng.randint(1, 10**6)))
            o += ["    default: break;", "    }",
                  "    return x ^ (x << %d);" % (k2 % 13 + 1)]
        elif kind == 2:
            o += ["    struct S s; memset(&s, 0, sizeof s);",
                  "    s.a = (uint32_t)x; s.b = (uint32_t)(x >> 32); s.c = x * %du;" % k3,
                  "    for (int i = 0; i < 8; i++) s.d[i] = (int16_t)(s.a * (i + %d) - s.b);" % k1,
                  "    uint64_t r = 0;",
                  "    for (int i = 0; i < 8; i++) r = r * 31 + (uint64_t)(s.d[i] ^ %d);" % k2,
                  "    return r + s.c;"]
        else:
            prev = rng.randrange(max(1, i))
            o += ["    uint64_t v[16];",
                  "    for (int i = 0; i < 16; i++) v[i] = x * (uint64_t)(i + %d);" % k1,
                  "    for (int i = 1; i < 16; i++) v[i] += v[i - 1] >> %d;" % (k2 % 7 + 1),
                  "    uint64_t r = v[15] ^ v[%d];" % (k1 % 16),
                  ("    return r + (x & 1 ? f%d(x >> 1) : 0);" % prev) if i > 0 else "    return r;"]
        o += ["}", ""]
    o += ["int main(void) {", "    uint64_t h = 1469598103934665603ull;"]
    for i in range(nfuncs):
        o.append("    h = (h ^ f%d(h + %du)) * 1099511628211ull;" % (i, i))
        if i % 50 == 49:
            o.append('    printf("%%d %%016llx\\n", %d, (unsigned long long)h);' % i)
    o += ['    printf("final %016llx\\n", (unsigned long long)h);', "    return 0;", "}", ""]
    with open(out, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(o))


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("lines", "tree", "csrc"):
        sys.exit(__doc__)
    what, n, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    {"lines": gen_lines, "tree": gen_tree, "csrc": gen_csrc}[what](n, seed, out)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# scripts/check-fastpath.sh — regression test of hakmem's fast path by instruction count (make test).
#
#   scripts/check-fastpath.sh            measure and compare with scripts/fastpath-golden.txt
#   scripts/check-fastpath.sh --update   measure and rewrite scripts/fastpath-golden.txt
#   scripts/check-fastpath.sh --lib PATH test another build of libhakmem.so
#                                        (default target/release/libhakmem.so, never rebuilt here)
#
# Measures instructions per malloc/free pair of hakmem at 16, 64, 256 and 1024 bytes exactly as
# `make callgrind` does (it runs scripts/callgrind.sh --allocs hakmem): out/release/bench_pair_system
# under valgrind --tool=callgrind with LD_PRELOAD of the library, (Ir(N) - Ir(N0)) / (N - N0) with
# N=1100000, N0=100000, checking that hakmem really served malloc and free.  Instruction counts
# are deterministic (three runs in a row give the same counts to 0.1), so unlike wall time they
# can gate a test.  No peer allocator is needed.
#
# Verdict per size, against the golden value G:
#   measured > G + 2      FAIL (a fast-path regression).  The 2 instructions of tolerance absorb
#                         code-generation noise (another rustc or cc version); any real change
#                         to the fast path moves the count by more.
#   measured < G - 5      passes, but says the golden should be lowered (--update), so that the
#                         gain is kept: a later regression of up to 5 would otherwise go unseen.
# Last line: "PASS check-fastpath" (exit 0) or "FAIL check-fastpath" (exit 1).
#
# valgrind is required: installed with apt-get when missing and running as root; otherwise
# the check fails saying so.  Takes about 5 s (8 valgrind runs of ~0.5 s).
set -uo pipefail
cd "$(dirname "$0")/.."

GOLDEN=scripts/fastpath-golden.txt
SIZES="16 64 256 1024"
N=1100000
N0=100000
TOL_UP=2       # fail above golden + TOL_UP
TOL_DOWN=5     # ask for --update below golden - TOL_DOWN
LIB=target/release/libhakmem.so
UPDATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --update) UPDATE=1; shift ;;
    --lib) LIB=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "check-fastpath.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
fail() { echo "check-fastpath: $*"; echo "FAIL check-fastpath"; exit 1; }

[ -f "$LIB" ] || fail "$LIB missing: build it first (./build.sh)"
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "check-fastpath: valgrind missing; installing Debian package valgrind" >&2
    (apt-get install -y -qq valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind; }) >&2
  fi
  command -v valgrind >/dev/null ||
    fail "valgrind is not installed and cannot be installed here (not root): apt-get install valgrind"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-fastpath.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
T0=$(date +%s%N)
scripts/callgrind.sh --allocs hakmem --hakmem-so "$LIB" --sizes "$SIZES" --n "$N" --n0 "$N0" \
  --csv "$TMP/fastpath.csv" --quiet >"$TMP/table.txt" 2>"$TMP/stderr.txt"
rc=$?
secs=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
declare -A got=()
if [ -f "$TMP/fastpath.csv" ]; then
  while IFS=, read -r _ size alloc _ _ _ _ per status; do
    [ "$alloc" = hakmem ] && [ "$status" = OK ] && got[$size]=$per
  done <"$TMP/fastpath.csv"
fi
for s in $SIZES; do
  if [ -z "${got[$s]:-}" ]; then
    cat "$TMP/table.txt" "$TMP/stderr.txt"
    fail "no instruction count for size $s (scripts/callgrind.sh exit status $rc; its output is above)"
  fi
done

if [ "$UPDATE" = 1 ]; then
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git status --porcelain -- crates 2>/dev/null)" ] && rev="$rev + uncommitted changes in crates/"
  {
    echo "# scripts/fastpath-golden.txt — golden fast-path cost of hakmem, checked by scripts/check-fastpath.sh"
    echo "# (make test).  One line per size: \"size instructions_per_pair\", the instructions per malloc/free"
    echo "# pair of out/release/bench_pair_system under valgrind --tool=callgrind with LD_PRELOAD of"
    echo "# target/release/libhakmem.so: (Ir(N) - Ir(N0)) / (N - N0), N=$N, N0=$N0, the same figure as"
    echo "# the hakmem column of \`make callgrind\` (it includes 13 instructions of benchmark loop per pair)."
    echo "# Tolerance: the check fails when a size measures more than golden + $TOL_UP (room for code-generation"
    echo "# noise from another rustc or cc); more than $TOL_DOWN below golden passes but asks for an update."
    echo "# Regenerate after an intended change:  scripts/check-fastpath.sh --update"
    echo "# Measured $(date -u +%Y-%m-%d) at $rev; $(rustc --version 2>/dev/null || echo 'rustc ?'); $(cc --version 2>/dev/null | head -n 1); $(valgrind --version)."
    for s in $SIZES; do echo "$s ${got[$s]}"; done
  } >"$GOLDEN.tmp" && mv "$GOLDEN.tmp" "$GOLDEN"
  for s in $SIZES; do echo "check-fastpath: size $s: ${got[$s]} instructions/pair (written to $GOLDEN)"; done
  echo "check-fastpath: golden updated in ${secs} s"
  echo "PASS check-fastpath"
  exit 0
fi

[ -f "$GOLDEN" ] || fail "$GOLDEN missing: create it with scripts/check-fastpath.sh --update"
declare -A want=()
while read -r size val _; do
  case "$size" in ''|\#*) continue ;; esac
  want[$size]=$val
done <"$GOLDEN"

bad=0
for s in $SIZES; do
  g=${want[$s]:-}
  if [ -z "$g" ]; then
    echo "check-fastpath: size $s: measured ${got[$s]}, no golden value in $GOLDEN (run scripts/check-fastpath.sh --update)"
    bad=1; continue
  fi
  verdict=$(awk -v m="${got[$s]}" -v g="$g" -v up="$TOL_UP" -v down="$TOL_DOWN" 'BEGIN {
    if (m > g + up) print "FAIL"; else if (m < g - down) print "LOWER"; else print "ok" }')
  case "$verdict" in
    FAIL)  echo "check-fastpath: size $s: FAIL measured ${got[$s]} instructions/pair > golden $g + $TOL_UP (fast-path regression; annotate with scripts/callgrind.sh --annotate $s)"
           bad=1 ;;
    LOWER) echo "check-fastpath: size $s: ok measured ${got[$s]} instructions/pair, more than $TOL_DOWN below golden $g: lower the golden with scripts/check-fastpath.sh --update" ;;
    *)     echo "check-fastpath: size $s: ok measured ${got[$s]} instructions/pair (golden $g, fails above $(awk -v g="$g" -v u="$TOL_UP" 'BEGIN { print g + u }'))" ;;
  esac
done
if [ "$bad" = 1 ]; then
  echo "check-fastpath: ${secs} s"
  echo "FAIL check-fastpath"
  exit 1
fi
echo "check-fastpath: ${secs} s"
echo "PASS check-fastpath"

#!/usr/bin/env bash
# scripts/callgrind.sh — fast-path cost: instructions per malloc/free pair, hakmem vs peers.
#
#   scripts/callgrind.sh [--sizes "16 64 256 1024 4096"] [--n N] [--n0 N0]
#
# For each allocator (hakmem system mi je tc) builds out/release/bench_pair_ALLOC with
# ./build.sh, then for each size runs bench_pair under valgrind --tool=callgrind twice,
# with N0 and N pairs (after bench_pair's fixed warm-up), and reports
#     instructions per pair = (Ir(N) - Ir(N0)) / (N - N0)
# so start-up, warm-up and exit cost cancel.  Instruction counts are repeatable where wall
# time is not; they include ~5 loop instructions per pair, the same for every allocator.
# Writes out/bench/callgrind.csv (scripts/bench_report.py adds it to docs/BENCHMARKS.md).
set -uo pipefail
cd "$(dirname "$0")/.."

SIZES="16 64 256 1024 4096"
N=1100000
N0=100000
ALLOCS="hakmem system mi je tc"
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --n0) N0=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "callgrind.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ "$N" -gt "$N0" ] || { echo "callgrind.sh: --n must be larger than --n0" >&2; exit 2; }
command -v valgrind >/dev/null || {
  echo "callgrind.sh: valgrind missing; installing Debian package valgrind" >&2
  (apt-get install -y -qq valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind; }) >&2
}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not available" >&2; exit 1; }

OUT=out/bench
LOG=$OUT/logs
mkdir -p "$LOG"
CSV=$OUT/callgrind.csv

declare -A built
for a in $ALLOCS; do
  if ./build.sh "bench_pair_$a" >"$LOG/build-bench_pair_$a.log" 2>&1 && [ -x "out/release/bench_pair_$a" ]; then
    built[$a]=1
  else
    built[$a]=0
    echo "callgrind.sh: build of bench_pair_$a failed (see $LOG/build-bench_pair_$a.log); $a reported as missing" >&2
  fi
done

# Ir of one run: prints the "Collected" count, or nothing on failure.
ir() {
  local bin=$1 n=$2 size=$3 err
  err=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$n" "$size" 2>&1 >/dev/null) || return 1
  sed -n 's/^==[0-9]*== Collected : \([0-9]*\).*/\1/p' <<<"$err" | tail -n1
}

echo "date,size,alloc,n0,n,ir_n0,ir_n,ir_per_pair,status" >"$CSV"
declare -A res
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
total=$(( $(wc -w <<<"$SIZES") * $(wc -w <<<"$ALLOCS") )); i=0
for s in $SIZES; do
  for a in $ALLOCS; do
    i=$((i + 1))
    bin=out/release/bench_pair_$a
    if [ "${built[$a]}" != 1 ]; then
      res[$s,$a]=missing
      echo "$date,$s,$a,$N0,$N,,,,MISSING" >>"$CSV"
      printf '[%d/%d] size=%-5s %-7s missing\n' "$i" "$total" "$s" "$a" >&2
      continue
    fi
    i0=$(ir "$bin" "$N0" "$s"); i1=$(ir "$bin" "$N" "$s")
    if [ -z "$i0" ] || [ -z "$i1" ]; then
      res[$s,$a]=FAIL
      echo "$date,$s,$a,$N0,$N,$i0,$i1,,FAIL" >>"$CSV"
      printf '[%d/%d] size=%-5s %-7s FAIL\n' "$i" "$total" "$s" "$a" >&2
      continue
    fi
    per=$(awk -v a="$i0" -v b="$i1" -v n0="$N0" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / (n - n0) }')
    res[$s,$a]=$per
    echo "$date,$s,$a,$N0,$N,$i0,$i1,$per,OK" >>"$CSV"
    printf '[%d/%d] size=%-5s %-7s %s instructions/pair\n' "$i" "$total" "$s" "$a" "$per" >&2
  done
done

echo
echo "Instructions per malloc/free pair (callgrind Ir, (Ir(N=$N) - Ir(N0=$N0)) / $((N - N0)))"
printf '%-8s' size; for a in $ALLOCS; do printf '%10s' "$a"; done; printf '%14s\n' 'hakmem/best'
for s in $SIZES; do
  printf '%-8s' "$s"
  for a in $ALLOCS; do printf '%10s' "${res[$s,$a]}"; done
  # hakmem relative to the cheapest peer (<1 means hakmem executes fewer instructions)
  rel=$(for a in system mi je tc; do echo "${res[$s,$a]}"; done |
        awk -v h="${res[$s,hakmem]}" '$1 ~ /^[0-9.]+$/ { if (b == "" || $1 < b) b = $1 }
             END { if (h ~ /^[0-9.]+$/ && b > 0) printf "%.2f", h / b; else printf "-" }')
  printf '%14s\n' "$rel"
done
echo "(raw: $CSV)"

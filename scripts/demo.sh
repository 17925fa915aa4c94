#!/usr/bin/env bash
# Build hakmem, then show it at work: two benchmarks linked against hakmem and
# against glibc, and a Python workload with and without LD_PRELOAD. Each figure
# is one run on a shared machine; `make bench` does the careful comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building libhakmem and the demo benchmarks"
./build.sh >/dev/null
./build.sh larson_hakmem larson_system bench_random_mixed_hakmem bench_random_mixed_system >/dev/null
so=$PWD/target/release/libhakmem.so
ls -l "$so"

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

run() { # label command...
  local out
  out=$("${@:2}" 2>/dev/null | grep '^RESULT')
  printf '  %-8s %14s ops/s   peak RSS %7s KiB\n' "$1" "$(echo "$out" | field ops_per_sec)" "$(echo "$out" | field maxrss_kb)"
}

echo
echo "== larson (server workload, 2 threads, cross-thread frees): 1 s each"
run hakmem out/release/larson_hakmem 1 8 1000 5000 100 4141 2
run glibc  out/release/larson_system 1 8 1000 5000 100 4141 2

echo
echo "== random mixed (16..1040 B, 8192 live slots), 10M operations"
run hakmem out/release/bench_random_mixed_hakmem 10000000 8192 42
run glibc  out/release/bench_random_mixed_system 10000000 8192 42

echo
echo "== python3 allocation workload, LD_PRELOAD=$so"
printf '  %-8s %s\n' hakmem "$(LD_PRELOAD=$so env PYTHONMALLOC=malloc PYTHONHASHSEED=0 /usr/bin/time -f "%e s, peak RSS %M KiB" python3 scripts/real/alloc_workload.py 0.5 2>&1 >/dev/null | tail -1)"
printf '  %-8s %s\n' glibc "$(env PYTHONMALLOC=malloc PYTHONHASHSEED=0 /usr/bin/time -f "%e s, peak RSS %M KiB" python3 scripts/real/alloc_workload.py 0.5 2>&1 >/dev/null | tail -1)"
echo
echo "Full comparison with mimalloc, jemalloc and tcmalloc: make bench (writes docs/BENCHMARKS.md)"

#!/usr/bin/env bash
# Build hakmem, then show it at work: two benchmarks and a Python workload,
# each run as is (glibc) and under the launcher (`hakmem run --`, which
# preloads libhakmem.so), the same binary both ways. Each figure is one run
# on a shared machine; `make bench` does the careful comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building libhakmem and the demo benchmarks"
./build.sh >/dev/null
./build.sh larson_system bench_random_mixed_system >/dev/null
hakmem=$PWD/target/release/hakmem
py=/usr/bin/python3; [ -x "$py" ] || py=$(command -v python3)
ls -l target/release/libhakmem.so "$hakmem"

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

run() { # label command...
  local out
  out=$("${@:2}" 2>/dev/null | grep '^RESULT')
  printf '  %-8s %14s ops/s   peak RSS %7s KiB\n' "$1" "$(echo "$out" | field ops_per_sec)" "$(echo "$out" | field maxrss_kb)"
}

echo
echo "== larson (server workload, 2 threads, cross-thread frees): 1 s each"
run hakmem "$hakmem" run -- out/release/larson_system 1 8 1000 5000 100 4141 2
run glibc  out/release/larson_system 1 8 1000 5000 100 4141 2

echo
echo "== random mixed (16..1040 B, 8192 live slots), 10M operations"
run hakmem "$hakmem" run -- out/release/bench_random_mixed_system 10000000 8192 42
run glibc  out/release/bench_random_mixed_system 10000000 8192 42

echo
echo "== python3 allocation workload"
printf '  %-8s %s\n' hakmem "$(/usr/bin/time -f "%e s, peak RSS %M KiB" "$hakmem" run -- env PYTHONMALLOC=malloc PYTHONHASHSEED=0 "$py" scripts/real/alloc_workload.py 0.5 2>&1 >/dev/null | tail -1)"
printf '  %-8s %s\n' glibc "$(env PYTHONMALLOC=malloc PYTHONHASHSEED=0 /usr/bin/time -f "%e s, peak RSS %M KiB" "$py" scripts/real/alloc_workload.py 0.5 2>&1 >/dev/null | tail -1)"
echo
echo "== hakmem check: did hakmem serve the program?"
"$hakmem" check -- "$py" -c 'print(sum(len(str(i)) for i in range(100000)))' 2>&1 | sed 's/^/  /'
echo
echo "Full comparison with glibc, mimalloc 2 and 3, jemalloc, tcmalloc and snmalloc: make bench (writes docs/BENCHMARKS.md)"

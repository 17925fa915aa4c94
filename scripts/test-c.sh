#!/usr/bin/env bash
# scripts/test-c.sh — build and run the C test programs (tests/test_*.c).
#
#   scripts/test-c.sh            full flag matrix
#   scripts/test-c.sh --quick    default flags only
#   scripts/test-c.sh --no-build skip ./build.sh (use the binaries already in out/release)
#
# Each test runs
#   - once on plain glibc:       out/release/test_X_system            (proves the test is sound)
#   - linked with hakmem:        out/release/test_X_hakmem hakmem
#   - preloaded:                 LD_PRELOAD=$HAKMEM_SO out/release/test_X_system hakmem
# the last two under every flag set of the matrix.  The "hakmem" argument turns
# on the hakmem-specific checks (diagnostics, flags).
#
# Environment: HAKMEM_SO   library to preload (default target/release/libhakmem.so)
#              Other HAKMEM_* variables of the caller are cleared so the runs are reproducible.
# Output: one line per run, then "N passed, M failed"; exit status 1 if M > 0.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
build=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "test-c.sh: unknown argument '$arg' (--quick, --no-build)" >&2; exit 2 ;;
  esac
done

SO=${HAKMEM_SO:-$PWD/target/release/libhakmem.so}
case "$SO" in /*) ;; *) SO=$PWD/$SO ;; esac
export HAKMEM_SO=$SO   # test_dlopen loads it with dlopen()
OUT=out/release
TIMEOUT=${TEST_TIMEOUT:-120}

# reproducible environment: no inherited allocator flags
for v in $(compgen -e); do
  case "$v" in HAKMEM_SO) ;; HAKMEM_*) unset "$v" ;; esac
done

if [ "$build" = 1 ]; then
  ./build.sh >/dev/null || { echo "test-c.sh: ./build.sh (library) failed" >&2; exit 2; }
  ./build.sh tests >/dev/null || { echo "test-c.sh: ./build.sh tests failed" >&2; exit 2; }
fi
[ -e "$SO" ] || { echo "test-c.sh: $SO not found (set HAKMEM_SO)" >&2; exit 2; }

tests=()
for f in tests/test_*.c; do tests+=("$(basename "$f" .c)"); done

# flag matrix: one entry per line; "" is the default configuration
matrix=("")
if [ "$quick" = 0 ]; then
  matrix+=(
    "HAKMEM_TCACHE_TINY=0 HAKMEM_TCACHE_MID=0"
    "HAKMEM_TCACHE_TINY=1 HAKMEM_TCACHE_MID=1"
    "HAKMEM_LARGE_CACHE_MB=0"
    "HAKMEM_PURGE_KB=0"
    "HAKMEM_PURGE_DELAY_MS=0"
    "HAKMEM_CHECK=1"
    "HAKMEM_STATS=1 HAKMEM_VERBOSE=1"
  )
fi
# tests the STATS/VERBOSE entry applies to (others compare stderr line by line)
stats_tests=" test_api test_threads test_stats test_introspect "

passed=0
failed=0
failures=()
logdir=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-test-c.XXXXXX")
trap 'rm -rf "$logdir"' EXIT

# run LABEL FLAGS CMD... : runs CMD with FLAGS (space-separated VAR=VALUE) added
# to the environment, under a timeout; prints one line.
run() {
  local label=$1 flags=$2; shift 2
  local log=$logdir/run.log start end rc secs
  start=$(date +%s.%N)
  # shellcheck disable=SC2086  # $flags is a list of VAR=VALUE words
  env $flags timeout -k 5 "$TIMEOUT" "$@" >"$log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  local desc="$label${flags:+ [$flags]}"
  if [ $rc -eq 0 ] && grep -q '^PASS ' "$log"; then
    passed=$((passed + 1))
    printf 'PASS  %-52s %6ss\n' "$desc" "$secs"
  else
    failed=$((failed + 1))
    local why="exit $rc"
    [ $rc -eq 124 ] && why="timeout after ${TIMEOUT}s"
    [ $rc -gt 128 ] && [ $rc -ne 124 ] && why="killed by signal $((rc - 128))"
    printf 'FAIL  %-52s %6ss  (%s)\n' "$desc" "$secs" "$why"
    failures+=("$desc")
    # the command and the tail of its output, indented
    printf '      $ %s%s\n' "${flags:+$flags }" "$*"
    grep -v '^PASS ' "$log" | tail -n 25 | sed 's/^/      | /'
  fi
}

for t in "${tests[@]}"; do
  run "$t system (glibc)" "" "$OUT/${t}_system"
  for flags in "${matrix[@]}"; do
    case "$flags" in
      *HAKMEM_STATS=1*) case "$stats_tests" in *" $t "*) ;; *) continue ;; esac ;;
    esac
    run "$t hakmem (linked)" "$flags" "$OUT/${t}_hakmem" hakmem
    run "$t hakmem (LD_PRELOAD)" "$flags" env LD_PRELOAD="$SO" "$OUT/${t}_system" hakmem
  done
done

if [ ${#failures[@]} -gt 0 ]; then
  echo "failed runs:"
  for f in "${failures[@]}"; do echo "  $f"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

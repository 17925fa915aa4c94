#!/usr/bin/env bash
# scripts/soak.sh — soak test: with a bounded live set, hakmem's RSS must not keep rising.
#
#   scripts/soak.sh              build tests/soak.c into out/release/soak_system and run it for
#                                SOAK_SECONDS under LD_PRELOAD=$HAKMEM_SO
#   scripts/soak.sh --compare    afterwards run it as long on glibc (no preload) and print the
#                                RSS figures of both runs side by side
#   scripts/soak.sh --no-build   use the out/release/soak_system already built
#
# What the program does and how it judges: the comment at the top of tests/soak.c (worker
# threads with bounded live sets, cross-thread frees, thread churn, forks, malloc_trim; fails
# when the median RSS of the last third of the run exceeds 1.25 x that of the middle third
# + 16 MiB, above the RSS cap, on corrupted memory, a failed fork child, or a hang).
#
# Environment: SOAK_SECONDS   run time of each run in seconds (default 600)
#              HAKMEM_SO      library to preload (default target/release/libhakmem.so, built
#                             with ./build.sh when missing)
#              SOAK_EVERY     print every Nth per-second sample (default 10; the full output
#                             goes to out/release/soak_hakmem.log, soak_glibc.log)
#              SOAK_THREADS, SOAK_RSS_CAP_MB, SOAK_SEED, SOAK_WATCHDOG_S, SOAK_TRIM_S: read by
#                             the program (defaults 4, 2048, 1, 30, 30)
#              HAKMEM_* flags are passed through (e.g. HAKMEM_PURGE_DELAY_MS=0 scripts/soak.sh).
# Output: progress lines "t=<s> rss_kb=<n> live_kb=<n> ...", the program's summary and its
# verdict "PASS soak" / "FAIL soak: <why>".  Exit status: that of the hakmem run (0 passed,
# 1 failed, 134 watchdog abort, 124 killed by the outer timeout); 2 on a usage/setup error.
set -uo pipefail
cd "$(dirname "$0")/.."

compare=0
build=1
for arg in "$@"; do
  case "$arg" in
    --compare) compare=1 ;;
    --no-build) build=0 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument '$arg' (--compare, --no-build)" >&2; exit 2 ;;
  esac
done

SECS=${SOAK_SECONDS:-600}
EVERY=${SOAK_EVERY:-10}
case "$SECS" in ''|*[!0-9]*) echo "soak.sh: SOAK_SECONDS='$SECS' is not a number of seconds" >&2; exit 2 ;; esac
case "$EVERY" in ''|*[!0-9]*|0) echo "soak.sh: SOAK_EVERY='$EVERY' is not a positive number" >&2; exit 2 ;; esac
[ "$SECS" -ge 1 ] || { echo "soak.sh: SOAK_SECONDS must be at least 1" >&2; exit 2; }

CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g -pthread -Wall -Wextra -Wno-unused-parameter}
OUT=out/release
BIN=$OUT/soak_system
mkdir -p "$OUT"

if [ -n "${HAKMEM_SO:-}" ]; then
  SO=$HAKMEM_SO
  case "$SO" in /*) ;; *) SO=$PWD/$SO ;; esac
  [ -e "$SO" ] || { echo "soak.sh: HAKMEM_SO=$SO not found" >&2; exit 2; }
else
  SO=$PWD/target/release/libhakmem.so
  if [ ! -e "$SO" ]; then
    echo "soak.sh: $SO missing; running ./build.sh" >&2
    ./build.sh >&2 || { echo "soak.sh: ./build.sh failed" >&2; exit 2; }
    [ -e "$SO" ] || { echo "soak.sh: ./build.sh did not produce $SO" >&2; exit 2; }
  fi
fi

if [ "$build" = 1 ]; then
  # shellcheck disable=SC2086  # $CFLAGS is a list of flags
  $CC $CFLAGS tests/soak.c -o "$BIN" || { echo "soak.sh: building $BIN failed" >&2; exit 2; }
fi
[ -x "$BIN" ] || { echo "soak.sh: $BIN not found (run without --no-build)" >&2; exit 2; }

# the program has its own watchdog (30 s without progress) and alarm (duration + 120 s);
# this outer limit only catches what those cannot
TIMEOUT=$((SECS + 300))

# run LABEL [VAR=VALUE...]: runs the soak with the environment additions, full output to
# $OUT/soak_LABEL.log, every $EVERY-th sample line and every other line on the terminal.
# Sets rc_LABEL.
run() {
  local label=$1; shift
  local log=$OUT/soak_$label.log rc
  local flags=""
  [ "$label" = hakmem ] && flags=$(env | grep '^HAKMEM_' | grep -v '^HAKMEM_SO=' | tr '\n' ' ')
  flags=${flags% }
  echo "== soak on $label: ${SECS} s${*:+ ($*)}${flags:+ [$flags]}, log $log"
  timeout -k 10 "$TIMEOUT" env "$@" "$BIN" "$SECS" 2>&1 | tee "$log" |
    awk -v every="$EVERY" '/^t=[0-9]+ / { split($1, a, "="); if (a[2] % every) next }
                           { print; fflush() }'
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "FAIL soak: killed by the outer timeout after ${TIMEOUT} s" | tee -a "$log"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL soak' "$log"; then
    echo "FAIL soak: exit status $rc without a verdict" | tee -a "$log"
  fi
  printf -v "rc_$label" '%d' "$rc"
}

# field LOG KEY: the value of KEY=... on the program's summary line, or "-"
field() {
  local v
  v=$(grep '^summary ' "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1)
  echo "${v:--}"
}
verdict() {
  if grep -q '^PASS soak' "$1"; then echo PASS
  elif grep -q '^FAIL soak' "$1"; then echo FAIL
  else echo "?"; fi
}

run hakmem LD_PRELOAD="$SO"
status=$rc_hakmem

if [ "$compare" = 1 ]; then
  run glibc
  h=$OUT/soak_hakmem.log g=$OUT/soak_glibc.log
  echo
  printf '%-34s %14s %14s\n' "after ${SECS} s" hakmem glibc
  row() { printf '%-34s %14s %14s\n' "$1" "$(field "$h" "$2")" "$(field "$g" "$2")"; }
  printf '%-34s %14s %14s\n' "verdict" "$(verdict "$h")" "$(verdict "$g")"
  row "final RSS (kB)" rss_final_kb
  row "median RSS, middle third (kB)" rss_mid_median_kb
  row "median RSS, last third (kB)" rss_last_median_kb
  row "limit for the last third (kB)" rss_limit_kb
  row "max RSS (kB)" rss_max_kb
  row "RSS slope, last 2/3 (kB/min)" rss_slope_kb_per_min
  row "RSS after freeing all (kB)" rss_freed_kb
  row "RSS after malloc_trim (kB)" rss_trimmed_kb
  row "median live data, last third (kB)" live_last_median_kb
  row "allocator calls" ops
  row "threads started" threads
  row "forks" forks
  if [ "$rc_glibc" -ne 0 ]; then
    echo "soak.sh: warning: the glibc run failed too (exit $rc_glibc): is the test sound?" >&2
  fi
fi
exit "$status"

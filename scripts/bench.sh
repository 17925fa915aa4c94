#!/usr/bin/env bash
# scripts/bench.sh — hakmem against seven peer allocators, side by side, same mechanism for all.
#
#   scripts/bench.sh [--quick|--full] [--runs N] [--only REGEX] [--allocs LIST]
#                    [--no-build] [--no-report]
#
#   --quick        (default) 5 interleaved rounds: about 35 min on this 2-core machine
#   --full         11 rounds
#   --runs N       rounds (runs per allocator and configuration), overriding the mode's count
#   --only RE      only configurations whose id matches the extended regex RE (ids: --list)
#   --allocs LIST  only these allocators (comma- or space-separated ids, see below)
#   --list         print the configurations and allocators, then exit
#   --no-build     use what is already built (out/release, target/release, target/peers)
#   --no-report    do not call scripts/bench_report.py at the end
#   --report-dir D where the report goes (default: docs/ for a run of the whole suite, that is
#                  without --only and --allocs; out/bench/report/ for a partial run)
#
# Allocators (id: what is loaded):
#   hakmem         LD_PRELOAD=target/release/libhakmem.so          (the hakmem figure)
#   hakmem-linked  out/release/PROG_hakmem: libhakmem.a linked in   (C benchmarks only; shown,
#                  never a peer and never the hakmem figure of a ratio)
#   system         glibc, nothing preloaded
#   mi2deb         LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 (Debian libmimalloc2.0)
#   mi3, mi2, sn   LD_PRELOAD=target/peers/lib{mimalloc3,mimalloc2,snmalloc}.so, built by
#                  scripts/peers.sh (called here; it caches) from crate-registry sources
#   je             LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (Debian libjemalloc2)
#   tc             LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 (libtcmalloc-minimal4)
# Missing Debian peers and tools (redis, a JDK, xz, GNU time) are installed with apt-get when
# running as root, and said so; a peer that still cannot be had is reported as missing and
# its runs as FAIL, never dropped.
#
# Same mechanism for everyone: every C benchmark is built once against glibc
# (./build.sh PROG_system -> out/release/PROG_system) and run under LD_PRELOAD of each
# allocator; real programs (python, gcc, sort, javac, redis-server, xz) likewise.  Each
# configuration is run once per allocator per round, allocators in an order rotated from round
# to round, so drift on a shared machine hits all alike.
#
# Served check: once per session, before the timed runs, each real program (and one C
# benchmark) runs under each allocator with LD_DEBUG=bindings; scripts/real/served.py checks
# that every binding of malloc/calloc/realloc/free (main executable, libjvm.so, all libraries,
# all child processes) resolves to the preloaded library (glibc's libc.so.6 for `system`).
# An allocator that does not serve a program gets that program's runs recorded as FAIL.
#
# Real programs, each output checked against a reference made without preload:
#   python  PYTHONMALLOC=malloc python3 -S pyalloc.py       stdout
#   gcc     gcc -O2 -c gen.c (~1,900 lines)                  object file, byte for byte
#   sort    LC_ALL=C sort -k3,3n -k1,1 of 30 MB              sorted file
#   javac   javac -d DIR @sources.txt (300 generated classes) class files: names and bytes
#   redis   redis-server (preloaded) + redis-benchmark -q -n 250000 -P 16 -t set,get,lpush,lpop
#           (not preloaded); metric: wall time of the redis-benchmark run (scripts/real/redis_bench.sh)
#   xz      xz -T2 -6 --block-size=12MiB -c of 24 MiB of log-like text   decompresses to the input
# Metric of a real program: wall seconds (to the ms) and peak RSS (/usr/bin/time -f '%M').
#
# A run that exits non-zero, times out, prints no RESULT line or a wrong output is recorded as
# FAIL, never dropped.  Results: out/bench/raw.csv (one row per run), out/bench/served.csv,
# out/bench/meta.txt; logs of failed runs in out/bench/logs/.  At the end
# scripts/bench_report.py writes BENCHMARKS.md, benchmarks.csv, benchmarks.svg (see --report-dir).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
INVOCATION="scripts/bench.sh${*:+ $*}"

ALL_ALLOCS=(hakmem hakmem-linked system mi2deb mi3 mi2 sn je tc)
LIBDIR=/usr/lib/x86_64-linux-gnu
declare -A SO=(
  [hakmem]=$ROOT/target/release/libhakmem.so
  [hakmem-linked]=""
  [system]=""
  [mi2deb]=$LIBDIR/libmimalloc.so.2
  [mi3]=$ROOT/target/peers/libmimalloc3.so
  [mi2]=$ROOT/target/peers/libmimalloc2.so
  [sn]=$ROOT/target/peers/libsnmalloc.so
  [je]=$LIBDIR/libjemalloc.so.2
  [tc]=$LIBDIR/libtcmalloc_minimal.so.4
)
# glibc's own libc.so.6: preloaded for `system` only where the program is linked to another
# allocator (Debian's redis-server is linked to libjemalloc.so.2, which would serve it otherwise)
LIBC_SO=$(ldd /bin/true 2>/dev/null | awk '$1 ~ /^libc\.so/ { print $3 }')
LIBC_SO=${LIBC_SO:-$LIBDIR/libc.so.6}
preload_of() {  # id alloc -> the library to preload ("" = none)
  if [ "$2" = system ] && [ "$1" = redis ]; then echo "$LIBC_SO"; else echo "${SO[$2]}"; fi
}
declare -A DEBPKG=([system]=libc6 [mi2deb]=libmimalloc2.0 [je]=libjemalloc2 [tc]=libtcmalloc-minimal4)
declare -A PEERNAME=([mi3]=mimalloc3 [mi2]=mimalloc2 [sn]=snmalloc)   # scripts/peers.sh's names

# ---------------------------------------------------------------------------------------
# Configurations: id | kind (c = C benchmark, real = real program) | program | threads | args
# C benchmarks: arguments sized so one run takes about 0.5-1.5 s on this 2-core machine
# (calibrated under glibc; the work arguments count per thread).
CONFIGS=(
  "larson-t1|c|larson|1|0.7 8 128 1024 1 12345 1"
  "larson-t2|c|larson|2|0.7 8 128 1024 1 12345 2"
  "larson-t4|c|larson|4|0.7 8 128 1024 1 12345 4"
  "larson-t8|c|larson|8|0.7 8 128 1024 1 12345 8"
  "random_mixed|c|bench_random_mixed|1|20000000 8192 42"
  "fixed_size-16|c|bench_fixed_size|1|50000000 16 1024"
  "fixed_size-256|c|bench_fixed_size|1|50000000 256 1024"
  "xthread-t2|c|bench_xthread|2|8000000 16 512 2"
  "xthread-t4|c|bench_xthread|4|3000000 16 512 4"
  "mid-t1|c|bench_mid|1|700000 256 42 1"
  "mid-t2|c|bench_mid|2|700000 256 42 2"
  "large|c|bench_large|1|8 42"
  "thread_churn|c|bench_thread_churn|2|5000 2 2000"
  # threads blocks_per_producer batch size_mode(0 = 64 B, 1 = random 8..1024 B) seed
  "xmalloc-fixed-t2|c|bench_xmalloc|2|2 15000000 256 0 1"
  "xmalloc-fixed-t4|c|bench_xmalloc|4|4 12000000 256 0 1"
  "xmalloc-random-t2|c|bench_xmalloc|2|2 15000000 256 1 1"
  "xmalloc-random-t4|c|bench_xmalloc|4|4 12000000 256 1 1"
  # threads iterations object_size writes
  "cache_scratch-t1|c|bench_cache_scratch|1|1 200000 8 2000"
  "cache_scratch-t2|c|bench_cache_scratch|2|2 80000 8 2000"
  "cache_scratch-t4|c|bench_cache_scratch|4|4 40000 8 2000"
  "cache_thrash-t1|c|bench_cache_thrash|1|1 200000 8 2000"
  "cache_thrash-t2|c|bench_cache_thrash|2|2 150000 8 2000"
  "cache_thrash-t4|c|bench_cache_thrash|4|4 75000 8 2000"
  # threads scale rounds seed
  "mstress-t1|c|bench_mstress|1|1 500000 30 1"
  "mstress-t2|c|bench_mstress|2|2 150000 30 1"
  "mstress-t4|c|bench_mstress|4|4 75000 30 1"
  # threads ops_per_thread max_live cross_pct seed
  "rptest-t1|c|bench_rptest|1|1 6000000 4096 10 1"
  "rptest-t2|c|bench_rptest|2|2 3000000 4096 10 1"
  "rptest-t4|c|bench_rptest|4|4 1500000 4096 10 1"
  # threads iterations batch: t1 = glibc-simple, t2 = glibc-thread
  "glibc_loop-t1|c|bench_glibc_loop|1|1 300000 100"
  "glibc_loop-t2|c|bench_glibc_loop|2|2 300000 100"
  "glibc_loop-t8|c|bench_glibc_loop|8|8 75000 100"
  # iterations slots seed
  "malloc_large|c|bench_malloc_large|1|60000 20 1"
  # live steps seed.  4 M live blocks (~390 MB): 16 M would take 7-12 s a run here, as its
  # untimed fill and final free still run
  "big_heap|c|bench_big_heap|1|4194304 1500000 1"
  # rounds workers blocks seed
  "handoff-t2|c|bench_handoff|2|3000 2 1000 1"
  "python|real|python|1|"
  "gcc|real|gcc|1|"
  "sort|real|sort|2|"
  "javac|real|javac|2|"
  "redis|real|redis|1|"
  "xz|real|xz|2|"
)
# Real-program sizes (kept here so the commands in the report are the ones run).
JAVA_CLASSES=300
REDIS_REQUESTS=250000
XZ_MIB=24            # input size; xz -6 compresses ~2 MB/s per thread here, so 2 blocks of
XZ_BLOCK=12MiB       # 12 MiB keep both threads busy for ~6 s (48 MiB in 24 MiB blocks: ~13 s)
SORT_MB=30

usage() { sed -n '2,57p' "$0"; }

MODE=quick RUNS="" ONLY="" ALLOC_ARG="" BUILD=1 REPORT=1 LIST=0 REPORT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick; shift ;;
    --full) MODE=full; shift ;;
    --runs) RUNS=${2:-}; shift 2 || { echo "bench.sh: --runs needs a number" >&2; exit 2; } ;;
    --runs=*) RUNS=${1#--runs=}; shift ;;
    --only) ONLY=${2:-}; shift 2 || { echo "bench.sh: --only needs a regex" >&2; exit 2; } ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --allocs) ALLOC_ARG=${2:-}; shift 2 || { echo "bench.sh: --allocs needs a list" >&2; exit 2; } ;;
    --allocs=*) ALLOC_ARG=${1#--allocs=}; shift ;;
    --list) LIST=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-report) REPORT=0; shift ;;
    --report-dir) REPORT_DIR=${2:-}; shift 2 || { echo "bench.sh: --report-dir needs a directory" >&2; exit 2; } ;;
    --report-dir=*) REPORT_DIR=${1#--report-dir=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$RUNS" ]; then
  if [ "$MODE" = quick ]; then RUNS=5; else RUNS=11; fi
fi
case "$RUNS" in ''|*[!0-9]*|0) echo "bench.sh: --runs must be a positive integer" >&2; exit 2 ;; esac
if [ "$MODE" = quick ]; then TIMEOUT=90; else TIMEOUT=300; fi

if [ "$LIST" = 1 ]; then
  echo "allocators: ${ALL_ALLOCS[*]}"
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    printf '%-20s %-4s %-20s t=%-2s %s\n' "$id" "$kind" "$prog" "$threads" "$args"
  done
  exit 0
fi

ALLOCS=()
if [ -n "$ALLOC_ARG" ]; then
  for a in ${ALLOC_ARG//,/ }; do
    [ -n "${SO[$a]+x}" ] || { echo "bench.sh: unknown allocator '$a' (${ALL_ALLOCS[*]})" >&2; exit 2; }
  done
  for a in "${ALL_ALLOCS[@]}"; do   # keep the canonical order
    case " ${ALLOC_ARG//,/ } " in *" $a "*) ALLOCS+=("$a") ;; esac
  done
else
  ALLOCS=("${ALL_ALLOCS[@]}")
fi
has_alloc() { case " ${ALLOCS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

OUT=out/bench
WORK=$OUT/work
LOGS=$OUT/logs
RAW=$OUT/raw.csv
META=$OUT/meta.txt
SERVED=$OUT/served.csv
mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS"/fail-* "$LOGS"/build-* "$LOGS"/served-*

SEL=()
for c in "${CONFIGS[@]}"; do
  id=${c%%|*}
  if [ -z "$ONLY" ] || grep -Eq -- "$ONLY" <<<"$id"; then SEL+=("$c"); fi
done
[ ${#SEL[@]} -gt 0 ] || { echo "bench.sh: --only '$ONLY' matches no configuration (see --list)" >&2; exit 2; }
sel_has() { local c; for c in "${SEL[@]}"; do [ "${c%%|*}" = "$1" ] && return 0; done; return 1; }

t_start=$(date +%s)
# The revision the library is built from, taken before the build (the tree may change while
# a long session runs; the library does not).
HAKMEM_REV="$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (uncommitted changes)')"
echo "bench.sh: mode=$MODE rounds=$RUNS configurations=${#SEL[@]} allocators=${ALLOCS[*]}"

# ---------------------------------------------------------------------------------------
# Debian packages: peers and the tools of the real programs.
apt_install() {  # pkg... -> 0 when installed
  echo "bench.sh: installing Debian package(s): $*" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "bench.sh: not root; install $* by hand" >&2; return 1
  fi
  (apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }) >&2
}
[ -x /usr/bin/time ] || apt_install time
command -v python3 >/dev/null || apt_install python3
command -v cc >/dev/null || apt_install gcc
declare -A TOOL_NOTE   # real-program id -> why it cannot run
need_tool() {  # id package command...
  local id=$1 pkg=$2 c miss=(); shift 2
  for c in "$@"; do command -v "$c" >/dev/null || miss+=("$c"); done
  [ ${#miss[@]} = 0 ] && return 0
  apt_install $pkg
  for c in "$@"; do command -v "$c" >/dev/null || { TOOL_NOTE[$id]="$c not installed (Debian $pkg)"; return 1; }; done
}
sel_has gcc && need_tool gcc gcc gcc
sel_has sort && need_tool sort coreutils sort
sel_has javac && need_tool javac default-jdk-headless javac
sel_has redis && need_tool redis "redis-server redis-tools" redis-server redis-benchmark redis-cli
sel_has xz && need_tool xz xz-utils xz

# ---------------------------------------------------------------------------------------
# Build.
declare -A MISSING     # alloc -> why it cannot run
declare -A SKIPPED     # config id -> why it is not run at all
declare -A PEERLINE    # alloc -> scripts/peers.sh's line about it
if has_alloc hakmem || has_alloc hakmem-linked; then
  if [ "$BUILD" = 1 ]; then
    echo "== build: hakmem library (./build.sh)"
    if ./build.sh >"$LOGS/build-lib.log" 2>&1; then
      echo "   ok: $(ls target/release/libhakmem.so target/release/libhakmem.a 2>/dev/null | tr '\n' ' ')"
    else
      echo "   FAILED: hakmem library did not build (see $LOGS/build-lib.log)" >&2
      tail -n 5 "$LOGS/build-lib.log" | sed 's/^/   | /' >&2
      MISSING[hakmem]="library build failed"; MISSING[hakmem-linked]="library build failed"
    fi
  fi
  [ -e "${SO[hakmem]}" ] || MISSING[hakmem]=${MISSING[hakmem]:-"target/release/libhakmem.so missing"}
fi
if has_alloc mi3 || has_alloc mi2 || has_alloc sn; then
  if [ "$BUILD" = 1 ]; then
    echo "== peers: scripts/peers.sh (mimalloc 3, mimalloc 2, snmalloc; cached in target/peers)"
    scripts/peers.sh >"$LOGS/peers.log" 2>"$LOGS/peers.err"
    sed 's/^/   /' "$LOGS/peers.log"
    grep -E 'SKIPPED|failed|cannot' "$LOGS/peers.err" | sed 's/^/   /' >&2
  fi
  for a in mi3 mi2 sn; do
    PEERLINE[$a]=$(awk -v n="${PEERNAME[$a]}" '$1 == n' target/peers/VERSIONS 2>/dev/null | tail -n 1)
    has_alloc "$a" && [ ! -e "${SO[$a]}" ] &&
      MISSING[$a]="${SO[$a]#"$ROOT"/} not built (scripts/peers.sh failed; see $LOGS/peers.err)"
  done
fi
for a in mi2deb je tc; do
  has_alloc "$a" || continue
  if [ ! -e "${SO[$a]}" ] && [ "$BUILD" = 1 ]; then apt_install "${DEBPKG[$a]}"; fi
  [ -e "${SO[$a]}" ] || MISSING[$a]="${SO[$a]} missing (Debian ${DEBPKG[$a]} not installed)"
done
for a in "${ALLOCS[@]}"; do
  [ -n "${MISSING[$a]:-}" ] && echo "   MISSING: $a: ${MISSING[$a]}; its runs will be FAIL" >&2
done

c_allocs_preload=0
for a in "${ALLOCS[@]}"; do [ "$a" != hakmem-linked ] && c_allocs_preload=1; done
progs=()
for c in "${SEL[@]}"; do
  IFS='|' read -r id kind prog threads args <<<"$c"
  [ "$kind" = c ] || continue
  if [ ! -f "bench-c/$prog.c" ]; then
    SKIPPED[$id]="bench-c/$prog.c does not exist"
    echo "   SKIP: $id: ${SKIPPED[$id]}" >&2
    continue
  fi
  case " ${progs[*]} " in *" $prog "*) ;; *) progs+=("$prog") ;; esac
done
if [ "$BUILD" = 1 ] && [ ${#progs[@]} -gt 0 ]; then
  targets=()
  for p in "${progs[@]}"; do
    [ "$c_allocs_preload" = 1 ] && targets+=("${p}_system")
    has_alloc hakmem-linked && [ -z "${MISSING[hakmem-linked]:-}" ] && targets+=("${p}_hakmem")
  done
  echo "== build: ${targets[*]}"
  for t in "${targets[@]}"; do rm -f "out/release/$t"; done   # no stale binary survives a failed build
  if ! ./build.sh "${targets[@]}" >"$LOGS/build-c.log" 2>&1; then
    for t in "${targets[@]}"; do   # one failure stops build.sh: build the rest one by one
      if ! ./build.sh "$t" >"$LOGS/build-$t.log" 2>&1; then
        echo "   FAILED: $t (see $LOGS/build-$t.log); its runs will be FAIL" >&2
      fi
    done
  fi
fi

# ---------------------------------------------------------------------------------------
# Real programs: inputs and reference outputs, made without any preload.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
GEN="$PY scripts/real/bench_inputs.py"
JAVA_DIR=$WORK/java
JAVA_CMP=bytes
XZ_IN=$WORK/xz-input.txt
real_ok() { sel_has "$1" && [ -z "${TOOL_NOTE[$1]:-}" ]; }
classes_manifest() {  # dir -> "sha256  ./path" lines, sorted by path
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
need_real=0
for c in "${SEL[@]}"; do case "$c" in *"|real|"*) need_real=1 ;; esac; done
if [ "$need_real" = 1 ]; then
  echo "== real programs: inputs and reference outputs (no preload) in $WORK"
  if real_ok python; then
    $GEN pyalloc "$WORK/pyalloc.py"
    env PYTHONMALLOC=malloc PYTHONHASHSEED=0 "$PY" -S "$WORK/pyalloc.py" >"$WORK/ref-python.txt" 2>&1 ||
      TOOL_NOTE[python]="reference run failed"
  fi
  if real_ok gcc; then
    $GEN csrc "$WORK/gen.c"
    gcc -O2 -c "$WORK/gen.c" -o "$WORK/ref-gcc.o" 2>"$WORK/ref-gcc.err" ||
      TOOL_NOTE[gcc]="reference compile failed (see $WORK/ref-gcc.err)"
  fi
  if real_ok sort; then
    $GEN lines "$SORT_MB" "$WORK/sort.txt"
    LC_ALL=C sort -k3,3n -k1,1 "$WORK/sort.txt" -o "$WORK/ref-sort.txt" || TOOL_NOTE[sort]="reference run failed"
  fi
  if real_ok javac; then
    $GEN java "$JAVA_CLASSES" "$JAVA_DIR"
    rm -rf "$WORK/ref-javac" "$WORK/ref-javac2"
    if javac -nowarn -encoding UTF-8 -d "$WORK/ref-javac" "@$JAVA_DIR/sources.txt" >"$WORK/ref-javac.err" 2>&1 &&
       javac -nowarn -encoding UTF-8 -d "$WORK/ref-javac2" "@$JAVA_DIR/sources.txt" >>"$WORK/ref-javac.err" 2>&1; then
      classes_manifest "$WORK/ref-javac" >"$WORK/ref-javac.sha"
      classes_manifest "$WORK/ref-javac2" | cmp -s - "$WORK/ref-javac.sha" || {
        JAVA_CMP=names
        echo "   javac: two reference runs differ byte-wise: comparing class file names only" >&2; }
      awk '{print $2}' "$WORK/ref-javac.sha" >"$WORK/ref-javac.names"
      echo "   javac: $(wc -l <"$WORK/ref-javac.names") class files from $JAVA_CLASSES sources (compared by $JAVA_CMP)"
    else
      TOOL_NOTE[javac]="reference compile failed (see $WORK/ref-javac.err)"
    fi
    rm -rf "$WORK/ref-javac" "$WORK/ref-javac2"
  fi
  if real_ok redis; then
    scripts/real/redis_bench.sh --out "$WORK/ref-redis.txt" --requests "$REDIS_REQUESTS" \
      >"$WORK/ref-redis.log" 2>&1 || TOOL_NOTE[redis]="reference run failed: $(tail -n 1 "$WORK/ref-redis.log")"
  fi
  if real_ok xz; then
    $GEN xz "-$XZ_MIB" "$XZ_IN"
  fi
  for id in python gcc sort javac redis xz; do
    [ -n "${TOOL_NOTE[$id]:-}" ] && sel_has "$id" && echo "   $id: ${TOOL_NOTE[$id]}; its runs will be FAIL" >&2
  done
fi

# The argv of a real program (one word per line, for mapfile), with its output going to RESF.
# REAL_STDOUT: where its stdout goes ("" = the run's log).
real_argv() {  # id resf
  REAL_STDOUT=""
  case "$1" in
    python) printf '%s\n' env PYTHONMALLOC=malloc PYTHONHASHSEED=0 "$PY" -S "$WORK/pyalloc.py" ;;
    gcc) printf '%s\n' gcc -O2 -c "$WORK/gen.c" -o "$2" ;;
    sort) printf '%s\n' env LC_ALL=C sort -k3,3n -k1,1 "$WORK/sort.txt" -o "$2" ;;
    javac) printf '%s\n' javac -nowarn -encoding UTF-8 -d "$2" "@$JAVA_DIR/sources.txt" ;;
    xz) printf '%s\n' xz -T2 -6 "--block-size=$XZ_BLOCK" -c "$XZ_IN" ;;
  esac
}
real_cmd_text() {  # id -> the command as shown in the report
  case "$1" in
    python) echo "env PYTHONMALLOC=malloc PYTHONHASHSEED=0 $PY -S $WORK/pyalloc.py" ;;
    gcc) echo "gcc -O2 -c $WORK/gen.c -o OUT" ;;
    sort) echo "env LC_ALL=C sort -k3,3n -k1,1 $WORK/sort.txt -o OUT   # $SORT_MB MB" ;;
    javac) echo "javac -nowarn -encoding UTF-8 -d OUTDIR @$JAVA_DIR/sources.txt   # $JAVA_CLASSES classes" ;;
    redis) echo "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no; redis-benchmark -h 127.0.0.1 -p PORT -q -n $REDIS_REQUESTS -P 16 -t set,get,lpush,lpop   # scripts/real/redis_bench.sh; only the server preloaded" ;;
    xz) echo "xz -T2 -6 --block-size=$XZ_BLOCK -c $XZ_IN > OUT   # $XZ_MIB MiB" ;;
  esac
}
real_main() {  # id -> the objects served.py requires to bind malloc
  case "$1" in
    python) basename "$PY" ;;
    gcc) echo cc1 ;;
    sort) echo sort ;;
    javac) echo javac,libjvm.so ;;
    redis) echo redis-server ;;
    xz) echo xz ;;
  esac
}
# check a real program's output; prints a note and returns 1 when wrong
real_check() {  # id resf stdout_file
  case "$1" in
    python) cmp -s "$3" "$WORK/ref-python.txt" || { echo "output differs from the reference (no preload)"; return 1; } ;;
    gcc) cmp -s "$2" "$WORK/ref-gcc.o" || { echo "object file differs from the reference"; return 1; } ;;
    sort) cmp -s "$2" "$WORK/ref-sort.txt" || { echo "sorted output differs from the reference"; return 1; } ;;
    javac)
      [ -d "$2" ] || { echo "no class files written"; return 1; }
      if [ "$JAVA_CMP" = bytes ]; then
        classes_manifest "$2" | cmp -s - "$WORK/ref-javac.sha" || {
          echo "class files differ from the reference ($(find "$2" -type f | wc -l) files; reference $(wc -l <"$WORK/ref-javac.names"))"; return 1; }
      else
        classes_manifest "$2" | awk '{print $2}' | cmp -s - "$WORK/ref-javac.names" || {
          echo "class file names differ from the reference ($(find "$2" -type f | wc -l) files)"; return 1; }
      fi ;;
    redis) cmp -s "$2" "$WORK/ref-redis.txt" || { echo "server state after the run differs from the reference: $(tr '\n' ' ' <"$2" | cut -c1-80)"; return 1; } ;;
    xz) xz -dc "$2" 2>/dev/null | cmp -s - "$XZ_IN" || { echo "compressed output does not decompress to the input"; return 1; } ;;
  esac
}

# ---------------------------------------------------------------------------------------
# One run of a configuration under one allocator.
# exec_run KIND ID PROG ARGS ALLOC [LDDEBUG_DIR] -> sets status note metric value rss wall cmd
# (status OK or FAIL); stdout/stderr of the run in $LOGS/run.out, run.err.
exec_run() {
  local kind=$1 id=$2 prog=$3 args=$4 a=$5 lddbg=${6:-} so bin tf rc line kv resf outf t0 t1 envs=() argv=()
  so=$(preload_of "$id" "$a")
  status=OK note="" metric="" value="" rss="" wall="" cmd=""
  tf=$LOGS/run.time
  rm -f "$LOGS/run.out" "$LOGS/run.err" "$tf"
  [ -n "$so" ] && envs+=("LD_PRELOAD=$so")
  [ -n "$lddbg" ] && envs+=(LD_DEBUG=bindings "LD_DEBUG_OUTPUT=$lddbg/ld")
  if [ -n "${MISSING[$a]:-}" ]; then status=FAIL note="${MISSING[$a]}"; return; fi
  if [ "$kind" = c ]; then
    if [ "$a" = hakmem-linked ]; then bin=out/release/${prog}_hakmem; else bin=out/release/${prog}_system; fi
    cmd="${envs[*]:+env ${envs[*]} }$bin $args"
    [ -x "$bin" ] || { status=FAIL note="$bin not built"; return; }
    # shellcheck disable=SC2086  # $args is a list of words
    timeout -k 5 "$TIMEOUT" /usr/bin/time -f '%e %M' -o "$tf" env "${envs[@]}" "$bin" $args \
      >"$LOGS/run.out" 2>"$LOGS/run.err"
    rc=$?
    read -r wall rss < <(tail -n 1 "$tf" 2>/dev/null)
    case "$wall" in ''|*[!0-9.]*) wall="" rss="" ;; esac
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=FAIL note="timeout after ${TIMEOUT}s"; return; fi
    if [ "$rc" != 0 ]; then
      status=FAIL note="exit status $rc: $(grep -v '^Command ' "$LOGS/run.err" | head -n 1 | cut -c1-120)"; return
    fi
    line=$(grep '^RESULT ' "$LOGS/run.out" | tail -n 1)
    [ -n "$line" ] || { status=FAIL note="no RESULT line"; return; }
    local r_rss=""
    for kv in $line; do
      case "$kv" in
        ops_per_sec=*) metric=ops_per_sec value=${kv#*=} ;;
        seconds=*) metric=seconds value=${kv#*=} ;;
        maxrss_kb=*) r_rss=${kv#*=} ;;
      esac
    done
    [ -n "$value" ] || { status=FAIL note="RESULT without ops_per_sec= or seconds="; return; }
    case "$r_rss" in ''|-*) ;; *) rss=$r_rss ;; esac
    return
  fi
  # real program
  [ -n "${TOOL_NOTE[$id]:-}" ] && { status=FAIL note="${TOOL_NOTE[$id]}"; return; }
  metric=seconds
  resf=$WORK/out-$id-$a
  rm -rf "$resf"
  if [ "$id" = redis ]; then
    cmd="scripts/real/redis_bench.sh --out $resf --requests $REDIS_REQUESTS${so:+ --preload $so}"
    timeout -k 5 "$TIMEOUT" scripts/real/redis_bench.sh --out "$resf" --requests "$REDIS_REQUESTS" \
      ${so:+--preload "$so"} ${lddbg:+--ld-debug "$lddbg"} --log "$LOGS/run.err" \
      >"$LOGS/run.out" 2>>"$LOGS/run.err"
    rc=$?
    line=$(grep '^RESULT ' "$LOGS/run.out" | tail -n 1)
    for kv in $line; do
      case "$kv" in seconds=*) value=${kv#*=} ;; maxrss_kb=*) rss=${kv#*=} ;; server_s=*) wall=${kv#*=} ;; esac
    done
  else
    mapfile -t argv < <(real_argv "$id" "$resf")
    outf=$LOGS/run.out
    [ "$id" = xz ] && outf=$resf
    cmd="${envs[*]:+env ${envs[*]} }${argv[*]}"
    [ "$id" = xz ] && cmd="$cmd > $resf"
    t0=$(date +%s%N)
    timeout -k 5 "$TIMEOUT" /usr/bin/time -f '%e %M' -o "$tf" env "${envs[@]}" "${argv[@]}" \
      >"$outf" 2>"$LOGS/run.err"
    rc=$?
    t1=$(date +%s%N)
    read -r _ rss < <(tail -n 1 "$tf" 2>/dev/null)
    case "$rss" in ''|*[!0-9]*) rss="" ;; esac
    # wall time to the millisecond (/usr/bin/time's %e has 10 ms steps)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    value=$wall
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status=FAIL note="timeout after ${TIMEOUT}s"
  elif [ "$rc" != 0 ]; then
    status=FAIL note="exit status $rc: $(grep -v '^Command ' "$LOGS/run.err" | grep -v '^redis-benchmark\|requests per second' | tail -n 1 | cut -c1-120)"
  elif ! note=$(real_check "$id" "$resf" "$LOGS/run.out"); then
    status=FAIL
  elif [ -z "$value" ]; then
    status=FAIL note="no time measured"
  fi
  rm -rf "$resf"
}

# Allocators a configuration runs under (hakmem-linked exists for C benchmarks only).
allocs_of() {  # kind
  local a
  for a in "${ALLOCS[@]}"; do
    [ "$1" = real ] && [ "$a" = hakmem-linked ] && continue
    echo "$a"
  done
}

# ---------------------------------------------------------------------------------------
# Served check: once per session, outside the timed runs.
declare -A NOTSERVED   # "id,alloc" -> why the runs are FAIL
echo "bench,alloc,status,detail" >"$SERVED"
csvq() { local s=${1//\"/\"\"}; printf '"%s"' "$s"; }
served_check() {  # label kind id prog args
  local label=$1 kind=$2 id=$3 prog=$4 args=$5 a d res rc expect mains
  for a in $(allocs_of "$kind"); do
    [ "$a" = hakmem-linked ] && continue
    [ -n "${MISSING[$a]:-}" ] && continue
    d=$(mktemp -d "$ROOT/$WORK/ld.XXXXXX")
    exec_run "$kind" "$id" "$prog" "$args" "$a" "$d"
    if [ "$kind" = c ]; then
      mains=$(basename "out/release/${prog}_system")
    else
      mains=$(real_main "$id")
    fi
    expect=${SO[$a]:-libc}
    res=$($PY scripts/real/served.py --expect "$expect" --main "$mains" "$d" 2>&1)
    rc=$?
    rm -rf "$d"
    if [ "$rc" = 1 ]; then
      NOTSERVED[$label,$a]="not served by $a: ${res#FAIL: }"
      res_status=FAIL
    elif [ "$rc" = 0 ]; then
      res_status=OK
    else
      res_status=UNKNOWN
    fi
    # a failing run under LD_DEBUG is reported, but the timed runs decide
    [ "$status" = OK ] || res="$res (this untimed run: FAIL: $note)"
    echo "$label,$a,$res_status,$(csvq "$res")" >>"$SERVED"
    printf '   %-8s %-8s %s\n' "$label" "$a" "$res"
  done
}
first_c=""
for c in "${SEL[@]}"; do
  IFS='|' read -r id kind prog threads args <<<"$c"
  [ "$kind" = c ] && [ -z "${SKIPPED[$id]:-}" ] && [ -x "out/release/${prog}_system" ] && { first_c=$c; break; }
done
echo "== served check (LD_DEBUG=bindings, one untimed run per program and allocator)"
if [ -n "$first_c" ] && [ "$c_allocs_preload" = 1 ]; then
  IFS='|' read -r id kind prog threads args <<<"$first_c"
  served_check c c "$id" "$prog" "$args"
fi
for c in "${SEL[@]}"; do
  IFS='|' read -r id kind prog threads args <<<"$c"
  [ "$kind" = real ] || continue
  [ -n "${TOOL_NOTE[$id]:-}" ] && continue
  served_check "$id" real "$id" "$prog" "$args"
done

# ---------------------------------------------------------------------------------------
# Metadata for the report.
dpkg_ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }
{
  echo "date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "mode=$MODE"
  echo "runs=$RUNS"
  echo "invocation=$INVOCATION"
  echo "timeout_s=$TIMEOUT"
  echo "allocs=${ALLOCS[*]}"
  echo "hakmem_rev=$HAKMEM_REV"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "cores=$(nproc) usable ($(grep -c '^processor' /proc/cpuinfo) listed in /proc/cpuinfo)"
  echo "memory=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel=$(uname -sr)"
  echo "glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) (libc6 $(dpkg_ver libc6))"
  echo "rustc=$(rustc --version 2>/dev/null)"
  echo "cc=$(cc --version 2>/dev/null | head -n 1)"
  for a in "${ALLOCS[@]}"; do
    echo "preload.$a=${SO[$a]:-(none)}"
    case "$a" in
      hakmem) echo "version.$a=hakmem $(git rev-parse --short HEAD 2>/dev/null) (target/release/libhakmem.so, cargo build --release)" ;;
      hakmem-linked) echo "version.$a=hakmem $(git rev-parse --short HEAD 2>/dev/null) (target/release/libhakmem.a linked into out/release/PROG_hakmem)" ;;
      system|mi2deb|je|tc) v=$(dpkg_ver "${DEBPKG[$a]}"); echo "version.$a=Debian ${DEBPKG[$a]} ${v:-(not installed)}" ;;
      mi3|mi2|sn)
        read -r _ crate cver up <<<"${PEERLINE[$a]:-}"
        if [ -n "${up:-}" ]; then
          echo "version.$a=$up (built by scripts/peers.sh from crate $crate $cver)"
        else
          echo "version.$a=(not built)"
        fi ;;
    esac
    [ -n "${MISSING[$a]:-}" ] && echo "missing.$a=${MISSING[$a]}"
  done
  echo "prog.python=$PY $("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null)"
  echo "prog.gcc=gcc $(gcc -dumpfullversion 2>/dev/null)"
  echo "prog.sort=$(sort --version 2>/dev/null | head -n 1)"
  command -v javac >/dev/null && echo "prog.javac=$(javac -version 2>&1 | head -n 1) ($(readlink -f "$(command -v javac)"))"
  command -v redis-server >/dev/null && echo "prog.redis=$(redis-server --version 2>/dev/null | cut -d' ' -f1-3) (Debian redis-server $(dpkg_ver redis-server); linked against $(ldd "$(command -v redis-server)" 2>/dev/null | grep -o 'libjemalloc[^ ]*' | head -n 1 || echo 'no allocator library'))"
  command -v xz >/dev/null && echo "prog.xz=$(xz --version 2>/dev/null | head -n 1)"
  for c in "${SEL[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    if [ -n "${SKIPPED[$id]:-}" ]; then echo "skipped.$id=${SKIPPED[$id]}"; continue; fi
    if [ "$kind" = c ]; then
      echo "cmd.$id=[env LD_PRELOAD={SO}] out/release/${prog}_system $args"
    else
      echo "cmd.$id=[env LD_PRELOAD={SO}] $(real_cmd_text "$id")"
    fi
    [ "$id" = redis ] && echo "note.redis=Debian's redis-server is linked to libjemalloc.so.2, which serves it when nothing is preloaded; the glibc column therefore runs it with LD_PRELOAD=$LIBC_SO (glibc's malloc then comes first in the lookup order). Only the server is preloaded; redis-benchmark runs without preload. Metric: wall time of the redis-benchmark run."
    [ "$id" = xz ] && echo "note.xz=$XZ_MIB MiB of generated log-like text; --block-size=$XZ_BLOCK gives each of the two threads one block (at -6 xz's default block is 24 MiB). The output must decompress to the input."
    [ "$id" = javac ] && echo "note.javac=$JAVA_CLASSES generated classes (scripts/real/bench_inputs.py java); the class files must equal the reference run's (compared by $JAVA_CMP)."
  done
} >"$META"

# ---------------------------------------------------------------------------------------
# Timed runs.
echo "round,bench,kind,threads,alloc,metric,value,maxrss_kb,wall_s,status,note,cmd" >"$RAW"

fmt_value() {  # value metric
  case "$2" in
    ops_per_sec) awk -v v="$1" 'BEGIN { printf "%.3g ops/s", v }' ;;
    seconds) awk -v v="$1" 'BEGIN { printf "%.3f s", v }' ;;
    *) echo "$1 $2" ;;
  esac
}
hms() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

RUNSEL=()
total=0
for c in "${SEL[@]}"; do
  IFS='|' read -r id kind prog threads args <<<"$c"
  [ -n "${SKIPPED[$id]:-}" ] && continue
  RUNSEL+=("$c")
  total=$(( total + RUNS * $(allocs_of "$kind" | wc -l) ))
done
n=0 nfail=0
t_runs=$(date +%s)
echo "== $total runs ($RUNS rounds x ${#RUNSEL[@]} configurations x up to ${#ALLOCS[@]} allocators)"
trap 'echo; echo "bench.sh: interrupted after $n of $total runs; partial results in $RAW (scripts/bench_report.py makes a report of them)"; exit 130' INT TERM

for ((r = 1; r <= RUNS; r++)); do
  ci=0
  for c in "${RUNSEL[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    ci=$((ci + 1))
    mapfile -t AL < <(allocs_of "$kind")
    for ((k = 0; k < ${#AL[@]}; k++)); do
      a=${AL[$(( (k + r + ci) % ${#AL[@]} ))]}
      n=$((n + 1))
      label=$id; [ "$kind" = c ] && label=c
      if [ -n "${NOTSERVED[$label,$a]:-}" ]; then
        status=FAIL note=${NOTSERVED[$label,$a]} metric="" value="" rss="" wall="" cmd="(not run)"
        [ "$kind" = real ] && metric=seconds
      else
        exec_run "$kind" "$id" "$prog" "$args" "$a"
      fi
      note=${note//,/;}
      [ "$status" = OK ] || value=""
      if [ "$status" != OK ]; then
        nfail=$((nfail + 1))
        [ -e "$LOGS/run.out" ] && cp "$LOGS/run.out" "$LOGS/fail-$id-$a-r$r.out"
        [ -e "$LOGS/run.err" ] && cp "$LOGS/run.err" "$LOGS/fail-$id-$a-r$r.err"
      fi
      echo "$r,$id,$kind,$threads,$a,$metric,$value,$rss,$wall,$status,$(csvq "$note"),$(csvq "$cmd")" >>"$RAW"
      if [ "$status" = OK ]; then
        shown="$(fmt_value "$value" "$metric")  rss $(awk -v k="$rss" 'BEGIN { printf "%.1f MiB", k / 1024 }')"
      else
        shown="FAIL ($note)"
      fi
      el=$(( $(date +%s) - t_runs ))
      printf '[%d/%d %s, ~%s left] r%d %s %s ... %s\n' "$n" "$total" "$(hms "$el")" \
        "$(hms $(( el * (total - n) / n )))" "$r" "$id" "$a" "$shown"
    done
  done
done
trap - INT TERM
echo "date_end=$(date -u '+%Y-%m-%d %H:%M:%S UTC')" >>"$META"
echo "elapsed_s=$(( $(date +%s) - t_start ))" >>"$META"

echo "== done: $total runs, $nfail FAIL, $(( $(date +%s) - t_start )) s; raw results in $RAW"
if [ -z "$REPORT_DIR" ]; then
  if [ -z "$ONLY" ] && [ -z "$ALLOC_ARG" ]; then REPORT_DIR=docs; else REPORT_DIR=$OUT/report; fi
fi
if [ "$REPORT" = 1 ]; then
  "$PY" scripts/bench_report.py --raw "$RAW" --meta "$META" --served "$SERVED" --out-dir "$REPORT_DIR" ||
    { echo "bench.sh: bench_report.py failed" >&2; exit 1; }
fi

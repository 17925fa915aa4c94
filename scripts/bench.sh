#!/usr/bin/env bash
# scripts/bench.sh — hakmem against glibc, mimalloc, jemalloc and tcmalloc, side by side.
#
#   scripts/bench.sh [--quick|--full] [--runs N] [--only REGEX] [--no-build] [--no-report]
#
#   --quick      (default) 5 runs of every configuration, ~1 s each: under ~10 min on 2 cores
#   --full       11 runs of every configuration
#   --runs N     runs per allocator and configuration (overrides the mode's count)
#   --only RE    only configurations whose id matches the extended regex RE
#                (ids: larson-t1 larson-t2 larson-t4 larson-t8 random_mixed fixed_size-16
#                 fixed_size-256 xthread-t2 xthread-t4 mid-t1 mid-t2 large thread_churn
#                 python gcc sort)
#   --no-build   use the binaries already in out/release
#   --no-report  do not call scripts/bench_report.py at the end
#
# Builds what it needs with ./build.sh (library, then PROG_ALLOC for each benchmark; peers
# are installed by build.sh when missing), then runs every configuration for the five
# allocators interleaved: each round runs every configuration once per allocator, with the
# allocator order rotated from round to round, so drift on a shared machine hits all alike.
# The C benchmarks are linked against each allocator (out/release/PROG_ALLOC); the real
# programs (python, gcc, sort) run under LD_PRELOAD (hakmem: target/release/libhakmem.so;
# system: nothing preloaded) and are timed with /usr/bin/time -f '%e %M'.
# A run that exits non-zero, times out, prints no RESULT line or a wrong output is recorded
# as FAIL, never dropped.  Raw results: out/bench/raw.csv (one row per run); logs of failed
# runs: out/bench/logs/.  At the end scripts/bench_report.py writes docs/BENCHMARKS.md,
# docs/benchmarks.csv and docs/benchmarks.svg.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
INVOCATION="scripts/bench.sh${*:+ $*}"

MODE=quick RUNS="" ONLY="" BUILD=1 REPORT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick; shift ;;
    --full) MODE=full; shift ;;
    --runs) RUNS=${2:-}; shift 2 || { echo "bench.sh: --runs needs a number" >&2; exit 2; } ;;
    --runs=*) RUNS=${1#--runs=}; shift ;;
    --only) ONLY=${2:-}; shift 2 || { echo "bench.sh: --only needs a regex" >&2; exit 2; } ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-report) REPORT=0; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$RUNS" ]; then
  if [ "$MODE" = quick ]; then RUNS=5; else RUNS=11; fi
fi
case "$RUNS" in ''|*[!0-9]*|0) echo "bench.sh: --runs must be a positive integer" >&2; exit 2 ;; esac
if [ "$MODE" = quick ]; then TIMEOUT=60; else TIMEOUT=300; fi

OUT=out/bench
WORK=$OUT/work
LOGS=$OUT/logs
RAW=$OUT/raw.csv
META=$OUT/meta.txt
mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS"/fail-* "$LOGS"/build-*

# Tools a fresh Debian machine may lack: /usr/bin/time (peak RSS), gcc, python3.
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v gcc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench.sh: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }) >&2
  else
    echo "bench.sh: not root; install ${missing[*]} by hand" >&2; exit 1
  fi
fi

ALLOCS=(hakmem system mi je tc)
LIBDIR=/usr/lib/x86_64-linux-gnu
declare -A PRELOAD=(
  [hakmem]=$ROOT/target/release/libhakmem.so
  [system]=""
  [mi]=$LIBDIR/libmimalloc.so.2
  [je]=$LIBDIR/libjemalloc.so.2
  [tc]=$LIBDIR/libtcmalloc_minimal.so.4
)

# ---------------------------------------------------------------------------------------
# Configurations: id | kind (c = C benchmark, real = real program) | program | threads | args
# Arguments are sized so one run takes about 0.5-1.5 s on this 2-core machine.
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
  "python|real|python|1|"
  "gcc|real|gcc|1|"
  "sort|real|sort|2|"
)

SEL=()
for c in "${CONFIGS[@]}"; do
  id=${c%%|*}
  if [ -z "$ONLY" ] || grep -Eq -- "$ONLY" <<<"$id"; then SEL+=("$c"); fi
done
[ ${#SEL[@]} -gt 0 ] || { echo "bench.sh: --only '$ONLY' matches no configuration" >&2; exit 2; }

t_start=$(date +%s)
echo "bench.sh: mode=$MODE runs=$RUNS configurations=${#SEL[@]} allocators=${ALLOCS[*]}"

# ---------------------------------------------------------------------------------------
# Build.
declare -A BUILD_NOTE   # alloc -> why it is missing, if it is
HAKMEM_LIB_OK=1
if [ "$BUILD" = 1 ]; then
  progs=()
  for c in "${SEL[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    [ "$kind" = c ] || continue
    case " ${progs[*]} " in *" $prog "*) ;; *) progs+=("$prog") ;; esac
  done
  echo "== build: hakmem library (./build.sh)"
  if ./build.sh >"$LOGS/build-lib.log" 2>&1; then
    echo "   ok: $(ls target/release/libhakmem.so target/release/libhakmem.a 2>/dev/null | tr '\n' ' ')"
  else
    HAKMEM_LIB_OK=0
    BUILD_NOTE[hakmem]="library build failed"
    echo "   FAILED: hakmem library did not build (see $LOGS/build-lib.log); hakmem runs will be FAIL" >&2
    tail -n 5 "$LOGS/build-lib.log" | sed 's/^/   | /' >&2
  fi
  if [ ${#progs[@]} -gt 0 ]; then
    echo "== build: ${progs[*]} x {${ALLOCS[*]}}"
    for a in "${ALLOCS[@]}"; do
      [ "$a" = hakmem ] && [ "$HAKMEM_LIB_OK" = 0 ] && continue
      targets=(); for p in "${progs[@]}"; do targets+=("${p}_$a"); done
      for t in "${targets[@]}"; do rm -f "out/release/$t"; done   # no stale binary survives a failed build
      if ! ./build.sh "${targets[@]}" >"$LOGS/build-$a.log" 2>&1; then
        # one failure stops build.sh: build the rest one by one and name the failures
        for t in "${targets[@]}"; do
          if ! ./build.sh "$t" >"$LOGS/build-$t.log" 2>&1; then
            echo "   FAILED: $t (see $LOGS/build-$t.log); its runs will be FAIL" >&2
          fi
        done
      fi
    done
  fi
else
  [ -e "${PRELOAD[hakmem]}" ] || { HAKMEM_LIB_OK=0; BUILD_NOTE[hakmem]="libhakmem.so missing"; }
fi
for a in mi je tc; do
  [ -e "${PRELOAD[$a]}" ] || BUILD_NOTE[$a]="${PRELOAD[$a]} missing"
done

# ---------------------------------------------------------------------------------------
# Real-program workloads: inputs and reference outputs, made without any preload.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
need_real=0
for c in "${SEL[@]}"; do case "$c" in *"|real|"*) need_real=1 ;; esac; done
if [ "$need_real" = 1 ]; then
  echo "== prepare real-program inputs in $WORK"
  cat >"$WORK/pyalloc.py" <<'EOF'
# Allocation-heavy deterministic Python workload for scripts/bench.sh
# (run with PYTHONMALLOC=malloc PYTHONHASHSEED=0 so every object goes through malloc).
import random
rng = random.Random(12345)
keep = []
total = 0
for r in range(5):
    d = {}
    for i in range(60000):
        k = "k%d_%d" % (r, rng.randrange(1 << 20))
        d[k] = [i, str(i) * (1 + (i & 7)), (k, i)]
    blobs = [bytes(rng.randrange(16, 2048)) for _ in range(20000)]
    words = sorted(d, key=lambda s: s[::-1])
    joined = "".join(words[::50])
    lst = []
    for i in range(100000):
        lst.append((i, float(i)))
        if i % 4096 == 4095:
            del lst[: len(lst) // 2]
    total += len(d) + len(blobs) + len(joined) + len(lst)
    keep.append({w: d[w] for w in words[::10]})
    if len(keep) > 2:
        keep.pop(0)
    del d, blobs, words, joined, lst
print(total, sum(len(k) for k in keep))
EOF
  # a C file of ~1,900 lines for gcc -O2
  "$PY" - "$WORK/gen.c" <<'EOF'
import sys
n = 110
o = ["#include <stdio.h>", "#include <string.h>", "#include <stdlib.h>", "",
     "struct rec { int a, b; double w; char name[16]; struct rec *next; };"]
for i in range(n):
    o += ["static int f%d(struct rec *r, int n, const char *s) {" % i,
          "    int acc = %d;" % (i * 7 + 1),
          "    for (int j = 0; j < n; j++) {",
          "        switch ((j + %d) %% 5) {" % i,
          "        case 0: acc += r->a * j + %d; break;" % (i % 13),
          "        case 1: acc ^= r->b << (j & 7); break;",
          "        case 2: acc -= (int)(r->w * %d.5); break;" % (i % 17),
          "        case 3: acc += (int)strlen(s) + s[j % 3]; break;",
          "        default: acc = acc * 31 + j;",
          "        }",
          "        if (r->next && (acc & %d)) r = r->next;" % (1 << (i % 5)),
          "    }",
          "    snprintf(r->name, sizeof r->name, \"f%d:%%d\", acc);" % i,
          ("    return acc + (n > %d ? f%d(r, n - 1, s) : 0);" % (i % 11, i - 1)) if i else "    return acc;",
          "}", ""]
o.append("int main(int argc, char **argv) {")
o.append("    struct rec r = {1, 2, 3.0, \"\", 0}; long t = 0;")
for i in range(0, n, 1):
    o.append("    t += f%d(&r, argc + %d, argv[0]);" % (i, i % 9))
o += ["    printf(\"%ld\\n\", t);", "    return 0;", "}"]
open(sys.argv[1], "w").write("\n".join(o) + "\n")
EOF
  # ~30 MB of text lines for sort
  if [ "$(stat -c %s "$WORK/sort.txt" 2>/dev/null || echo 0)" -lt 30000000 ]; then
    "$PY" - "$WORK/sort.txt" <<'EOF'
import random, sys
rng = random.Random(4242)
syl = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu", "an", "el", "or", "ix"]
n = 0
with open(sys.argv[1], "w") as f:
    while n < 30000000:
        w = "".join(rng.choice(syl) for _ in range(rng.randrange(2, 7)))
        line = "%s %08x %d %s\n" % (w, rng.getrandbits(32), rng.randrange(10**6), "x" * rng.randrange(0, 40))
        f.write(line)
        n += len(line)
EOF
  fi
  env PYTHONMALLOC=malloc PYTHONHASHSEED=0 "$PY" -S "$WORK/pyalloc.py" >"$WORK/ref-python.txt" 2>&1 ||
    echo "bench.sh: python reference run failed" >&2
  gcc -O2 -c "$WORK/gen.c" -o "$WORK/ref-gcc.o" 2>"$WORK/ref-gcc.err" ||
    echo "bench.sh: gcc reference compile failed (see $WORK/ref-gcc.err)" >&2
  LC_ALL=C sort -k3,3n -k1,1 "$WORK/sort.txt" -o "$WORK/ref-sort.txt" ||
    echo "bench.sh: sort reference run failed" >&2
fi

# command (as an argv) of a real program, output to $2
real_cmd() {
  case "$1" in
    python) echo "env PYTHONMALLOC=malloc PYTHONHASHSEED=0 $PY -S $WORK/pyalloc.py" ;;
    gcc) echo "gcc -O2 -c $WORK/gen.c -o $2" ;;
    sort) echo "env LC_ALL=C sort -k3,3n -k1,1 $WORK/sort.txt -o $2" ;;
  esac
}

# ---------------------------------------------------------------------------------------
# Metadata for the report.
{
  echo "date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "mode=$MODE"
  echo "runs=$RUNS"
  echo "invocation=$INVOCATION"
  echo "timeout_s=$TIMEOUT"
  echo "hakmem_rev=$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (uncommitted changes)')"
  echo "python=$PY ($("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null))"
  echo "gcc=$(gcc -dumpfullversion 2>/dev/null)"
  echo "sort=$(sort --version 2>/dev/null | head -n1)"
  for a in "${ALLOCS[@]}"; do
    echo "preload.$a=${PRELOAD[$a]:-(none)}"
    [ -n "${BUILD_NOTE[$a]:-}" ] && echo "missing.$a=${BUILD_NOTE[$a]}"
  done
  for c in "${SEL[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    if [ "$kind" = c ]; then
      echo "cmd.$id=out/release/${prog}_{ALLOC} $args"
    else
      echo "cmd.$id=[LD_PRELOAD={ALLOC_SO}] $(real_cmd "$id" "$WORK/out-{ALLOC}")"
    fi
  done
} >"$META"

# ---------------------------------------------------------------------------------------
# Runs.
csvq() { local s=${1//\"/\"\"}; printf '"%s"' "$s"; }
echo "round,bench,kind,threads,alloc,metric,value,maxrss_kb,wall_s,status,note,cmd" >"$RAW"

fmt_value() {  # value metric
  case "$2" in
    ops_per_sec) awk -v v="$1" 'BEGIN { printf "%.3g ops/s", v }' ;;
    seconds) awk -v v="$1" 'BEGIN { printf "%.3f s", v }' ;;
    *) echo "$1 $2" ;;
  esac
}

total=$(( RUNS * ${#SEL[@]} * ${#ALLOCS[@]} ))
n=0 nfail=0
echo "== $total runs ($RUNS rounds x ${#SEL[@]} configurations x ${#ALLOCS[@]} allocators)"
trap 'echo; echo "bench.sh: interrupted after $n of $total runs; partial results in $RAW (scripts/bench_report.py makes a report of them)"; exit 130' INT TERM

for ((r = 1; r <= RUNS; r++)); do
  ci=0
  for c in "${SEL[@]}"; do
    IFS='|' read -r id kind prog threads args <<<"$c"
    ci=$((ci + 1))
    for ((k = 0; k < ${#ALLOCS[@]}; k++)); do
      a=${ALLOCS[$(( (k + r + ci) % ${#ALLOCS[@]} ))]}
      n=$((n + 1))
      out=$LOGS/run.out err=$LOGS/run.err tf=$LOGS/run.time
      rm -f "$out" "$err" "$tf"
      metric="" value="" rss="" wall="" trss="" resf="" status=OK note=""
      if [ "$kind" = c ]; then
        bin=out/release/${prog}_$a
        cmd="$bin $args"
        metric=""
      else
        resf=$WORK/out-$a
        rm -f "$resf"
        cmd=$(real_cmd "$id" "$resf")
        [ -n "${PRELOAD[$a]}" ] && cmd="env LD_PRELOAD=${PRELOAD[$a]} $cmd"
        metric=seconds
      fi
      if [ "$a" = hakmem ] && [ "$HAKMEM_LIB_OK" = 0 ]; then
        status=FAIL note="${BUILD_NOTE[hakmem]}"
      elif [ "$kind" = c ] && [ ! -x "$bin" ]; then
        status=FAIL note="not built${BUILD_NOTE[$a]:+ (${BUILD_NOTE[$a]})}"
      elif [ "$kind" = real ] && [ -n "${PRELOAD[$a]}" ] && [ ! -e "${PRELOAD[$a]}" ]; then
        status=FAIL note="${PRELOAD[$a]} missing"
      else
        # shellcheck disable=SC2086
        timeout -k 5 "$TIMEOUT" /usr/bin/time -f '%e %M' -o "$tf" $cmd >"$out" 2>"$err"
        rc=$?
        read -r wall trss < <(tail -n1 "$tf" 2>/dev/null)
        case "$wall" in ''|*[!0-9.]*) wall="" trss="" ;; esac
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
          status=FAIL note="timeout after ${TIMEOUT}s"
        elif [ "$rc" != 0 ]; then
          status=FAIL note="exit status $rc: $(grep -v '^Command ' "$err" | head -n1 | cut -c1-120)"
        elif [ "$kind" = c ]; then
          line=$(grep '^RESULT ' "$out" | tail -n1)
          if [ -z "$line" ]; then
            status=FAIL note="no RESULT line"
          else
            for kv in $line; do
              case "$kv" in
                ops_per_sec=*) metric=ops_per_sec value=${kv#*=} ;;
                seconds=*) metric=seconds value=${kv#*=} ;;
                maxrss_kb=*) rss=${kv#*=} ;;
              esac
            done
            [ -n "$value" ] || { status=FAIL note="RESULT without ops_per_sec= or seconds="; }
            [ -n "$rss" ] || rss=$trss
          fi
        else
          value=$wall rss=$trss
          case "$id" in
            python) cmp -s "$out" "$WORK/ref-python.txt" || { status=FAIL note="output differs from the system allocator's"; } ;;
            gcc) cmp -s "$resf" "$WORK/ref-gcc.o" || { status=FAIL note="object file differs from the system allocator's"; } ;;
            sort) cmp -s "$resf" "$WORK/ref-sort.txt" || { status=FAIL note="sorted output differs from the system allocator's"; } ;;
          esac
          [ -n "$value" ] || { status=FAIL note="no time from /usr/bin/time"; }
        fi
        [ -n "$resf" ] && rm -f "$resf"
      fi
      note=${note//,/;}
      [ "$status" = OK ] || value=""
      if [ "$status" != OK ]; then
        nfail=$((nfail + 1))
        [ -e "$out" ] && cp "$out" "$LOGS/fail-$id-$a-r$r.out"
        [ -e "$err" ] && cp "$err" "$LOGS/fail-$id-$a-r$r.err"
      fi
      echo "$r,$id,$kind,$threads,$a,$metric,$value,$rss,$wall,$status,$(csvq "$note"),$(csvq "$cmd")" >>"$RAW"
      if [ "$status" = OK ]; then
        shown="$(fmt_value "$value" "$metric")  rss $(awk -v k="$rss" 'BEGIN { printf "%.1f MiB", k / 1024 }')"
      else
        shown="FAIL ($note)"
      fi
      printf '[%d/%d] %s t=%s %s ... %s\n' "$n" "$total" "$id" "$threads" "$a" "$shown"
    done
  done
done
trap - INT TERM
echo "date_end=$(date -u '+%Y-%m-%d %H:%M:%S UTC')" >>"$META"
echo "elapsed_s=$(( $(date +%s) - t_start ))" >>"$META"

echo "== done: $total runs, $nfail FAIL, $(( $(date +%s) - t_start )) s; raw results in $RAW"
if [ "$REPORT" = 1 ]; then
  python3 scripts/bench_report.py --raw "$RAW" --meta "$META" || { echo "bench.sh: bench_report.py failed" >&2; exit 1; }
fi

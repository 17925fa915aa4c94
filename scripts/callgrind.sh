#!/usr/bin/env bash
# scripts/callgrind.sh — fast-path cost: instructions per malloc/free pair, hakmem vs peers.
#
#   scripts/callgrind.sh [--allocs "hakmem mi3 ..."] [--sizes "16 64 256 1024"] [--n N] [--n0 N0]
#                        [--hakmem-so PATH] [--no-build] [--csv FILE] [--quiet]
#   scripts/callgrind.sh --annotate SIZE [--allocs LIST] [--top K] ...
#
# One binary for everyone: out/release/bench_pair_system (bench-c/bench_pair.c built against
# glibc; ./build.sh builds it when missing or older than its source), run under
# `valgrind --tool=callgrind` with LD_PRELOAD of each allocator, so every allocator pays the
# same call cost (PLT + exported symbol).  Allocator ids (--allocs, default all, in this order):
#   hakmem  target/release/libhakmem.so (./build.sh lib first, unless --no-build/--hakmem-so)
#   system  glibc (no preload)
#   mi2deb  Debian's mimalloc 2.0  /usr/lib/x86_64-linux-gnu/libmimalloc.so.2
#   mi3     mimalloc 3             target/peers/libmimalloc3.so   (scripts/peers.sh builds
#   mi2     mimalloc 2 (current)   target/peers/libmimalloc2.so    these when missing)
#   sn      snmalloc               target/peers/libsnmalloc.so
#   je      jemalloc               /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
#   tc      tcmalloc-minimal       /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
# (Debian libraries missing are installed with apt-get when root; else reported MISSING.)
#
# For each size bench_pair runs twice, with N0 and N pairs (after its fixed warm-up), and
#     instructions per pair = (Ir(N) - Ir(N0)) / (N - N0)
# so start-up, warm-up and exit cost cancel.  Instruction counts are repeatable where wall
# time is not (run to run the totals differ by < 100 instructions out of ~1e8, 0.0001 per
# pair).  They include the benchmark loop itself (bench_pair.c's pairs(): 13 instructions
# per pair), the same for every allocator.  Mind the shape of the loop: one block live at a
# time, so every free empties its page; mimalloc then runs its page-retire path (Debian's 2.0
# on every free, v3 at 1024 B with the generic malloc path too), which --annotate shows.
#
# Each run is checked: valgrind must exit 0, and the calls that bench_pair's own code makes
# (malloc and free) must land in the preloaded library (for system: libc.so.6), read from
# callgrind's call graph (code valgrind maps to no object, "???", counts when the library
# exports the function's name: tcmalloc keeps malloc/free in a `google_malloc` section that
# valgrind 3.19 does not attribute).  callgrind does not replace malloc (memcheck would) and
# passes LD_PRELOAD through, but a library that fails to preload, exports no malloc, or
# forwards to glibc would otherwise be measured as glibc.  A failed run is reported FAIL with the reason (the
# program's own message and, when valgrind refused a mapping, its size) under the table.
#
# Writes FILE (default out/bench/callgrind.csv; scripts/bench_report.py adds it to
# docs/BENCHMARKS.md), columns date,size,alloc,n0,n,ir_n0,ir_n,ir_per_pair,status with status
# OK, FAIL or MISSING; valgrind's stderr goes to out/bench/logs/callgrind-ALLOC-SIZE-N.err.
# Exit status: 0 when every requested allocator was measured or reported; 1 when hakmem was
# requested and could not be measured (FAIL/MISSING); 2 on bad arguments.
#
# --annotate SIZE (default allocs: hakmem): where the instructions go.  Runs N0 and N at SIZE
# and prints, per pair, the self cost of every function ((Ir_N - Ir_N0) / (N - N0) per
# object:function), then per source file and per source line (inlined code attributed to its
# own file, as callgrind_annotate does), --top K rows each (default 25).  The two
# callgrind.out files are kept in out/bench/callgrind/ for callgrind_annotate.
# No CSV is written in this mode.
#
# Why snmalloc is FAIL: it reserves its whole pagemap at start-up (a 256 GiB PROT_NONE,
# MAP_NORESERVE mapping for a 48-bit address space), and valgrind's address-space manager
# refuses it (EINVAL; valgrind 3.19 gives the client well under 64 GiB, a compile-time
# limit: no command-line option or environment variable raises it, and snmalloc has no
# run-time setting for the pagemap), so snmalloc aborts with "Failed to initialise snmalloc."
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_ALLOCS="hakmem system mi2deb mi3 mi2 sn je tc"
SIZES="16 64 256 1024"
N=1100000
N0=100000
ALLOCS=""
HAKMEM_SO=""
BUILD=1
CSV=out/bench/callgrind.csv
QUIET=0
ANNOTATE=""
TOP=25
usage() { sed -n '2,57p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --allocs) ALLOCS=${2//,/ }; shift 2 ;;
    --sizes) SIZES=${2//,/ }; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --n0) N0=$2; shift 2 ;;
    --hakmem-so) HAKMEM_SO=$2; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --csv) CSV=$2; shift 2 ;;
    --quiet) QUIET=1; shift ;;
    --annotate) ANNOTATE=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "callgrind.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
isnum "$N" && isnum "$N0" && [ "$N" -gt "$N0" ] ||
  { echo "callgrind.sh: --n and --n0 must be integers with --n > --n0" >&2; exit 2; }
isnum "$TOP" || { echo "callgrind.sh: --top must be an integer" >&2; exit 2; }
if [ -n "$ANNOTATE" ]; then
  isnum "$ANNOTATE" || { echo "callgrind.sh: --annotate takes a size in bytes" >&2; exit 2; }
  SIZES=$ANNOTATE
  [ -n "$ALLOCS" ] || ALLOCS=hakmem
fi
[ -n "$ALLOCS" ] || ALLOCS=$ALL_ALLOCS
for a in $ALLOCS; do
  [[ " $ALL_ALLOCS " == *" $a "* ]] || { echo "callgrind.sh: unknown allocator '$a' (ids: $ALL_ALLOCS)" >&2; exit 2; }
done
for s in $SIZES; do isnum "$s" || { echo "callgrind.sh: bad size '$s'" >&2; exit 2; }; done
[ -n "$HAKMEM_SO" ] && HAKMEM_SO=$(realpath -m "$HAKMEM_SO")
say() { [ "$QUIET" = 1 ] || echo "$@" >&2; }

# ---------------------------------------------------------------- valgrind
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "callgrind.sh: valgrind missing; installing Debian package valgrind" >&2
    (apt-get install -y -qq valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind; }) >&2
  fi
  command -v valgrind >/dev/null ||
    { echo "callgrind.sh: valgrind not available (install the valgrind package as root)" >&2; exit 1; }
fi

OUT=out/bench
LOG=$OUT/logs
mkdir -p "$LOG"

# ---------------------------------------------------------------- the benchmark binary
BIN=$(realpath -m "$ROOT/out/release/bench_pair_system")
if [ ! -x "$BIN" ] || [ bench-c/bench_pair.c -nt "$BIN" ] || [ bench-c/bench_common.h -nt "$BIN" ]; then
  say "callgrind.sh: building out/release/bench_pair_system"
  ./build.sh bench_pair_system >"$LOG/build-bench_pair_system.log" 2>&1 && [ -x "$BIN" ] || {
    echo "callgrind.sh: ./build.sh bench_pair_system failed:" >&2; tail -n 20 "$LOG/build-bench_pair_system.log" >&2; exit 1; }
fi
LIBC=$(ldd "$BIN" 2>/dev/null | awk '$1 ~ /^libc\.so/ { print $3 }')
LIBC=$(realpath -m "${LIBC:-/lib/x86_64-linux-gnu/libc.so.6}")

# ---------------------------------------------------------------- the allocators
DEBLIB=/usr/lib/x86_64-linux-gnu
declare -A SO=() WHY=()
deb_pkg() { case "$1" in mi2deb) echo libmimalloc2.0 ;; je) echo libjemalloc2 ;; tc) echo libtcmalloc-minimal4 ;; esac; }
so_path() {
  case "$1" in
    hakmem) echo "${HAKMEM_SO:-$ROOT/target/release/libhakmem.so}" ;;
    system) echo "" ;;
    mi2deb) echo "$DEBLIB/libmimalloc.so.2" ;;
    mi3) echo "$ROOT/target/peers/libmimalloc3.so" ;;
    mi2) echo "$ROOT/target/peers/libmimalloc2.so" ;;
    sn) echo "$ROOT/target/peers/libsnmalloc.so" ;;
    je) echo "$DEBLIB/libjemalloc.so.2" ;;
    tc) echo "$DEBLIB/libtcmalloc_minimal.so.4" ;;
  esac
}
peers_tried=0
for a in $ALLOCS; do
  so=$(so_path "$a")
  case "$a" in
    hakmem)
      if [ "$BUILD" = 1 ]; then
        say "callgrind.sh: ./build.sh lib (cargo build --release -p hakmem)"
        ./build.sh lib >"$LOG/build-lib.log" 2>&1 ||
          echo "callgrind.sh: ./build.sh lib failed (see $LOG/build-lib.log)" >&2
      fi
      [ -f "$so" ] || WHY[$a]="${so#"$ROOT"/} missing (run ./build.sh)" ;;
    mi3|mi2|sn)
      if [ ! -f "$so" ] && [ "$peers_tried" = 0 ]; then
        peers_tried=1
        say "callgrind.sh: ${so#"$ROOT"/} missing; running scripts/peers.sh"
        scripts/peers.sh >"$LOG/peers.log" 2>&1 || true
      fi
      [ -f "$so" ] || WHY[$a]="${so#"$ROOT"/} missing (scripts/peers.sh could not build it; see $LOG/peers.log)" ;;
    mi2deb|je|tc)
      if [ ! -e "$so" ]; then
        pkg=$(deb_pkg "$a")
        if [ "$(id -u)" = 0 ]; then
          say "callgrind.sh: $so missing; installing Debian package $pkg"
          (apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$pkg"; }) >>"$LOG/apt.log" 2>&1
        fi
        [ -e "$so" ] || WHY[$a]="$so missing (install Debian package $pkg as root)"
      fi ;;
  esac
  SO[$a]=$so
done

# ---------------------------------------------------------------- one run
# run ALLOC SIZE COUNT OUTFILE -> 0 when valgrind exited 0 and malloc/free were served by the
# allocator; sets RUN_WHY otherwise.  Valgrind's stderr: $LOG/callgrind-ALLOC-SIZE-COUNT.err
RUN_WHY=""
run() {
  local a=$1 s=$2 n=$3 out=$4 so=${SO[$1]} err rc
  err=$LOG/callgrind-$a-$s-$n.err
  RUN_WHY=""
  local envs=(-u LD_PRELOAD)
  [ -n "$so" ] && envs=("LD_PRELOAD=$so")
  # (in a subshell whose stderr is dropped: bash's own "Aborted" notice when it dies)
  rc=$( { env "${envs[@]}" valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
            --callgrind-out-file="$out" "$BIN" "$n" "$s" >/dev/null 2>"$err"; echo $?; } 2>/dev/null)
  if [ "$rc" != 0 ]; then
    RUN_WHY=$(failure_reason "$a" "$s" "$err" "$rc")
    return 1
  fi
  # Who served the calls bench_pair's own code makes (malloc and free, 2 per pair)?
  if ! RUN_WHY=$(check_served "$out" "$n" "$so"); then return 1; fi
}

# check_served OUTFILE N SO -> 0 when malloc and free were served by SO (glibc when SO is
# empty); else prints why.  Read from callgrind's call graph:
#  - every hot call of the benchmark binary (count >= N/2: its malloc and free) lands in SO
#    (together at least 2N calls),
#    or in "???" under a name that SO exports: valgrind 3.19 names no object for code
#    outside an object's .text, e.g. tcmalloc's malloc/free in its `google_malloc` section;
#  - unless SO is glibc: glibc's malloc/free/_int_malloc/_int_free run fewer than N/2 times
#    (a library that forwards to glibc is not serving).
check_served() {
  local out=$1 n=$2 so=$3 want exports bad
  want=$(realpath -m "${so:-$LIBC}")
  exports=" $(nm -D --defined-only "$want" 2>/dev/null | awk '{ printf "%s ", $3 }')"
  bad=$(awk -v bin="$BIN" -v want="$want" -v libc="$LIBC" -v n="$n" -v notglibc="${so:+1}" -v exports="$exports" '
    BEGIN { min = n / 2 }
    function real(o,   c, r) {            # realpath, cached
      if (o == "???" || o == "") return o
      if (!(o in R)) { c = "realpath -m \"" o "\""; c | getline r; close(c); R[o] = r }
      return R[o] }
    /^ob=/  { ob = substr($0, 4); next }
    /^cob=/ { cob = substr($0, 5); next }
    /^cfn=/ { cfn = substr($0, 5); next }
    /^calls=/ {
      split($1, c, "="); callee = (cob == "") ? ob : cob
      if (ob == bin) hot[callee "\t" cfn] += c[2]
      if (notglibc && real(callee) == libc && real(ob) != libc && cfn ~ /^(malloc|free|__libc_malloc|__libc_free|_int_malloc|_int_free)$/)
        glibc[cfn] += c[2]
      cob = ""; next }
    END {
      for (k in hot) {
        if (hot[k] < min) continue
        split(k, p, "\t"); r = real(p[1])
        if (r == want || (r == "???" && index(exports, " " p[2] " "))) { served += hot[k]; continue }
        printf "%s%s in %s x%d", sep, p[2], p[1], hot[k]; sep = ", " }
      if (served < 2 * n) { printf "%sonly %d malloc/free calls from the benchmark reached it", sep, served; sep = ", " }
      for (f in glibc) if (glibc[f] >= min) { printf "%sglibc %s x%d", sep, f, glibc[f]; sep = ", " }
    }' "$out")
  [ -z "$bad" ] && return 0
  echo "malloc/free not served by $want: $bad"
  return 1
}

# Reason for a failed valgrind run: the program's own message (stderr lines that are not
# valgrind's), the fatal signal, and any mmap valgrind refused (found by a short rerun with
# --trace-syscalls=yes).
failure_reason() {
  local a=$1 s=$2 err=$3 rc=$4 msg sig mm so=${SO[$1]}
  msg=$(grep -v '^==[0-9]*==' "$err" | grep -v '^[[:space:]]*$' | head -n 2 | tr '\n' ' ' | sed 's/ *$//')
  sig=$(sed -n 's/.*Process terminating with default action of signal \([0-9]* ([A-Z]*)\).*/\1/p' "$err" | head -n 1)
  local envs=(-u LD_PRELOAD)
  [ -n "$so" ] && envs=("LD_PRELOAD=$so")
  mm=$(env "${envs[@]}" timeout 60 valgrind --tool=callgrind --callgrind-out-file=/dev/null --trace-syscalls=yes \
         "$BIN" 1 "$s" 2>&1 >/dev/null |
       sed -n 's/.*sys_mmap ( *0x[0-9a-f]*, \([0-9]*\),.*--> \[pre-fail\] Failure(\(0x[0-9a-f]*\)).*/\1 \2/p' | head -n 1)
  local r="${msg:-exit status $rc}"
  [ -n "$sig" ] && r="$r, killed by signal $sig"
  if [ -n "$mm" ]; then
    read -r bytes code <<<"$mm"
    r="$r; valgrind refused mmap of $(awk -v b="$bytes" 'BEGIN { if (b >= 2^30) printf "%.0f GiB", b / 2^30; else printf "%.0f MiB", b / 2^20 }') (error $((code)))"
    [ "$a" = sn ] && r="$r: snmalloc's pagemap reservation; valgrind's client address space is a compile-time limit (no option raises it)"
  fi
  echo "$r"
}

# total Ir of a callgrind.out file
ir_of() { sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$1" | head -n 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgrind.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- --annotate
if [ -n "$ANNOTATE" ]; then
  s=$ANNOTATE
  KEEP=$OUT/callgrind
  mkdir -p "$KEEP"
  status=0
  for a in $ALLOCS; do
    if [ -n "${WHY[$a]:-}" ]; then echo "$a: MISSING — ${WHY[$a]}"; status=1; continue; fi
    f0=$KEEP/callgrind.out.$a-$s-$N0; f1=$KEEP/callgrind.out.$a-$s-$N
    if ! run "$a" "$s" "$N0" "$f0" || ! run "$a" "$s" "$N" "$f1"; then
      echo "$a: FAIL — $RUN_WHY"; status=1; continue
    fi
    i0=$(ir_of "$f0"); i1=$(ir_of "$f1")
    echo
    printf '%s at %s bytes: %.2f instructions per malloc/free pair  ((Ir %s - %s) / %s)\n' \
      "$a" "$s" "$(awk -v a="$i0" -v b="$i1" -v d=$((N - N0)) 'BEGIN { print (b - a) / d }')" "$i1" "$i0" $((N - N0))
    echo "callgrind files: $f0 $f1"
    awk -v f0="$f0" -v d=$((N - N0)) -v top="$TOP" -v root="$ROOT/" '
      FNR == 1 { r = (FILENAME == f0) ? -1 : 1; ob = ""; file = ""; fn = ""; skip = 0 }
      /^ob=/ { ob = substr($0, 4); sub(/.*\//, "", ob); next }
      /^fl=/ || /^fi=/ || /^fe=/ {
        file = substr($0, 4); sub("^" root, "", file); sub(/^\/rustc\/[0-9a-f]+\//, "rustc:", file); next }
      /^fn=/ { fn = substr($0, 4); next }
      /^calls=/ { skip = 1; next }            # the next cost line is the call (inclusive), not self cost
      /^[0-9]/ {
        if (skip) { skip = 0; next }
        F[ob "\t" fn] += r * $2; S[file "\t" fn] += r * $2; L[file ":" $1 "\t" fn] += r * $2; T += r * $2 }
      function table(A, title,   k, n, i, j, t, keys, vals, shown) {
        n = 0
        for (k in A) if (A[k] / d >= 0.005 || A[k] / d <= -0.005) { n++; keys[n] = k; vals[n] = A[k] }
        for (i = 2; i <= n; i++) {             # insertion sort, largest first
          t = vals[i]; k = keys[i]
          for (j = i - 1; j >= 1 && vals[j] < t; j--) { vals[j + 1] = vals[j]; keys[j + 1] = keys[j] }
          vals[j + 1] = t; keys[j + 1] = k }
        printf "\n%s\n", title
        shown = 0
        for (i = 1; i <= n && i <= top; i++) {
          split(keys[i], p, "\t"); shown += vals[i]
          printf "%8.2f  %s  %s\n", vals[i] / d, p[1], p[2] }
        printf "%8.2f  (shown)   %8.2f  (all)\n", shown / d, T / d
      }
      END {
        table(F, "instructions/pair  object  function (self cost; inlined code counts in its caller)")
        table(S, "instructions/pair  source file  function (inlined code counts in its own file)")
        table(L, "instructions/pair  source line  function")
      }' "$f0" "$f1"
  done
  exit "$status"
fi

# ---------------------------------------------------------------- measure
mkdir -p "$(dirname "$CSV")"
echo "date,size,alloc,n0,n,ir_n0,ir_n,ir_per_pair,status" >"$CSV.tmp"
declare -A res=() fails=()
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
total=$(( $(wc -w <<<"$SIZES") * $(wc -w <<<"$ALLOCS") )); i=0
T0=$(date +%s)
for s in $SIZES; do
  for a in $ALLOCS; do
    i=$((i + 1))
    if [ -n "${WHY[$a]:-}" ]; then
      res[$s,$a]=MISSING; fails[$a]="MISSING: ${WHY[$a]}"
      echo "$date,$s,$a,$N0,$N,,,,MISSING" >>"$CSV.tmp"
      say "$(printf '[%d/%d] size=%-5s %-7s MISSING' "$i" "$total" "$s" "$a")"
      continue
    fi
    f0=$TMP/$a-$s-$N0.out; f1=$TMP/$a-$s-$N.out
    i0="" i1=""
    if run "$a" "$s" "$N0" "$f0" && i0=$(ir_of "$f0") && run "$a" "$s" "$N" "$f1" && i1=$(ir_of "$f1") &&
       [ -n "$i0" ] && [ -n "$i1" ]; then
      per=$(awk -v a="$i0" -v b="$i1" -v n0="$N0" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / (n - n0) }')
      res[$s,$a]=$per
      echo "$date,$s,$a,$N0,$N,$i0,$i1,$per,OK" >>"$CSV.tmp"
      say "$(printf '[%d/%d] size=%-5s %-7s %s instructions/pair' "$i" "$total" "$s" "$a" "$per")"
    else
      res[$s,$a]=FAIL
      [ -n "${fails[$a]:-}" ] || fails[$a]="FAIL: ${RUN_WHY:-no instruction count in the callgrind output}"
      echo "$date,$s,$a,$N0,$N,$i0,$i1,,FAIL" >>"$CSV.tmp"
      say "$(printf '[%d/%d] size=%-5s %-7s FAIL (%s)' "$i" "$total" "$s" "$a" "${RUN_WHY:0:100}")"
    fi
    rm -f "$f0" "$f1"
  done
done
mv "$CSV.tmp" "$CSV"

# ---------------------------------------------------------------- the table
echo
echo "Instructions per malloc/free pair, bench_pair_system under LD_PRELOAD (callgrind Ir: (Ir(N=$N) - Ir(N0=$N0)) / $((N - N0));"
echo "includes 13 instructions of benchmark loop per pair, the same for everyone)"
printf '%-6s' size; for a in $ALLOCS; do printf '%9s' "$a"; done
[[ " $ALLOCS " == *" hakmem "* ]] && printf '  %s' 'hakmem/best'
echo
for s in $SIZES; do
  printf '%-6s' "$s"
  for a in $ALLOCS; do printf '%9s' "${res[$s,$a]}"; done
  if [[ " $ALLOCS " == *" hakmem "* ]]; then
    # hakmem relative to the cheapest peer measured (<1: hakmem executes fewer instructions)
    rel=$(for a in $ALLOCS; do [ "$a" = hakmem ] || echo "$a ${res[$s,$a]}"; done |
          awk -v h="${res[$s,hakmem]}" '$2 ~ /^[0-9.]+$/ && (b == "" || $2 + 0 < b + 0) { b = $2; w = $1 }
               END { if (h ~ /^[0-9.]+$/ && b > 0) printf "%.2f (%s %s)", h / b, w, b; else printf "-" }')
    printf '  %s' "$rel"
  fi
  echo
done
for a in $ALLOCS; do [ -n "${fails[$a]:-}" ] && echo "  $a: ${fails[$a]}"; done
echo "(raw: $CSV; valgrind logs: $LOG/callgrind-*.err; $(($(date +%s) - T0)) s)"

[[ " $ALLOCS " == *" hakmem "* ]] && [ -n "${fails[hakmem]:-}" ] && exit 1
exit 0

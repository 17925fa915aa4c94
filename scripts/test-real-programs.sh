#!/usr/bin/env bash
# Run real programs (python3, git, sort, gcc, perl, and cheap extras) once
# without and once with LD_PRELOAD=$HAKMEM_SO and compare the results.
#
# usage: scripts/test-real-programs.sh [--quick] [WORKLOAD...]
#
#   --quick      smaller inputs (whole run < 1 min)
#   WORKLOAD     run only these (python git sort gcc perl awk sed tar bash)
#
# environment:
#   HAKMEM_SO            library to preload (default $PWD/target/release/libhakmem.so)
#   HAKMEM_REAL_TIMEOUT  per-command time limit in seconds (default 180, --quick 60)
#   HAKMEM_REAL_KEEP=1   keep the scratch directory (inputs, outputs, stderr)
#   HAKMEM_* flags other than HAKMEM_STATS/HAKMEM_VERBOSE are passed through to
#   the programs (so e.g. HAKMEM_TCACHE_TINY=0 tests that configuration).
#
# Per workload: "ok NAME (Xs plain, Ys preload)" or "FAIL NAME: reason" (followed
# by indented detail lines), then "N passed, M failed"; exit 1 if any failed,
# 2 on a usage/setup error.
#
# A workload passes when, under the preload, it exits with the same status as
# without it (which must be 0), prints byte-identical stdout, and nothing on
# stderr starts with "hakmem:" (nor does ld.so refuse the library).
#
# Last, "behind-jemalloc" (with the python workload, when libjemalloc.so.2 is
# installed): `ls -laR` preloaded as jemalloc:hakmem must run as without the
# preload and print exactly one "hakmem:" line saying to preload hakmem first;
# hakmem:jemalloc prints none.
# shellcheck disable=SC2016  # embedded perl/awk/sed/bash programs are single-quoted on purpose
set -euo pipefail

usage() { sed -n '2,/^# shellcheck/{/^# shellcheck/d; s/^# \{0,1\}//; p}' "$0"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

ALL_WORKLOADS=(python git sort gcc perl awk sed tar bash)
QUICK=0
SELECTED=()
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $arg" ;;
        *)
            [[ " ${ALL_WORKLOADS[*]} " == *" $arg "* ]] ||
                die "unknown workload '$arg' (known: ${ALL_WORKLOADS[*]})"
            SELECTED+=("$arg") ;;
    esac
done
((${#SELECTED[@]})) || SELECTED=("${ALL_WORKLOADS[@]}")

# Deterministic, allocator-independent environment for every run.
export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
unset LD_PRELOAD HAKMEM_STATS HAKMEM_VERBOSE PYTHONMALLOC

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REAL_DIR=$SCRIPT_DIR/real
for f in gen_inputs.py alloc_workload.py; do
    [[ -f $REAL_DIR/$f ]] || die "missing helper $REAL_DIR/$f"
done

SO=${HAKMEM_SO:-$PWD/target/release/libhakmem.so}
[[ -e $SO ]] || die "preload library not found: $SO (build it with ./build.sh, or set HAKMEM_SO=/path/to/lib.so)"
[[ -f $SO && -r $SO ]] || die "preload library is not a readable file: $SO"
SO=$(cd "$(dirname "$SO")" && pwd -P)/$(basename "$SO")   # absolute: workloads cd around

# ---- tools -----------------------------------------------------------------
need=(python3 git gcc perl objdump sort sha256sum head tail cut wc cp rm find
      mkdir mktemp timeout env cat cmp diff grep)
missing=()
for t in "${need[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
((${#missing[@]} == 0)) ||
    die "required tool(s) not found: ${missing[*]} (need python3, git, gcc, binutils, perl, coreutils, diffutils, grep)"
declare -A OPTIONAL_TOOL=([awk]="awk" [sed]="sed" [tar]="tar gzip" [bash]="bash")

# Use the real interpreter, not e.g. a pyenv shim script.
PYTHON=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
[[ -x $PYTHON ]] || die "cannot locate the python3 executable (got '$PYTHON')"

# ---- sizes -----------------------------------------------------------------
if ((QUICK)); then
    LINES=120000 TREE_FILES=80 CFUNCS=100 PY_SCALE=0.25 BASH_LINES=20000 SED_LINES=60000
    CMD_TIMEOUT=${HAKMEM_REAL_TIMEOUT:-60}
else
    LINES=1000000 TREE_FILES=300 CFUNCS=400 PY_SCALE=1.0 BASH_LINES=60000 SED_LINES=400000
    CMD_TIMEOUT=${HAKMEM_REAL_TIMEOUT:-180}
fi
[[ $CMD_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "HAKMEM_REAL_TIMEOUT must be a positive integer"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-real.XXXXXX")
cleanup() {
    if [[ ${HAKMEM_REAL_KEEP:-0} == 1 ]]; then
        echo "kept scratch directory $WORK" >&2
    else
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
IN=$WORK/inputs
mkdir -p "$IN"

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
secs() { local d=$(( ($2 - $1) / 100000 )); printf '%d.%d' $((d / 10)) $((d % 10)); }

# ---- preflight: does ld.so actually load the library? ----------------------
if ! maps=$(env LD_PRELOAD="$SO" cat /proc/self/maps 2>"$WORK/preflight.err"); then
    die "'env LD_PRELOAD=$SO cat /proc/self/maps' failed: $(head -c 600 "$WORK/preflight.err")"
fi
if ! grep -qF -- "$SO" <<<"$maps" || grep -q 'ld\.so' "$WORK/preflight.err"; then
    die "ld.so did not load $SO into 'cat': $(head -c 600 "$WORK/preflight.err")"
fi

flags=$(env | grep '^HAKMEM_[A-Z_]*=' | grep -v '^HAKMEM_\(SO\|REAL_[A-Z]*\)=' | sort | tr '\n' ' ' || true)
flags=${flags% }
echo "real-program tests: preload=$SO mode=$( ((QUICK)) && echo quick || echo full)${flags:+ flags: $flags}"

# ---- inputs (generated once, never under the preload) ----------------------
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }
t0=$(now_us)
if selected sort || selected perl || selected awk || selected sed || selected bash; then
    "$PYTHON" "$REAL_DIR/gen_inputs.py" lines "$LINES" 1 "$IN/lines.txt"
fi
if selected git || selected tar; then
    "$PYTHON" "$REAL_DIR/gen_inputs.py" tree "$TREE_FILES" 2 "$IN/tree"
fi
if selected gcc; then
    "$PYTHON" "$REAL_DIR/gen_inputs.py" csrc "$CFUNCS" 3 "$IN/big.c"
fi
echo "inputs generated in $(secs "$t0" "$(now_us)")s"

# ---- runner ----------------------------------------------------------------
# `pre CMD...` runs an external command under the preload in the preload run
# and plainly in the plain run, always with a time limit.  Only commands
# wrapped in `pre` are tested; glue (cp, sha256sum, ...) runs unpreloaded.
RUN_PRELOAD=
pre() {
    local rc=0
    if [[ -n $RUN_PRELOAD ]]; then
        timeout -k 5 "$CMD_TIMEOUT" env LD_PRELOAD="$RUN_PRELOAD" "$@" || rc=$?
    else
        timeout -k 5 "$CMD_TIMEOUT" "$@" || rc=$?
    fi
    if ((rc)); then
        printf 'workload: command exited %d:%s\n' "$rc" "$(printf ' %q' "$@" | cut -c1-200)" >&2
        return "$rc"
    fi
}

# ---- workloads (cwd: a fresh empty directory; stdout is compared) ----------
wl_python() {
    PYTHONMALLOC=malloc pre "$PYTHON" "$REAL_DIR/alloc_workload.py" "$PY_SCALE"
}

wl_git() {
    export HOME=$PWD/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    export GIT_AUTHOR_NAME="Hak Mem" GIT_AUTHOR_EMAIL=hakmem@example.invalid
    export GIT_COMMITTER_NAME="Hak Mem" GIT_COMMITTER_EMAIL=hakmem@example.invalid
    export GIT_TERMINAL_PROMPT=0 GIT_PAGER=cat
    mkdir -p "$HOME"
    g() { pre git -C repo -c gc.auto=0 -c maintenance.auto=false -c pack.threads=2 \
              -c core.autocrlf=false -c color.ui=false "$@"; }
    stamp() { export GIT_AUTHOR_DATE="@$((1700000000 + $1 * 3600)) +0000"
              export GIT_COMMITTER_DATE=$GIT_AUTHOR_DATE; }
    worktree() { find repo -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
                 cp -R "$IN/tree/$1/." repo/; }

    pre git init -q -b main repo
    worktree round1; g add -A; stamp 1; g commit -q -m "round1: import"
    worktree round2; g add -A; stamp 2; g commit -q -m "round2: edits and additions"
    g checkout -q -b feature
    cp -R "$IN/tree/roundf/." repo/; g add -A; stamp 3; g commit -q -m "feature: new dir"
    g checkout -q main
    worktree round3; g add -A; stamp 4; g commit -q -m "round3: deletions and renames"
    stamp 5; g merge -q --no-edit feature
    echo "== heads"; g rev-parse HEAD HEAD^1 HEAD^2 HEAD~2 HEAD~3
    echo "== status"; g status --porcelain
    echo "== log"; g log --graph --stat -M --format=fuller
    echo "== diff"
    g diff -M --stat HEAD~2 HEAD
    g diff -M --numstat HEAD~3 HEAD~2
    g diff -M HEAD~2 HEAD | sha256sum
    g diff --word-diff HEAD~3 HEAD~2 | sha256sum
    g log -p -M --format=%H | sha256sum
    local f
    f=$(g diff --name-only --diff-filter=M HEAD~3 HEAD~2)
    f=${f%%$'\n'*}
    echo "== blame $f"; g blame -M -C HEAD~2 -- "$f" | sha256sum
    echo "== grep"; g grep -n -e kari -e zenob HEAD | sha256sum
    g ls-tree -r HEAD | sha256sum
    g archive --format=tar HEAD | sha256sum
    g archive --format=tar.gz HEAD | sha256sum
    echo "== gc"; g gc -q --prune=now
    g fsck --full --strict
    g count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
    g rev-list --objects --all | sha256sum
    g log --stat -M --format=%H%n%s | sha256sum
    echo "== repack"; g repack -a -d -f -q --window=50 --depth=50
    g fsck --full --strict
    g archive --format=tar HEAD | sha256sum
}

wl_sort() {
    local input=$IN/lines.txt
    pre sort -S 256M "$input" | sha256sum
    pre sort -S 256M -n -k2,2 "$input" | sha256sum
    pre sort -S 256M --parallel=2 -k3,3g -k1,1 "$input" | sha256sum
    pre sort -S 256M -u -s -k1,1 "$input" | sha256sum
    pre sort -S 256M --parallel=2 -r -k5 "$input" | sha256sum
    # small buffer: spills to temporary files and merges them
    pre sort -S 2M -T . --batch-size=4 -k4,4 -k5 "$input" | sha256sum
}

wl_gcc() {
    pre gcc -O2 -g0 -frandom-seed=hakmem -c "$IN/big.c" -o big.o
    sha256sum big.o
    pre objdump -d big.o | sha256sum
    pre gcc -O1 -g -fdebug-prefix-map="$PWD"=. -frandom-seed=hakmem -c "$IN/big.c" -o big-g.o
    sha256sum big-g.o
    pre gcc big.o -o big
    pre ./big
}

# Word frequencies (hash of ~20k keys), a hash with ~all-unique keys whose values
# grow by appending, and per-bucket arrays that get sorted numerically.
PERL_PROG='
while (<>) {
    my @F = split;
    $w{$_}++ for @F[0, 4 .. $#F];
    $h{$F[3]} .= substr($F[0], 0, 2);
    push @{ $g{ substr($F[1], -2) } }, $F[2];
}
print "$w{$_} $_\n" for sort { $w{$b} <=> $w{$a} || $a cmp $b } keys %w;
my $t = 0; $t += length $h{$_} for keys %h;
print scalar(keys %h), " $t\n";
for my $k (sort keys %g) {
    my @s = sort { $a <=> $b } @{ $g{$k} };
    print "$k ", scalar(@s), " $s[0] $s[-1] $s[@s / 2]\n";
}'
wl_perl() {
    pre perl -e "$PERL_PROG" "$IN/lines.txt"
}

wl_awk() {
    pre awk '{ n[$1]++; s[$1] += $2; last[$1] = $4; len += length($0) }
             END { for (k in n) printf "%s %d %d %s\n", k, n[k], s[k] % 1000003, last[k]
                   print "total", NR, len }' "$IN/lines.txt" | sort | sha256sum
}

wl_sed() {
    head -n "$SED_LINES" "$IN/lines.txt" > part.txt
    pre sed -E 's/^([a-z]+) (-?[0-9]+)/\2 \1/; s/ath/ATH/g; /^-/d' part.txt | sha256sum
    # accumulate the whole input in the hold space (one ever-growing buffer)
    pre sed -n 'H; ${x; s/\n/,/g; p}' part.txt | sha256sum
}

wl_tar() {
    pre tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
        --format=gnu -C "$IN/tree" -cf - . | pre gzip -6 -n > t.tar.gz
    sha256sum t.tar.gz
    pre gzip -dc t.tar.gz | pre tar -tvf - | sha256sum
    mkdir out
    pre tar -xzf t.tar.gz -C out
    (cd out && find . -type f -exec sha256sum {} + | sort | sha256sum)
}

wl_bash() {
    pre bash -c '
        set -euo pipefail
        declare -A cnt sum
        mapfile -t L < <(head -n "$1" "$2")
        for l in "${L[@]}"; do
            read -r w n _ <<<"$l"
            cnt[$w]=$(( ${cnt[$w]:-0} + 1 )); sum[$w]=$(( ${sum[$w]:-0} + n % 1000 ))
        done
        s=""; for ((i = 0; i < 20000; i++)); do s+="${i}x"; done
        r=${s//x/yz}; printf "%d %d %s\n" "${#s}" "${#r}" "${r: -20}"
        arr=(); for ((i = 0; i < 50000; i++)); do arr+=("item$((i * 7919 % 50000))"); done
        unset "arr[7]" "arr[4000]"; printf "%d %s\n" "${#arr[@]}" "${arr[*]:100:5}"
        for k in "${!cnt[@]}"; do printf "%s %d %d\n" "$k" "${cnt[$k]}" "${sum[$k]}"; done | sort
    ' _ "$BASH_LINES" "$IN/lines.txt"
}

# ---- driver ----------------------------------------------------------------
describe_rc() {
    local rc=$1
    if ((rc == 124)); then
        echo "exit 124 (a command hit the ${CMD_TIMEOUT}s time limit)"
    elif ((rc > 128)); then
        echo "exit $rc (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo "?"))"
    else
        echo "exit $rc"
    fi
}

# run_once NAME MODE: runs wl_NAME in $WORK/NAME.MODE; sets RC and ELAPSED.
run_once() {
    local name=$1 mode=$2 dir=$WORK/$1.$2 t0
    mkdir -p "$dir/cwd"
    if [[ $mode == preload ]]; then RUN_PRELOAD=$SO; else RUN_PRELOAD=; fi
    t0=$(now_us)
    set +e
    (
        set -eE -o pipefail
        trap 'echo "workload: stopped at (exit $?): $BASH_COMMAND" >&2' ERR
        cd "$dir/cwd"
        "wl_$name"
    ) <<<"" >"$dir/stdout" 2>"$dir/stderr"
    RC=$?
    set -e
    ELAPSED=$(secs "$t0" "$(now_us)")
}

PASSED=0 FAILED=0
detail() { sed 's/^/    | /' | cut -c1-300; }

for name in "${SELECTED[@]}"; do
    if [[ -n ${OPTIONAL_TOOL[$name]:-} ]]; then
        absent=
        for t in ${OPTIONAL_TOOL[$name]}; do command -v "$t" >/dev/null 2>&1 || absent+=" $t"; done
        if [[ -n $absent ]]; then echo "skip $name: not installed:$absent"; continue; fi
    fi

    run_once "$name" plain;   rc_plain=$RC;   t_plain=$ELAPSED
    if ((rc_plain != 0)); then
        echo "FAIL $name: workload fails even without the preload ($(describe_rc "$rc_plain"))"
        tail -n 5 "$WORK/$name.plain/stderr" | detail
        FAILED=$((FAILED + 1)); continue
    fi
    run_once "$name" preload; rc_pre=$RC;     t_pre=$ELAPSED

    p=$WORK/$name.plain d=$WORK/$name.preload
    reasons=() details=()
    if ((rc_pre != rc_plain)); then
        reasons+=("$(describe_rc "$rc_pre") under preload, exit $rc_plain without")
        details+=("$(tail -n 5 "$d/stderr")")
    fi
    if hl=$(grep -m 3 '^hakmem:' "$d/stderr"); then
        reasons+=("stderr has hakmem: lines")
        details+=("$hl")
    fi
    if ll=$(grep -m 3 -E 'ld\.so|cannot be preloaded' "$d/stderr"); then
        reasons+=("ld.so complained about the library")
        details+=("$ll")
    fi
    if ! cmp -s "$p/stdout" "$d/stdout"; then
        line=$(cmp "$p/stdout" "$d/stdout" 2>&1 | grep -o 'line [0-9]*' | grep -o '[0-9]*' || true)
        if [[ -n $line ]]; then
            reasons+=("stdout differs from line $line")
            details+=("$(printf 'plain:   %s\npreload: %s' "$(sed -n "${line}p" "$p/stdout")" "$(sed -n "${line}p" "$d/stdout")")")
        else
            reasons+=("stdout differs ($(cmp "$p/stdout" "$d/stdout" 2>&1 || true))")
        fi
    fi

    if ((${#reasons[@]} == 0)); then
        echo "ok $name (${t_plain}s plain, ${t_pre}s preload)"
        PASSED=$((PASSED + 1))
    else
        joined=$(printf '%s; ' "${reasons[@]}")
        echo "FAIL $name: ${joined%; } (${t_plain}s plain, ${t_pre}s preload)"
        for x in "${details[@]}"; do [[ -z $x ]] || printf '%s\n' "$x" | detail; done
        FAILED=$((FAILED + 1))
    fi
done

# ---- behind another allocator ---------------------------------------------
# LD_PRELOAD=other.so:hakmem.so: the other allocator is the process's malloc and
# the symbols it lacks bind to hakmem, which must notice, say so in one line and
# pass those calls to the other allocator (not mix blocks: that SEGVs).  Run
# with jemalloc when it is installed (Debian: libjemalloc2).
# (awk reads all of ldconfig's output: exiting early would kill ldconfig with
# SIGPIPE, which pipefail and set -e turn into the end of this script)
OTHER=$(ldconfig -p 2>/dev/null | awk '/libjemalloc\.so\.2 .*x86-64/ && !found { print $NF; found = 1 }')
if [[ -z $OTHER ]]; then
    echo "skip behind-jemalloc: libjemalloc.so.2 not installed"
elif selected python; then
    d=$WORK/behind; mkdir -p "$d"
    prog=(ls -laR /usr/lib/python3)
    set +e
    timeout -k 5 "$CMD_TIMEOUT" "${prog[@]}" >"$d/plain" 2>/dev/null; rc_plain=$?
    timeout -k 5 "$CMD_TIMEOUT" env LD_PRELOAD="$OTHER:$SO" "${prog[@]}" >"$d/out" 2>"$d/err"; rc_behind=$?
    timeout -k 5 "$CMD_TIMEOUT" env LD_PRELOAD="$SO:$OTHER" "${prog[@]}" >"$d/out2" 2>"$d/err2"; rc_first=$?
    set -e
    reasons=()
    ((rc_behind == rc_plain)) || reasons+=("$OTHER:hakmem exited $rc_behind, $rc_plain without")
    cmp -s "$d/plain" "$d/out" || reasons+=("$OTHER:hakmem stdout differs")
    n=$(grep -c '^hakmem:' "$d/err" || true)
    if ((n != 1)) || ! grep -q '^hakmem:.*preload' "$d/err"; then
        reasons+=("$OTHER:hakmem printed $n hakmem: line(s), want one that says to preload hakmem first")
    fi
    ((rc_first == rc_plain)) || reasons+=("hakmem:$OTHER exited $rc_first")
    ! grep -q '^hakmem:' "$d/err2" || reasons+=("hakmem:$OTHER printed a hakmem: line")
    if ((${#reasons[@]} == 0)); then
        echo "ok behind-jemalloc ($(head -c 120 "$d/err"))"
        PASSED=$((PASSED + 1))
    else
        joined=$(printf '%s; ' "${reasons[@]}")
        echo "FAIL behind-jemalloc: ${joined%; }"
        head -n 5 "$d/err" | detail
        FAILED=$((FAILED + 1))
    fi
fi

# ---- under valgrind ---------------------------------------------------------
# libhakmem.so has a SONAME, so memcheck can be told to treat it as the
# allocator (docs/TROUBLESHOOTING.md): --soname-synonyms=somalloc=libhakmem.so.
# A heap overflow in a tiny C program must then be reported as such.
if ! command -v valgrind >/dev/null 2>&1; then
    echo "skip valgrind: valgrind not installed"
elif selected python; then
    d=$WORK/valgrind; mkdir -p "$d"
    printf '%s\n' '#include <stdlib.h>' \
        'int main(void) { char *p = malloc(32); p[40] = 1; free(p); return 0; }' >"$d/overflow.c"
    reasons=()
    dynamic=$(readelf -d "$SO" 2>&1 || true)
    if ! grep -q 'SONAME.*\[libhakmem\.so\]' <<<"$dynamic"; then
        reasons+=("libhakmem.so has no SONAME libhakmem.so")
    fi
    if cc -g -O0 "$d/overflow.c" -o "$d/overflow" 2>"$d/cc.err"; then
        set +e
        timeout -k 5 "$CMD_TIMEOUT" env LD_PRELOAD="$SO" valgrind -q --soname-synonyms=somalloc=libhakmem.so \
            "$d/overflow" >/dev/null 2>"$d/err"
        set -e
        grep -q 'Invalid write of size 1' "$d/err" || reasons+=("memcheck did not report the overflow")
        grep -q 'bytes after a block of size 32' "$d/err" || reasons+=("memcheck did not see the 32-byte block")
    else
        reasons+=("cc failed: $(head -n 1 "$d/cc.err")")
    fi
    if ((${#reasons[@]} == 0)); then
        echo "ok valgrind (memcheck with --soname-synonyms=somalloc=libhakmem.so sees the overflow)"
        PASSED=$((PASSED + 1))
    else
        joined=$(printf '%s; ' "${reasons[@]}")
        echo "FAIL valgrind: ${joined%; }"
        head -n 8 "$d/err" 2>/dev/null | detail
        FAILED=$((FAILED + 1))
    fi
fi

if ((FAILED)) && [[ ${HAKMEM_REAL_KEEP:-0} != 1 ]]; then
    echo "(rerun with HAKMEM_REAL_KEEP=1 to keep outputs and stderr of each run)"
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))

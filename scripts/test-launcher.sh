#!/usr/bin/env bash
# Test the `hakmem` launcher (crates/hakmem-cli) end to end: `hakmem run` on
# python3, a C program and a shell pipeline, flags, LD_PRELOAD order, the
# refusals (static binary, setuid), exit statuses and signals, and
# `hakmem check`.
#
# usage: scripts/test-launcher.sh
#
# Needs target/release/hakmem and target/release/libhakmem.so (./build.sh).
# environment:
#   HAKMEM_CLI   the launcher to test (default target/release/hakmem); it finds
#                the library next to itself
#
# Prints "PASS NAME", "FAIL NAME: reason" (with the command's status and
# output indented below) or "SKIP NAME: reason" per case, then
# "N passed, M failed, K skipped". Exit 1 if any case failed, 2 on a setup
# error. About 2 seconds. The check-served cases need a library that writes
# HAKMEM_STATS_FILE (JSON statistics); they fail, saying so, with one that does not.
# shellcheck disable=SC2016  # the commands run under the launcher are single-quoted on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
H=${HAKMEM_CLI:-$ROOT/target/release/hakmem}
die() { printf 'test-launcher: %s\n' "$*" >&2; exit 2; }
[[ -x $H ]] || die "$H missing: build it with ./build.sh"
LIBFILE=$(dirname "$H")/libhakmem.so
[[ -f $LIBFILE ]] || die "$LIBFILE missing: build it with ./build.sh"
LIB=$(realpath "$LIBFILE")
command -v cc >/dev/null || die "cc missing"
command -v python3 >/dev/null || die "python3 missing"

# The launcher's choices must come from the command line alone.
unset LD_PRELOAD HAKMEM_LIB HAKMEM_STATS HAKMEM_STATS_FILE HAKMEM_VERBOSE
export LC_ALL=C

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-launcher-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0 skipped=0
OUT="" ERR="" RC=0

# t CMD...: run CMD (10 s limit), setting OUT, ERR and RC.
t() {
    set +e
    timeout -k 2 10 "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
    set -e
    OUT=$(cat "$TMP/out")
    ERR=$(cat "$TMP/err")
}

pass() { echo "PASS $1"; passed=$((passed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
fail() {
    echo "FAIL $1: $2"
    echo "    status $RC"
    # (repeated lines shown once: every process of a command may say the same)
    [[ -z $OUT ]] || awk '!seen[$0]++ { print "    stdout: " $0 }' <<<"$OUT" | head -n 8
    [[ -z $ERR ]] || awk '!seen[$0]++ { print "    stderr: " $0 }' <<<"$ERR" | head -n 8
    failed=$((failed + 1))
}

# expect NAME STATUS STDOUT STDERR_ERE: judge the last t. STDOUT is compared
# exactly ("-": not checked); STDERR_ERE must match a line of stderr ("-":
# not checked).
expect() {
    local name=$1 status=$2 stdout=$3 stderr_re=$4
    if [[ $RC != "$status" ]]; then
        fail "$name" "exit status $RC, expected $status"
    elif [[ $stdout != - && $OUT != "$stdout" ]]; then
        fail "$name" "stdout $(printf %q "$OUT"), expected $(printf %q "$stdout")"
    elif [[ $stderr_re != - ]] && ! grep -Eq -- "$stderr_re" <<<"$ERR"; then
        fail "$name" "no stderr line matching /$stderr_re/"
    else
        pass "$name"
    fi
}

echo "launcher $H, library $LIB"

# --- help and usage ---------------------------------------------------------
t "$H" --help
if [[ $RC == 0 ]] && grep -Eq '^  hakmem run \[OPTIONS\]' <<<"$OUT"; then
    pass help
else
    fail help "expected status 0 and the usage on stdout"
fi
t "$H" run
expect usage-no-command 2 "" '^hakmem: no command given'
t "$H" run --flag NOEQUALS -- true
expect usage-bad-flag-syntax 2 "" '^hakmem: --flag NOEQUALS: expected NAME=VALUE'

# --- run: python3, a C program, a pipeline ------------------------------------
t "$H" run -- python3 -c 'print(sum(range(10)))'
expect run-python3 0 45 -
# ... and hakmem really is in the process, first in LD_PRELOAD.
t "$H" run -- python3 -c 'import os; print("libhakmem.so" in open("/proc/self/maps").read(), os.environ["LD_PRELOAD"])'
expect run-python3-preloaded 0 "True $LIB" -

cat >"$TMP/prog.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Allocates, checks the memory, and names the object malloc resolved to. */
int main(int argc, char **argv) {
    size_t total = 0;
    for (int i = 1; i <= 1000; i++) {
        char *p = malloc((size_t)i * 8);
        if (!p) return 2;
        memset(p, i & 0xff, (size_t)i * 8);
        total += (unsigned char)p[i * 8 - 1];
        free(p);
    }
    Dl_info info;
    void *(*volatile m)(size_t) = malloc;
    const char *where = dladdr((void *)m, &info) && info.dli_fname ? info.dli_fname : "?";
    const char *slash = strrchr(where, '/');
    printf("%zu %s %s\n", total, argc > 1 ? argv[1] : "-", slash ? slash + 1 : where);
    return 0;
}
EOF
if cc -O2 -Wall -Wextra "$TMP/prog.c" -o "$TMP/prog" -ldl 2>"$TMP/cc.err"; then
    t "$H" run -- "$TMP/prog" arg1
    # sum over i of (i & 0xff) for i = 1..1000 = 3 * 32640 + sum(1..232) = 124 948
    expect run-c-program 0 "124948 arg1 libhakmem.so" -
else
    RC=$? OUT="" ERR=$(cat "$TMP/cc.err")
    fail run-c-program "cc failed"
fi

t "$H" run -- sh -c 'seq 1000 | sort -n | tail -1'
expect run-pipeline 0 1000 -

# CMD found through PATH, argv[0] kept as typed.
t "$H" run -- sh -c 'echo "$0"'
expect run-argv0 0 sh -

# --- LD_PRELOAD composition -----------------------------------------------------
t env LD_PRELOAD="libm.so.6 libdl.so.2" "$H" run -- sh -c 'echo "$LD_PRELOAD"'
expect preload-keeps-entries-after 0 "$LIB:libm.so.6 libdl.so.2" -
t env LD_PRELOAD="libm.so.6:$LIB" "$H" run -- sh -c 'echo "$LD_PRELOAD"'
expect preload-moves-hakmem-first-once 0 "$LIB:libm.so.6" -
t "$H" env --flag tcache_mid=3
expect env-prints-exports 0 "export LD_PRELOAD=$LIB
export HAKMEM_TCACHE_MID=3" -

# --- finding the library ---------------------------------------------------------
mkdir -p "$TMP/lonely" "$TMP/inst/bin" "$TMP/inst/lib"
cp "$H" "$TMP/lonely/hakmem"
cp "$H" "$TMP/inst/bin/hakmem"
cp "$LIB" "$TMP/inst/lib/libhakmem.so"
t "$TMP/lonely/hakmem" run -- /bin/true
expect lib-missing 127 "" '^hakmem: libhakmem.so not found: looked for .*/lonely/libhakmem.so and .*/lonely/../lib/libhakmem.so'
t "$TMP/inst/bin/hakmem" run -- sh -c 'echo "$LD_PRELOAD"'
expect lib-in-../lib 0 "$TMP/inst/lib/libhakmem.so" -
t env HAKMEM_LIB="$TMP/inst/lib/libhakmem.so" "$TMP/lonely/hakmem" run -- sh -c 'echo "$LD_PRELOAD"'
expect lib-from-HAKMEM_LIB 0 "$TMP/inst/lib/libhakmem.so" -
t "$H" run --lib "$TMP/nonexistent.so" -- /bin/true
expect lib-option-missing 127 "" "^hakmem: $TMP/nonexistent.so \(from --lib\): "
t "$H" run --lib /bin/true -- /bin/true
expect lib-not-a-library 126 "" '^hakmem: /(usr/)?bin/true: not a 64-bit ELF shared library'

# --- flags ------------------------------------------------------------------------
t "$H" run --flag VERBOSE=1 -- /bin/true
expect flag-verbose-table 0 "" 'HAKMEM_TCACHE_TINY'
t "$H" run --verbose --flag tcache_tiny=64 -- /bin/true
expect flag-value-reaches-hakmem 0 "" '^hakmem: +HAKMEM_TCACHE_TINY=64 '
t "$H" run --flag HAKMEM_TCACHE_TINY=999999 -- /bin/true
expect flag-bad-value 0 "" '^hakmem: HAKMEM_TCACHE_TINY=999999: '
t "$H" run --stats -- python3 -c 'pass'
expect run-stats 0 "" '^hakmem: '
t "$H" run --json -- python3 -c 'pass'
if grep -q 'HAKMEM_STATS=json: ' <<<"$ERR"; then
    fail run-json "the library refuses HAKMEM_STATS=json (waits on the library's JSON statistics)"
else
    expect run-json 0 "" '"mode" *: *"active"'
fi

# --- exit status and signals -----------------------------------------------------
t "$H" run -- sh -c 'exit 7'
expect status-propagates 7 "" -
t "$H" run -- sh -c 'kill -TERM $$'
expect status-signal-128+n 143 "" -
t "$H" run -- no-such-command-hakmem-test
expect status-not-found 127 "" '^hakmem: no-such-command-hakmem-test: command not found'
printf 'echo x\n' >"$TMP/noexec"
t "$H" run -- "$TMP/noexec"
expect status-not-executable 126 "" 'permission denied'

# SIGTERM to the launcher reaches the command: both end at once.
start=$SECONDS
set +e
"$H" run -- sleep 20 &
lpid=$!
sleep 0.3
kill -TERM "$lpid"
wait "$lpid"
RC=$?
set -e
OUT="" ERR=""
if ((SECONDS - start > 5)); then
    fail sigterm-forwarded "the launcher took $((SECONDS - start)) s to end after SIGTERM"
else
    expect sigterm-forwarded 143 "" -
fi

# --- refusals ------------------------------------------------------------------------
printf 'int main(void) { return 42; }\n' >"$TMP/static.c"
if [[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] && cc -static "$TMP/static.c" -o "$TMP/static" 2>/dev/null; then
    t "$H" run -- "$TMP/static"
    # 126, not the program's 42: it must not have run.
    expect refuse-static 126 "" "^hakmem: cannot use hakmem for $TMP/static: it is statically linked"
    printf '#!%s\n' "$TMP/static" >"$TMP/static-script"
    chmod +x "$TMP/static-script"
    t "$H" run -- "$TMP/static-script"
    expect refuse-script-with-static-interpreter 126 "" "its interpreter $TMP/static is statically linked"
    t "$H" check -- "$TMP/static"
    expect check-refuses-static 126 "" "^hakmem: cannot use hakmem for .*statically linked"
    if cc -static-pie -fPIE "$TMP/static.c" -o "$TMP/static-pie" 2>/dev/null; then
        t "$H" run -- "$TMP/static-pie"
        expect refuse-static-pie 126 "" "statically linked \(static-pie\)"
    else
        skip refuse-static-pie "cc -static-pie does not work here"
    fi
else
    skip refuse-static "no static libc (/usr/lib/x86_64-linux-gnu/libc.a): cannot build a static binary"
fi

# setuid: secure-execution mode (where ld.so ignores LD_PRELOAD) needs the
# effective uid to change, so the copy of /bin/true is given to nobody; a
# setuid program owned by the caller itself runs normally, preload and all.
cp /bin/true "$TMP/suid-true"
nosuid=$(python3 -c 'import os,sys; print(int(bool(os.statvfs(sys.argv[1]).f_flag & os.ST_NOSUID)))' "$TMP")
if [[ $(id -u) != 0 ]]; then
    skip refuse-setuid "needs root (to give the copy of /bin/true to another user)"
elif [[ $nosuid == 1 ]]; then
    skip refuse-setuid "$TMP is on a nosuid file system (setuid bits are ignored there)"
else
    chmod u+s "$TMP/suid-true"
    t "$H" run -- "$TMP/suid-true"
    expect setuid-own-file-runs 0 "" -
    chown 65534 "$TMP/suid-true"
    chmod u+s "$TMP/suid-true"
    t "$H" run -- "$TMP/suid-true"
    expect refuse-setuid 126 "" "^hakmem: cannot use hakmem for $TMP/suid-true: it is set-user-ID \(owner uid 65534\)"
fi

# --- check --------------------------------------------------------------------------
waits=""
grep -q HAKMEM_STATS_FILE "$LIB" ||
    waits=" (waits on the library: $LIB does not know HAKMEM_STATS_FILE yet)"
t "$H" check -- python3 -c 'print(sum(range(10)))'
if [[ $RC == 0 && $OUT == 45 ]] && grep -Eq '^hakmem check: hakmem served [0-9]+ process' <<<"$ERR" &&
    grep -Eq '^  pid [0-9]+ .*allocs +[1-9]' <<<"$ERR"; then
    pass check-served-python3
else
    fail check-served-python3 "expected status 0, stdout 45 and 'hakmem check: hakmem served N process(es)'$waits"
fi
# A served C program: the stats name it and count its allocations.
if [[ -x $TMP/prog ]]; then
    t "$H" check -- "$TMP/prog"
    if [[ $RC == 0 ]] && grep -Eq '^hakmem check: hakmem served 1 process of ' <<<"$ERR"; then
        pass check-served-c-program
    else
        fail check-served-c-program "expected status 0 and 'hakmem served 1 process'$waits"
    fi
fi
# Without the preload: env clears LD_PRELOAD and execs true, so no process
# with hakmem exits normally.
t "$H" check -- env -u LD_PRELOAD /bin/true
expect check-not-loaded 1 "" '^hakmem check: hakmem was not loaded'
t "$H" check -- sh -c 'kill -KILL $$'
expect check-killed 1 "" '^hakmem check: .*killed by SIGKILL, signal 9'
# The statistics directory is removed afterwards.
mkdir "$TMP/checktmp"
t env TMPDIR="$TMP/checktmp" "$H" check -- /bin/true
if [[ -n $(ls -A "$TMP/checktmp") ]]; then
    fail check-cleans-up "left $(ls -A "$TMP/checktmp") in TMPDIR"
else
    pass check-cleans-up
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))

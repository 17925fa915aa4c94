#!/usr/bin/env bash
# scripts/peers.sh — build the strongest peer allocators as preloadable shared libraries.
#
#   scripts/peers.sh              build what is missing or stale, verify it, print one line per peer
#   scripts/peers.sh --rebuild    rebuild every peer, even when the cached .so is current
#   scripts/peers.sh --list       print NAME=PATH for every peer already built (builds nothing);
#                                 exit 1 when there is none
#
# Peers (all built from the C/C++ sources that crates.io packages bundle, so no network
# access beyond the crate registry is needed):
#   target/peers/libmimalloc3.so  mimalloc v3  (crate libmimalloc-sys, c_src/mimalloc/v3)
#   target/peers/libmimalloc2.so  mimalloc v2  (same crate, c_src/mimalloc/v2: the tree its
#                                 `v2` feature selects; the crate ships both trees)
#   target/peers/libsnmalloc.so   snmalloc     (crate snmalloc-sys, upstream/: the
#                                 `snmallocshim` LD_PRELOAD library of snmalloc's CMakeLists)
# Use: LD_PRELOAD=$PWD/target/peers/libsnmalloc.so prog   (the Debian mimalloc that build.sh
# installs is 2.0.x; these are the current releases).
#
# How: a throwaway cargo project in target/peers/fetch/ depends on the two crates (pinned
# below); `cargo fetch` unpacks them into $CARGO_HOME/registry/src/ and `cargo metadata`
# says where.  The crates' build.rs is not used: each library is compiled here with cc/c++
# (no cmake needed), with the release flags and defines that upstream's CMakeLists.txt uses
# for its shared, malloc-overriding library (see build_mimalloc and build_snmalloc).
#
# Each .so is verified before it counts: `nm -D --defined-only` exports malloc and free,
# `LD_PRELOAD=so /bin/true` exits 0, and target/peers/check (from check.c, written below)
# run under the preload mallocs/frees 1e5 blocks and checks with dladdr that `malloc`
# resolves into that .so (for mimalloc also that mi_version() is the expected release).
# A peer whose build or verification fails is skipped with a message (its .so removed);
# the script exits 1 only when no peer is available.
#
# Cache: a peer whose .so is newer than this script and whose crate version in
# target/peers/VERSIONS matches the one requested is left alone (no fetch, no build).
# target/peers/VERSIONS: one line per built peer, "name crate crate_version upstream_version".
# Build logs (compiler command and output): target/peers/logs/NAME.log.
#
# Environment: MIMALLOC_SYS_VERSION (default 0.1.49), SNMALLOC_SYS_VERSION (default 0.7.6):
#              exact crate versions to build; CC, CXX: compilers (default cc, c++).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SELF=$ROOT/scripts/peers.sh
PEERS=$ROOT/target/peers
LOGS=$PEERS/logs
VERSIONS=$PEERS/VERSIONS
CC=${CC:-cc}
CXX=${CXX:-c++}
MIMALLOC_SYS_VERSION=${MIMALLOC_SYS_VERSION:-0.1.49}
SNMALLOC_SYS_VERSION=${SNMALLOC_SYS_VERSION:-0.7.6}
ALL_PEERS="mimalloc3 mimalloc2 snmalloc"

REBUILD=0
LIST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) REBUILD=1; shift ;;
    --list) LIST=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "peers.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

so_of() { echo "$PEERS/lib$1.so"; }
crate_of() { case "$1" in mimalloc*) echo libmimalloc-sys ;; snmalloc) echo snmalloc-sys ;; esac; }
want_version_of() { case "$1" in mimalloc*) echo "$MIMALLOC_SYS_VERSION" ;; snmalloc) echo "$SNMALLOC_SYS_VERSION" ;; esac; }
# the VERSIONS line of a peer ("" when none)
versions_line() { [ -f "$VERSIONS" ] && awk -v n="$1" '$1 == n' "$VERSIONS" | tail -n 1; }

# ---------------------------------------------------------------- --list
if [ "$LIST" = 1 ]; then
  found=0
  for p in $ALL_PEERS; do
    so=$(so_of "$p")
    if [ -f "$so" ]; then echo "$p=$so"; found=1; fi
  done
  [ "$found" = 1 ] || { echo "peers.sh: no peer built yet (run scripts/peers.sh)" >&2; exit 1; }
  exit 0
fi

mkdir -p "$PEERS" "$LOGS"

# ---------------------------------------------------------------- what needs building
cached() { # peer -> 0 when its .so is current
  local so line
  so=$(so_of "$1")
  [ "$REBUILD" = 0 ] && [ -f "$so" ] && [ "$so" -nt "$SELF" ] || return 1
  line=$(versions_line "$1")
  [ "$(echo "$line" | awk '{print $3}')" = "$(want_version_of "$1")" ]
}
TODO=""
for p in $ALL_PEERS; do cached "$p" || TODO="$TODO $p"; done

# ---------------------------------------------------------------- fetch the crate sources
# Sets MI_DIR / SN_DIR to the unpacked crate directories (empty when unavailable).
MI_DIR="" SN_DIR=""
fetch_crates() {
  local fetch=$PEERS/fetch meta
  mkdir -p "$fetch"
  # [workspace] makes this its own workspace (it lies under hakmem's).  Nothing is built here.
  cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "hakmem-peers-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
libmimalloc-sys = { version = "=$MIMALLOC_SYS_VERSION", default-features = false }
snmalloc-sys = { version = "=$SNMALLOC_SYS_VERSION", default-features = false }

[workspace]
EOF
  : >"$fetch/lib.rs"
  echo "peers.sh: fetching libmimalloc-sys $MIMALLOC_SYS_VERSION and snmalloc-sys $SNMALLOC_SYS_VERSION from the crate registry" >&2
  if ! (cd "$fetch" && cargo fetch -q) >"$LOGS/fetch.log" 2>&1; then
    echo "peers.sh: cargo fetch failed:" >&2; tail -n 15 "$LOGS/fetch.log" >&2
    return 1
  fi
  meta=$(cd "$fetch" && cargo metadata --format-version 1 --offline 2>>"$LOGS/fetch.log") || {
    echo "peers.sh: cargo metadata failed (see $LOGS/fetch.log)" >&2; return 1; }
  # package name + version -> directory of its Cargo.toml (manifest_path); without python3,
  # the registry's usual unpack location
  pkg_dir() {
    if ! command -v python3 >/dev/null; then
      ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$1-$2" 2>/dev/null | head -n 1
      return
    fi
    printf '%s' "$meta" | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == sys.argv[1] and p["version"] == sys.argv[2]:
        print(os.path.dirname(p["manifest_path"]))' "$1" "$2"
  }
  MI_DIR=$(pkg_dir libmimalloc-sys "$MIMALLOC_SYS_VERSION")
  SN_DIR=$(pkg_dir snmalloc-sys "$SNMALLOC_SYS_VERSION")
  echo "fetch: libmimalloc-sys -> ${MI_DIR:-?}; snmalloc-sys -> ${SN_DIR:-?}" >>"$LOGS/fetch.log"
}

# ---------------------------------------------------------------- the check program
# Run under LD_PRELOAD=SO: check SO LABEL [MI_VERSION].  Mallocs and frees 1e5 blocks
# (in the main thread and in a second thread, with calloc/realloc/free in between and the
# contents checked), then checks that `malloc` as the process resolves it lives in SO and,
# when MI_VERSION is given, that mi_version() returns it.
CHECK=$PEERS/check
build_check() {
  [ -x "$CHECK" ] && [ "$CHECK" -nt "$SELF" ] && return 0
  cat >"$PEERS/check.c" <<'EOF'
/* check.c — written by scripts/peers.sh: is the preloaded .so really serving malloc? */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 100000

static void *churn(void *arg)
{
    void **blocks = malloc(N * sizeof *blocks);
    if (!blocks) { fprintf(stderr, "check: malloc failed\n"); exit(1); }
    unsigned seed = (unsigned)(size_t)arg;
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t size = 1 + (seed >> 8) % ((i % 100 == 0) ? 70000 : 1024);
        unsigned char *p = (i % 7 == 0) ? calloc(1, size) : malloc(size);
        if (!p) { fprintf(stderr, "check: allocation of %zu failed\n", size); exit(1); }
        if (i % 7 == 0 && (p[0] != 0 || p[size - 1] != 0)) { fprintf(stderr, "check: calloc not zeroed\n"); exit(1); }
        p[0] = (unsigned char)i;
        if (size > 1) p[size - 1] = (unsigned char)(i >> 8);
        if (i % 13 == 0) {
            p = realloc(p, size * 2);
            if (!p || p[0] != (unsigned char)i) { fprintf(stderr, "check: realloc lost data\n"); exit(1); }
        }
        blocks[i] = p;
    }
    for (int i = 0; i < N; i++) {
        if (((unsigned char *)blocks[i])[0] != (unsigned char)i) { fprintf(stderr, "check: block %d corrupted\n", i); exit(1); }
        free(blocks[i]);
    }
    free(blocks);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: check SO LABEL [MI_VERSION]\n"); return 2; }
    churn((void *)1);
    pthread_t t;
    if (pthread_create(&t, NULL, churn, (void *)2) != 0 || pthread_join(t, NULL) != 0) {
        fprintf(stderr, "check: thread failed\n");
        return 1;
    }

    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    if (!m || !dladdr(m, &info) || !info.dli_fname) { fprintf(stderr, "check: cannot locate malloc\n"); return 1; }
    char want[PATH_MAX], got[PATH_MAX];
    if (!realpath(argv[1], want) || !realpath(info.dli_fname, got) || strcmp(want, got) != 0) {
        fprintf(stderr, "check: malloc resolves to %s, not %s\n", info.dli_fname, argv[1]);
        return 1;
    }
    if (argc > 3) {
        int (*mi_version)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "mi_version");
        if (!mi_version || mi_version() != atoi(argv[3])) {
            fprintf(stderr, "check: mi_version() is %d, expected %s\n", mi_version ? mi_version() : -1, argv[3]);
            return 1;
        }
    }
    printf("peer OK: %s %s\n", argv[1], argv[2]);
    return 0;
}
EOF
  $CC -O2 -pthread "$PEERS/check.c" -o "$CHECK" -ldl >"$LOGS/check.log" 2>&1 || {
    echo "peers.sh: cannot build $PEERS/check.c:" >&2; cat "$LOGS/check.log" >&2; return 1; }
}

# verify SO LABEL [MI_VERSION] -> 0 when the .so exports and really serves malloc
verify() {
  local so=$1 syms out
  syms=$(nm -D --defined-only "$so" 2>/dev/null | awk '{print $3}')
  for s in malloc free; do
    grep -qx "$s" <<<"$syms" || { echo "  $so does not export $s" >&2; return 1; }
  done
  LD_PRELOAD=$so /bin/true || { echo "  LD_PRELOAD=$so /bin/true failed" >&2; return 1; }
  out=$(LD_PRELOAD=$so "$CHECK" "$@") || { echo "  check program failed under $so" >&2; return 1; }
  echo "  $out" >&2
}

# run a compiler command, logging it and its output to logs/NAME.log
compile() { # name cmd...
  local log=$LOGS/$1.log; shift
  printf '%q ' "$@" >>"$log"; echo >>"$log"
  "$@" >>"$log" 2>&1
}

# does the linker know -l$1?
have_lib() { echo 'int main(void){return 0;}' | $CC -x c - -o /dev/null "-l$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- mimalloc
# build_mimalloc NAME TREE (v2|v3): single-file build of src/static.c.  Flags and defines are
# those of mimalloc's CMakeLists.txt for the release shared library `mimalloc`:
#   CMAKE_BUILD_TYPE=Release          -O3 -DNDEBUG, MI_BUILD_RELEASE, MI_CMAKE_BUILD_TYPE=release
#   C_STANDARD 11                     -std=gnu11
#   shared target                     MI_SHARED_LIB MI_SHARED_LIB_EXPORT
#   MI_OVERRIDE=ON (default)          MI_MALLOC_OVERRIDE (this is what makes src/alloc-override.c
#                                     define malloc/free/...; both v2 and v3 need it, nothing
#                                     turns it on by default) and -fno-builtin-malloc
#   GNU compiler                      -fvisibility=hidden -Wno-unknown-pragmas -ftls-model=initial-exec
#   mi_libraries                      -lpthread -lrt (-latomic when present)
# MI_OPT_ARCH is OFF by default on x86_64, so no -march.
MI_VERSION_NUM="" MI_UPSTREAM=""
build_mimalloc() {
  local name=$1 tree=$2 src so num
  so=$(so_of "$name")
  src=$MI_DIR/c_src/mimalloc/$tree
  [ -n "$MI_DIR" ] && [ -f "$src/src/static.c" ] || { echo "  no mimalloc $tree sources in libmimalloc-sys (${MI_DIR:-not fetched})" >&2; return 1; }
  # MI_MALLOC_VERSION is major*10000 + minor*100 + patch (e.g. 30302 = 3.3.2)
  num=$(sed -n 's/^#define MI_MALLOC_VERSION[[:space:]]*\([0-9]*\).*/\1/p' "$src/include/mimalloc.h")
  [ -n "$num" ] || { echo "  no MI_MALLOC_VERSION in $src/include/mimalloc.h" >&2; return 1; }
  MI_VERSION_NUM=$num
  MI_UPSTREAM=$((num / 10000)).$((num / 100 % 100)).$((num % 100))
  local libs=(-lpthread -lrt)
  have_lib atomic && libs+=(-latomic)
  compile "$name" "$CC" -O3 -DNDEBUG -std=gnu11 -fPIC -shared -pthread \
    -fvisibility=hidden -Wno-unknown-pragmas -ftls-model=initial-exec -fno-builtin-malloc \
    -DMI_BUILD_RELEASE -DMI_CMAKE_BUILD_TYPE=release -DMI_SHARED_LIB -DMI_SHARED_LIB_EXPORT -DMI_MALLOC_OVERRIDE \
    -I"$src/include" "$src/src/static.c" -o "$so" "${libs[@]}"
}

# ---------------------------------------------------------------- snmalloc
# build_snmalloc: the `snmallocshim` target of snmalloc's CMakeLists.txt (sources
# src/snmalloc/override/malloc.cc + new.cc, i.e. the C API and operator new/delete), with:
#   CMAKE_BUILD_TYPE=Release          -O3 -DNDEBUG
#   cxx_std_20 (SNMALLOC_USE_CXX17=OFF) -std=c++20 (falls back to -std=c++17 if the compiler lacks it)
#   snmalloc INTERFACE                -mcx16 (x86_64 only), SNMALLOC_USE_WAIT_ON_ADDRESS=1,
#                                     SNMALLOC_NO_REALLOCARRAY, SNMALLOC_NO_REALLOCARR (options ON),
#                                     MALLOC_USABLE_SIZE_QUALIFIER=const (its generator expression
#                                     tests the literal name, so it is always set), plus the
#                                     platform probes redone below (getentropy, linux/random.h,
#                                     linux/futex.h, pthread_atfork); links pthread, atomic
#   compile()                         SNMALLOC_USE_CXX11_THREAD_ATEXIT_DIRECT (default cleanup on
#                                     Linux), SNMALLOC_EXPORT=visibility("default") with hidden
#                                     default visibility, -fomit-frame-pointer, -mprfchw,
#                                     -ftls-model=initial-exec (static TLS: SNMALLOC_ENABLE_DYNAMIC_
#                                     LOADING=OFF), -ffunction-sections, SNMALLOC_CHECK_LOADS=false,
#                                     SNMALLOC_PAGEID=false, -static-libstdc++
# snmalloc-sys is published from the snmalloc repository itself (path_in_vcs
# snmalloc-rs/snmalloc-sys, since snmalloc 0.7.4) and versioned with it, so its upstream
# version is the crate version; the commit comes from .cargo_vcs_info.json.
SN_UPSTREAM="" SN_COMMIT=""
probe_cxx() { printf '%s\n' "$1" | $CXX -x c++ - -o /dev/null -pthread >/dev/null 2>&1; }
build_snmalloc() {
  local so src std defs=() arch=()
  so=$(so_of snmalloc)
  src=$SN_DIR/upstream/src
  [ -n "$SN_DIR" ] && [ -f "$src/snmalloc/override/malloc.cc" ] || { echo "  no snmalloc sources in snmalloc-sys (${SN_DIR:-not fetched})" >&2; return 1; }
  SN_UPSTREAM=$SNMALLOC_SYS_VERSION
  grep -q '"path_in_vcs": "snmalloc-rs/' "$SN_DIR/.cargo_vcs_info.json" 2>/dev/null ||
    SN_UPSTREAM="unknown(snmalloc-sys-$SNMALLOC_SYS_VERSION)"
  SN_COMMIT=$(sed -n 's/.*"sha1": "\([0-9a-f]\{7\}\).*/\1/p' "$SN_DIR/.cargo_vcs_info.json" 2>/dev/null)

  probe_cxx $'#include <unistd.h>\n#include <sys/random.h>\nint main(){int e=0;return getentropy(&e,sizeof e);}' &&
    defs+=(-DSNMALLOC_PLATFORM_HAS_GETENTROPY)
  probe_cxx $'#include <linux/random.h>\nint main(){return 0;}' && defs+=(-DSNMALLOC_HAS_LINUX_RANDOM_H)
  probe_cxx $'#include <linux/futex.h>\nint main(){return 0;}' && defs+=(-DSNMALLOC_HAS_LINUX_FUTEX_H)
  probe_cxx $'#include <pthread.h>\nvoid f(){}\nint main(){return pthread_atfork(f,f,f);}' &&
    defs+=(-DSNMALLOC_PTHREAD_ATFORK_WORKS)
  case "$(uname -m)" in x86_64) arch=(-mcx16 -mprfchw) ;; esac
  local libs=()
  have_lib atomic && libs+=(-latomic)

  for std in c++20 c++17; do
    compile snmalloc "$CXX" -O3 -DNDEBUG "-std=$std" -fPIC -shared -pthread "${arch[@]}" \
      -fvisibility=hidden -fomit-frame-pointer -ffunction-sections -ftls-model=initial-exec \
      -DSNMALLOC_USE_WAIT_ON_ADDRESS=1 -DSNMALLOC_USE_CXX11_THREAD_ATEXIT_DIRECT \
      '-DSNMALLOC_EXPORT=__attribute__((visibility("default")))' \
      -DSNMALLOC_CHECK_LOADS=false -DSNMALLOC_PAGEID=false \
      -DSNMALLOC_NO_REALLOCARRAY -DSNMALLOC_NO_REALLOCARR -DMALLOC_USABLE_SIZE_QUALIFIER=const \
      "${defs[@]}" -I"$src" \
      "$src/snmalloc/override/malloc.cc" "$src/snmalloc/override/new.cc" \
      -o "$so" -static-libstdc++ "${libs[@]}" && return 0
    echo "  -std=$std failed" >>"$LOGS/snmalloc.log"
  done
  return 1
}

# ---------------------------------------------------------------- build, verify, report
now_ms() { date +%s%3N; }
T0=$(now_ms)
declare -A NEWLINE=()   # peer -> its new VERSIONS line

if [ -n "$TODO" ]; then
  # Without sources or the check program nothing can be built and verified: keep every
  # existing .so (stale or not) and build nothing.
  if ! fetch_crates || ! build_check; then
    echo "peers.sh: cannot build; keeping the peers already in ${PEERS#"$ROOT"/}" >&2
    TODO=""
  fi
fi

for p in $ALL_PEERS; do
  so=$(so_of "$p")
  rel=${so#"$ROOT"/}
  if [[ " $TODO " != *" $p "* ]]; then
    read -r _ crate cver up <<<"$(versions_line "$p")"
    case "$p" in mimalloc*) label="mimalloc v$up" ;; *) label="snmalloc $up" ;; esac
    [ -f "$so" ] && echo "$p: $crate $cver, upstream $label -> $rel (cached)"
    continue
  fi
  echo "peers.sh: building $p" >&2
  : >"$LOGS/$p.log"
  rm -f "$so"
  t=$(now_ms)
  ok=1
  case "$p" in
    mimalloc3) build_mimalloc "$p" v3 || ok=0 ;;
    mimalloc2) build_mimalloc "$p" v2 || ok=0 ;;
    snmalloc)  build_snmalloc || ok=0 ;;
  esac
  case "$p" in
    mimalloc*) up=$MI_UPSTREAM; label="mimalloc v$MI_UPSTREAM"; extra=("$MI_VERSION_NUM") ;;
    snmalloc)  up=$SN_UPSTREAM; label="snmalloc $SN_UPSTREAM${SN_COMMIT:+ (commit $SN_COMMIT)}"; extra=() ;;
  esac
  if [ "$ok" = 1 ] && ! verify "$so" "$label" "${extra[@]}"; then ok=0; fi
  secs=$(awk -v a="$t" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  if [ "$ok" = 1 ]; then
    crate=$(crate_of "$p"); cver=$(want_version_of "$p")
    NEWLINE[$p]="$p $crate $cver $up"
    echo "$p: $crate $cver, upstream $label -> $rel (built in ${secs} s)"
  else
    rm -f "$so"
    echo "$p: SKIPPED — build or verification failed; see ${LOGS#"$ROOT"/}/$p.log:" >&2
    tail -n 5 "$LOGS/$p.log" | sed 's/^/    /' >&2
  fi
done

# VERSIONS: every peer whose .so exists, with its new line or the one it had.
tmp=$(mktemp "$PEERS/.VERSIONS.XXXXXX")
n=0
for p in $ALL_PEERS; do
  [ -f "$(so_of "$p")" ] || continue
  line=${NEWLINE[$p]:-$(versions_line "$p")}
  [ -n "$line" ] && echo "$line" >>"$tmp"
  n=$((n + 1))
done
chmod 644 "$tmp"
mv "$tmp" "$VERSIONS"

[ -n "$TODO" ] && echo "peers.sh: done in $(awk -v a="$T0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }') s; versions in ${VERSIONS#"$ROOT"/}" >&2
if [ "$n" = 0 ]; then
  echo "peers.sh: no peer allocator could be built" >&2
  exit 1
fi
exit 0

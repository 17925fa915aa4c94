#!/usr/bin/env bash
# build.sh — build hakmem, the benchmarks in bench-c/ and the C tests in tests/.
#
#   ./build.sh                 release library: target/release/libhakmem.so (+ .a), and the
#                              launcher target/release/hakmem (`hakmem run -- CMD`)
#   ./build.sh NAME_ALLOC      bench-c/NAME.c (tests/NAME.c for test_*) -> out/release/NAME_ALLOC, where ALLOC is
#                              hakmem (static libhakmem.a linked in), system (glibc),
#                              mi (mimalloc), je (jemalloc) or tc (tcmalloc-minimal)
#   ./build.sh all             every benchmark (bench-c/*.c) x every allocator
#   ./build.sh tests           every tests/test_*.c as _hakmem and _system
#   ./build.sh peers           mimalloc 3, mimalloc 2 and snmalloc built from crate-registry
#                              sources into target/peers/*.so (scripts/peers.sh), for LD_PRELOAD
#
# Peer allocators come from Debian packages; a missing one is installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")"

CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g -pthread -Wall -Wextra -Wno-unused-parameter}
OUT=out/release
LIBDIR=/usr/lib/x86_64-linux-gnu
mkdir -p "$OUT"

# allocator -> shared object and the Debian package that ships it
peer_so() {
  case "$1" in
    mi) echo "$LIBDIR/libmimalloc.so.2 libmimalloc2.0" ;;
    je) echo "$LIBDIR/libjemalloc.so.2 libjemalloc2" ;;
    tc) echo "$LIBDIR/libtcmalloc_minimal.so.4 libtcmalloc-minimal4" ;;
    *) return 1 ;;
  esac
}

ensure_peer() {
  local so pkg
  read -r so pkg <<<"$(peer_so "$1")"
  if [ ! -e "$so" ]; then
    echo "build.sh: $so missing; installing Debian package $pkg" >&2
    if [ "$(id -u)" = 0 ]; then
      (apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$pkg"; }) >&2
    else
      echo "build.sh: not root; install $pkg by hand" >&2; return 1
    fi
  fi
  echo "$so"
}

lib_stamp=""
build_lib() {
  [ -n "$lib_stamp" ] && return 0
  cargo build --release -p hakmem -p hakmem-cli >&2   # + target/release/hakmem, the launcher
  lib_stamp=1
}

# tests/lib_NAME.c -> out/release/lib_NAME.so: helper libraries of the C tests.
build_test_lib() {
  local name=$1
  $CC $CFLAGS -shared -fPIC "tests/$name.c" -o "$OUT/$name.so"
}

# Libraries a source asks for with lines "// link: lib_NAME" (built from tests/).
extra_libs() {
  local lib
  for lib in $(sed -n 's#^// link: \(lib_[A-Za-z0-9_]*\)$#\1#p' "$1"); do
    build_test_lib "$lib"
    printf ' %s' "-L$OUT" "-l:$lib.so" "-Wl,-rpath,\$ORIGIN"
  done
}

build_prog() {
  local target=$1 name alloc src out libs
  name=${target%_*}; alloc=${target##*_}
  case "$name" in test_*) src=tests/$name.c ;; *) src=bench-c/$name.c ;; esac
  out=$OUT/$target
  [ -f "$src" ] || { echo "build.sh: no $src for target $target" >&2; return 1; }
  libs=$(extra_libs "$src")
  # compiler flags a source asks for with a line "// cflags: ..." (e.g. -no-pie)
  libs="$(sed -n 's#^// cflags: \(.*\)$#\1#p' "$src" | tr '\n' ' ')$libs"
  # shellcheck disable=SC2086  # $libs is a list of compiler and linker words
  case "$alloc" in
    hakmem) build_lib
            $CC $CFLAGS "$src" -o "$out" $libs target/release/libhakmem.a -ldl ;;
    system) $CC $CFLAGS "$src" -o "$out" $libs ;;
    mi|je|tc) local so; so=$(ensure_peer "$alloc")
            $CC $CFLAGS "$src" -o "$out" $libs "$so" -Wl,-rpath,"$LIBDIR" ;;
    *) echo "build.sh: unknown allocator '$alloc' in $target (hakmem|system|mi|je|tc)" >&2; return 1 ;;
  esac
  echo "$out"
}

benches() { for f in bench-c/*.c; do basename "$f" .c; done; }
tests() { for f in tests/test_*.c; do basename "$f" .c; done; }

if [ $# -eq 0 ]; then build_lib; ls -l target/release/libhakmem.so target/release/hakmem; exit 0; fi
for t in "$@"; do
  case "$t" in
    all)   for b in $(benches); do for a in hakmem system mi je tc; do build_prog "${b}_$a"; done; done ;;
    tests) for b in $(tests); do for a in hakmem system; do build_prog "${b}_$a"; done; done ;;
    lib)   build_lib ;;
    peers) scripts/peers.sh ;;
    *)     build_prog "$t" ;;
  esac
done

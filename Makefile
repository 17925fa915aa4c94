# hakmem — see README.md. Every target is a thin wrapper over build.sh, cargo
# and scripts/, so each step can also be run by hand.

SHELL := /bin/bash
LOOM_DIR := target/loom

.PHONY: all lib demo test lint test-rust test-loom test-c test-real test-launcher test-fastpath soak bench bench-full callgrind clean

all lib:
	./build.sh

# Build hakmem and run two benchmarks and a Python workload under hakmem and glibc.
demo:
	scripts/demo.sh

# Everything CI runs: unit tests, model checks, C tests (preloaded and linked), real programs,
# the launcher, and the fast path's instruction count against its golden value.
test: lint test-rust test-loom test-c test-real test-launcher test-fastpath

# Every unsafe block documented (clippy::undocumented_unsafe_blocks), no warnings, formatted.
lint:
	cargo fmt --all --check
	CARGO_TARGET_DIR=target/clippy cargo clippy --workspace --all-targets -- -D warnings

test-rust:
	cargo test --workspace

test-loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_DIR) cargo test --release -p hakmem-core --test loom_remote

test-c: lib
	scripts/test-c.sh

test-real: lib
	scripts/test-real-programs.sh

test-launcher: lib
	scripts/test-launcher.sh

# Instructions per malloc+free pair (callgrind) must not exceed scripts/fastpath-golden.txt.
test-fastpath: lib
	scripts/check-fastpath.sh

# 10 minutes of mixed sizes, cross-thread frees, thread churn and forks under the
# preload; fails if RSS keeps rising (SOAK_SECONDS=N for another length).
soak: lib
	scripts/soak.sh

# hakmem and seven peers (glibc, mimalloc 2.0 Debian, mimalloc 3, mimalloc 2, snmalloc, jemalloc,
# tcmalloc), all through LD_PRELOAD, 5 interleaved rounds (~35 min) -> docs/BENCHMARKS.md, CSV, chart.
# Extra options: make bench BENCH_ARGS="--only 'larson|redis' --allocs hakmem,mi3,sn --runs 1"
# (a partial run writes its report to out/bench/report/, not docs/).
BENCH_ARGS ?=

bench:
	scripts/bench.sh --quick $(BENCH_ARGS)

bench-full:
	scripts/bench.sh --full $(BENCH_ARGS)

# Instructions per malloc/free pair, hakmem vs peers (valgrind).
callgrind:
	scripts/callgrind.sh

clean:
	cargo clean
	rm -rf out

#!/usr/bin/env bash
# scripts/real/redis_bench.sh — one redis run of scripts/bench.sh.
#
#   redis_bench.sh --out FILE --requests N [--preload SO] [--ld-debug DIR] [--log FILE]
#
# Starts `redis-server` on 127.0.0.1 on a free port (--save '' --appendonly no, no
# daemonizing), with LD_PRELOAD=SO when given (and LD_DEBUG=bindings into DIR/ld.PID when
# --ld-debug is given) — only the server gets these, never the client.  Then runs, not
# preloaded,
#     redis-benchmark -h 127.0.0.1 -p PORT -q -n N -P 16 -t set,get,lpush,lpop
# and asks the server for what must be the same after every correct run (written to FILE,
# which scripts/bench.sh compares with the run made without preload):
#     the key count, the value of key:__rand_int__, and the calls / failed / rejected
# counts of SET, GET, LPUSH and LPOP (INFO commandstats).
# Then `SHUTDOWN NOSAVE`; the server must exit with status 0.
#
# Last stdout line: RESULT seconds=<wall time of the redis-benchmark run>
#                   maxrss_kb=<peak RSS of redis-server> server_s=<server lifetime>
# The metric is the client's wall time for the 4 x N requests (lower is better): the client
# is the same program for every allocator, so differences come from the server.
# Exit status 0 on success, 1 on any failure (reason on stderr).
set -uo pipefail

OUT="" N="" SO="" LDDBG="" LOG=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --preload) SO=$2; shift 2 ;;
    --ld-debug) LDDBG=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    *) echo "redis_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] && [ -n "$N" ] || { echo "usage: redis_bench.sh --out FILE --requests N [--preload SO] [--ld-debug DIR] [--log FILE]" >&2; exit 2; }
for p in redis-server redis-cli redis-benchmark; do
  command -v "$p" >/dev/null || { echo "redis_bench.sh: $p not installed" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/redis-bench.XXXXXX")
PORT="" SPID="" TPID=""
cleanup() {
  if [ -n "$PORT" ] && [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1
    sleep 0.2
    [ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null
    kill -TERM "$TPID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' TERM INT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ns() { date +%s%N; }

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }

# start the server; a port taken between free_port and bind gets another try
started=0
for attempt in 1 2 3; do
  PORT=$(free_port) || { echo "redis_bench.sh: no free port" >&2; exit 1; }
  envs=()
  [ -n "$SO" ] && envs+=("LD_PRELOAD=$SO")
  [ -n "$LDDBG" ] && envs+=(LD_DEBUG=bindings "LD_DEBUG_OUTPUT=$LDDBG/ld")
  t0=$(ns)
  /usr/bin/time -f '%e %M' -o "$TMP/time" env "${envs[@]}" redis-server --port "$PORT" --bind 127.0.0.1 \
    --save '' --appendonly no --daemonize no --loglevel warning --dir "$TMP" \
    >"$TMP/server.log" 2>&1 &
  TPID=$!
  for _ in $(seq 1 100); do
    if [ "$(cli ping 2>/dev/null)" = PONG ]; then started=1; break; fi
    kill -0 "$TPID" 2>/dev/null || break
    sleep 0.05
  done
  [ "$started" = 1 ] && break
  kill -TERM "$TPID" 2>/dev/null; wait "$TPID" 2>/dev/null
  TPID=""
done
if [ "$started" != 1 ]; then
  echo "redis_bench.sh: redis-server did not start: $(tail -n 3 "$TMP/server.log" | tr '\n' ' ')" >&2
  exit 1
fi
SPID=$(cli info server | tr -d '\r' | sed -n 's/^process_id://p')

b0=$(ns)
if ! redis-benchmark -h 127.0.0.1 -p "$PORT" -q -n "$N" -P 16 -t set,get,lpush,lpop >"$TMP/bench.out" 2>&1; then
  echo "redis_bench.sh: redis-benchmark failed: $(tail -n 2 "$TMP/bench.out" | tr '\r\n' '  ')" >&2
  exit 1
fi
b1=$(ns)
tr '\r' '\n' <"$TMP/bench.out" | grep -E '^(SET|GET|LPUSH|LPOP): [0-9.]+ requests per second' >"$TMP/rps" || true
{ echo "redis-benchmark -q -n $N -P 16 -t set,get,lpush,lpop:"; cat "$TMP/rps"; } >>"$LOG"
if [ "$(wc -l <"$TMP/rps")" != 4 ]; then
  echo "redis_bench.sh: redis-benchmark did not report all four tests" >&2
  exit 1
fi

{
  echo "dbsize=$(cli dbsize | tr -d '\r')"
  echo "get=$(cli get key:__rand_int__ | tr -d '\r')"
  cli info commandstats | tr -d '\r' | grep -E '^cmdstat_(set|get|lpush|lpop):' |
    sed -E 's/^(cmdstat_[a-z]+):calls=([0-9]+).*rejected_calls=([0-9]+),failed_calls=([0-9]+).*/\1 calls=\2 rejected=\3 failed=\4/' | sort
} >"$OUT"

cli shutdown nosave >/dev/null 2>&1
wait "$TPID"
rc=$?
t1=$(ns)
TPID=""
if [ "$rc" != 0 ]; then
  echo "redis_bench.sh: redis-server exited with status $rc: $(grep -v '^Command ' "$TMP/server.log" | tail -n 2 | tr '\n' ' ')" >&2
  exit 1
fi
read -r _ rss < <(tail -n 1 "$TMP/time")
awk -v a="$b0" -v b="$b1" -v s="$t0" -v e="$t1" -v r="$rss" \
  'BEGIN { printf "RESULT seconds=%.3f maxrss_kb=%s server_s=%.3f\n", (b - a) / 1e9, r, (e - s) / 1e9 }'

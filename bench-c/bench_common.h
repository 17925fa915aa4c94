/* bench_common.h — helpers shared by the benchmarks in bench-c/.
 *
 * Include it first (it defines _GNU_SOURCE before any system header):
 *     #include "bench_common.h"
 * and set g_name to the benchmark's name at the top of main().  Everything here is
 * `static inline`, so a program pays only for what it uses and unused helpers draw no
 * warning.  The hot-path helpers (rng_*, stamp, check, block_*) must stay cheap and
 * allocation-free: they run inside the timed loops.
 *
 * What a benchmark may rely on:
 *   - fail():        prints "FAIL <g_name>: <message>" on stderr and exits 1, once per
 *                    process even when several threads fail at the same time.
 *   - rng_*:         xorshift64* seeded through splitmix64; the same seed gives the same
 *                    sequence on every machine and allocator.
 *   - stamp/check:   a block stamped with (size, key) passes check() with the same
 *                    (size, key) until one of its checked bytes changes; check() also
 *                    rejects NULL and blocks not 8-aligned (size <= 8) or 16-aligned.
 *   - xmalloc():     never returns NULL (fails instead).
 *   - now_sec():     monotonic seconds; maxrss_kb(): peak RSS in KiB, -1 if unknown.
 *   - PARSE_ARGS():  all-or-none strict unsigned decimal arguments; usage_exit() prints
 *                    the usage text and exits 2.
 *   - bench_result(): the one RESULT line every benchmark ends with on stdout.
 */
#ifndef HAKMEM_BENCH_COMMON_H
#define HAKMEM_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- failure reporting ---------------------------------------------------------------- */

/* Benchmark name used in FAIL and RESULT lines; main() sets it first thing. */
static const char *g_name;

/* Report a broken invariant and exit(1).  Only the first caller prints: any other thread
 * that fails meanwhile parks in pause() until the process exits, so the message is never
 * interleaved. */
static inline void fail(const char *fmt, ...) __attribute__((noreturn, cold, format(printf, 1, 2)));
static inline void fail(const char *fmt, ...)
{
    static atomic_flag once = ATOMIC_FLAG_INIT;
    va_list ap;
    if (atomic_flag_test_and_set(&once))
        for (;;)
            pause(); /* another thread is already reporting and exiting */
    fprintf(stderr, "FAIL %s: ", g_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

/* Fail with "<what>: <strerror(e)>" unless e (a pthread_* return value) is 0. */
static inline void check_pthread(int e, const char *what)
{
    if (__builtin_expect(e != 0, 0))
        fail("%s: %s", what, strerror(e));
}

/* ---- deterministic PRNG --------------------------------------------------------------- */

/* splitmix64 finaliser: a bijective 64-bit mix (also used for block tags). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* xorshift64* state for a seed, seeded through splitmix64; never 0 (a 0 state would stick). */
static inline uint64_t rng_init(uint64_t seed)
{
    uint64_t s = mix64(seed + 0x9e3779b97f4a7c15ULL);
    return s ? s : 0x853c49e6748fea9bULL;
}
/* Next 64-bit output of the xorshift64* generator *s. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}
/* Uniform in [0, n) for 0 < n < 2^32 (multiply-shift on the high 32 bits, no modulo). */
static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

/* ---- per-block tag: stamp on allocation, check before free ---------------------------- */

/* Block check words: header (bytes 0..7) = tag(addr,size,key), bytes 8..15 = tag^size^const
 * (when size >= 24), last 8 bytes = ~tag.  Blocks < 16 bytes get a byte pattern.  Because
 * the tag depends on the address, a block handed out twice or overlapping another one, or
 * a stale block, fails check() as surely as an overwritten one. */
static inline uint64_t block_tag(const void *p, size_t n, uint64_t key)
{
    return mix64((uint64_t)(uintptr_t)p ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL) ^ (key << 17) ^ key);
}

/* Write the check words of an n-byte block p (n >= 1) for key. */
static inline void stamp(void *p, size_t n, uint64_t key)
{
    unsigned char *b = p;
    uint64_t t = block_tag(p, n, key);
    if (n >= 16) {
        uint64_t u = ~t;
        memcpy(b, &t, 8);
        memcpy(b + n - 8, &u, 8);
        if (n >= 24) {
            uint64_t m = t ^ (uint64_t)n ^ 0xa5a5a5a5a5a5a5a5ULL;
            memcpy(b + 8, &m, 8);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)((t >> (8 * (i & 7))) ^ i);
    }
}

static inline void check_fail(const void *p, size_t n, const char *what, const char *where)
    __attribute__((noreturn, cold));
static inline void check_fail(const void *p, size_t n, const char *what, const char *where)
{
    fail("%s of block %p size %zu (%s)", what, p, n, where);
}

/* Fail (naming `where`) unless p is non-NULL, aligned to 8 (n <= 8) or 16 bytes, and still
 * holds what stamp(p, n, key) wrote. */
static inline void check(const void *p, size_t n, uint64_t key, const char *where)
{
    const unsigned char *b = p;
    if (__builtin_expect(p == NULL, 0))
        check_fail(p, n, "NULL pointer", where);
    if (__builtin_expect(((uintptr_t)p & (n <= 8 ? 7u : 15u)) != 0, 0))
        check_fail(p, n, "misalignment", where);
    uint64_t t = block_tag(p, n, key);
    if (n >= 16) {
        uint64_t h, e;
        memcpy(&h, b, 8);
        memcpy(&e, b + n - 8, 8);
        if (__builtin_expect(h != t, 0))
            check_fail(p, n, "corrupted header word", where);
        if (__builtin_expect(e != ~t, 0))
            check_fail(p, n, "corrupted last 8 bytes", where);
        if (n >= 24) {
            uint64_t m;
            memcpy(&m, b + 8, 8);
            if (__builtin_expect(m != (t ^ (uint64_t)n ^ 0xa5a5a5a5a5a5a5a5ULL), 0))
                check_fail(p, n, "corrupted bytes 8..15", where);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            if (__builtin_expect(b[i] != (unsigned char)((t >> (8 * (i & 7))) ^ i), 0))
                check_fail(p, n, "corrupted byte pattern", where);
    }
}

/* malloc that never returns NULL: fails with "malloc(n) returned NULL" instead. */
static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (__builtin_expect(p == NULL, 0))
        fail("malloc(%zu) returned NULL", n);
    return p;
}

/* A live stamped block and what check() needs to verify it. */
typedef struct {
    void *p;
    uint32_t n;
    uint32_t key;
} block_t;

/* xmalloc(n) stamped with key. */
static inline block_t block_new(uint32_t n, uint32_t key)
{
    void *p = xmalloc(n);
    stamp(p, n, key);
    return (block_t){p, n, key};
}

/* check() the block (naming `where` on failure), then free it. */
static inline void block_free(const block_t *b, const char *where)
{
    check(b->p, b->n, b->key, where);
    free(b->p);
}

/* ---- timing, memory, arguments, result line ------------------------------------------- */

/* CLOCK_MONOTONIC in seconds (ns resolution). */
static inline double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* count / seconds, or 0 when no measurable time passed (never inf or nan). */
static inline double per_sec(double count, double seconds)
{
    return seconds > 0 ? count / seconds : 0.0;
}

/* Peak resident set size of this process in KiB (getrusage), -1 if unavailable. */
static inline long maxrss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

/* Strict unsigned decimal parse: digits only (no sign, space or suffix), no overflow.
 * Returns 0 and stores *out on success, -1 (leaving *out alone) otherwise. */
static inline int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Print the benchmark's usage text on stderr and exit(2): bad or out-of-range arguments. */
static inline void usage_exit(const char *usage_text) __attribute__((noreturn, cold));
static inline void usage_exit(const char *usage_text)
{
    fputs(usage_text, stderr);
    exit(2);
}

/* All-or-none positional arguments: with no arguments (argc == 1) the defaults stay and 0 is
 * returned; otherwise there must be exactly n of them, each accepted by parse_u64 and
 * stored through out[i], and 1 is returned.  Anything else is usage_exit(usage_text).
 * Range checks are the caller's.  Use it through PARSE_ARGS. */
static inline int parse_args_u64(int argc, char **argv, const char *usage_text, uint64_t *const *out, int n)
{
    if (argc == 1)
        return 0;
    if (argc != n + 1)
        usage_exit(usage_text);
    for (int i = 0; i < n; i++)
        if (parse_u64(argv[i + 1], out[i]))
            usage_exit(usage_text);
    return 1;
}
/* PARSE_ARGS(argc, argv, usage_text, &a, &b, ...): parse_args_u64 with the uint64_t pointers
 * listed in argument order (their count is the required number of arguments). */
#define PARSE_ARGS(argc, argv, usage_text, ...)                                                  \
    parse_args_u64((argc), (argv), (usage_text), (uint64_t *const[]){__VA_ARGS__},               \
                   (int)(sizeof((uint64_t *const[]){__VA_ARGS__}) / sizeof(uint64_t *)))

/* Print the benchmark's single stdout line, which the runners parse:
 *     RESULT name=<g_name> threads=<threads> <metric>=<value> maxrss_kb=<peak RSS>
 * with value printed with `decimals` digits after the point (0 for ops_per_sec).  Call it
 * last: maxrss_kb is read at the call. */
static inline void bench_result(uint64_t threads, const char *metric, double value, int decimals)
{
    printf("RESULT name=%s threads=%llu %s=%.*f maxrss_kb=%ld\n", g_name, (unsigned long long)threads,
           metric, decimals, value, maxrss_kb());
}

#endif /* HAKMEM_BENCH_COMMON_H */

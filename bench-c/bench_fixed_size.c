#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- shared helpers (each bench file carries its own copy) ---- */
static const char *g_name;

static void fail(const char *fmt, ...) __attribute__((noreturn, cold, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
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

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* xorshift64* seeded through splitmix64 */
static inline uint64_t rng_init(uint64_t seed)
{
    uint64_t s = mix64(seed + 0x9e3779b97f4a7c15ULL);
    return s ? s : 0x853c49e6748fea9bULL;
}
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}
/* uniform in [0, n) for n < 2^32 */
static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

/* Block check words: header (bytes 0..7) = tag(addr,size,key), bytes 8..15 = tag^size^const
 * (when size >= 24), last 8 bytes = ~tag.  Blocks < 16 bytes get a byte pattern. */
static inline uint64_t block_tag(const void *p, size_t n, uint64_t key)
{
    return mix64((uint64_t)(uintptr_t)p ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL) ^ (key << 17) ^ key);
}

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

static void check_fail(const void *p, size_t n, const char *what, const char *where)
    __attribute__((noreturn, cold));
static void check_fail(const void *p, size_t n, const char *what, const char *where)
{
    fail("%s of block %p size %zu (%s)", what, p, n, where);
}

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

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (__builtin_expect(p == NULL, 0))
        fail("malloc(%zu) returned NULL", n);
    return p;
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

/* strict unsigned decimal parse; returns 0 on success */
static int parse_u64(const char *s, uint64_t *out)
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
/* ---- end shared helpers ---- */

/* Single-threaded random replacement over a working set of slots, one block size. */

typedef struct {
    void *p;
    uint64_t key;
} slot_t;

static void usage(void)
{
    fprintf(stderr, "usage: bench_fixed_size [iterations size working_set]\n"
                    "  e.g. bench_fixed_size 50000000 64 4096   (all arguments or none)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "bench_fixed_size";
    uint64_t iters = 50000000, size = 64, ws = 4096;
    if (argc != 1) {
        if (argc != 4 || parse_u64(argv[1], &iters) || parse_u64(argv[2], &size) || parse_u64(argv[3], &ws))
            usage();
        if (size < 1 || size > (1ull << 32) || ws < 1 || ws > (1u << 26))
            usage();
    }
    const size_t n = (size_t)size;
    uint64_t rng = rng_init(0x5eedULL ^ size);
    slot_t *s = xmalloc(sizeof(slot_t) * ws);
    for (uint64_t i = 0; i < ws; i++) {
        uint64_t k = rng_next(&rng);
        void *p = xmalloc(n);
        stamp(p, n, k);
        s[i] = (slot_t){p, k};
    }
    double t0 = now_sec();
    for (uint64_t it = 0; it < iters; it++) {
        uint64_t r = rng_next(&rng);
        uint32_t i = (uint32_t)(((r >> 32) * ws) >> 32);
        check(s[i].p, n, s[i].key, "replace");
        free(s[i].p);
        void *p = xmalloc(n);
        stamp(p, n, r);
        s[i].p = p;
        s[i].key = r;
    }
    double el = now_sec() - t0;
    for (uint64_t i = 0; i < ws; i++) {
        check(s[i].p, n, s[i].key, "final");
        free(s[i].p);
    }
    free(s);
    fprintf(stderr, "bench_fixed_size: %llu ops of %zu bytes in %.3f s (working set %llu)\n",
            (unsigned long long)iters, n, el, (unsigned long long)ws);
    printf("RESULT name=bench_fixed_size threads=1 ops_per_sec=%.0f maxrss_kb=%ld\n",
           el > 0 ? (double)iters / el : 0.0, maxrss_kb());
    return 0;
}

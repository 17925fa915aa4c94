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

/* Mid-size random replacement: like bench_random_mixed but block sizes are roughly
 * log-uniform in 1 KiB .. 256 KiB (pick an octave 1K<<k, k in 0..7, then uniform within it).
 * Every block gets its header, bytes 8..15, last 8 bytes and one byte per 4 KiB page touched.
 * Threads are independent; iterations and working_set are per thread. */

typedef struct {
    void *p;
    uint32_t n;
    uint32_t key;
} slot_t;

static uint64_t g_iters, g_ws, g_seed;
static pthread_barrier_t g_bar;

static inline uint32_t mid_size(uint64_t r)
{
    uint32_t base = 1024u << (r & 7);                       /* 1 KiB .. 128 KiB */
    return base + (uint32_t)(((r >> 32) * (uint64_t)base) >> 32); /* .. 256 KiB - 1 */
}

/* stamp plus one byte in every 4 KiB page after the first (derived from the key) */
static inline void mid_stamp(void *p, uint32_t n, uint32_t key)
{
    stamp(p, n, key);
    unsigned char *b = p;
    for (uint32_t off = 4096; off + 8 < n; off += 4096)
        b[off] = (unsigned char)(key ^ (off >> 12));
}

static inline void mid_check(const void *p, uint32_t n, uint32_t key, const char *where)
{
    check(p, n, key, where);
    const unsigned char *b = p;
    for (uint32_t off = 4096; off + 8 < n; off += 4096)
        if (__builtin_expect(b[off] != (unsigned char)(key ^ (off >> 12)), 0))
            fail("corrupted page byte at offset %u of block %p size %u (%s)", off, p, n, where);
}

static void *worker(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t rng = rng_init(g_seed * 0x100000001b3ULL + id);
    slot_t *s = xmalloc(sizeof(slot_t) * g_ws);
    for (uint64_t i = 0; i < g_ws; i++) {
        uint64_t r = rng_next(&rng);
        uint32_t n = mid_size(r);
        void *p = xmalloc(n);
        mid_stamp(p, n, (uint32_t)(r >> 3));
        s[i] = (slot_t){p, n, (uint32_t)(r >> 3)};
    }
    pthread_barrier_wait(&g_bar);
    for (uint64_t it = 0; it < g_iters; it++) {
        uint32_t i = rng_below(&rng, (uint32_t)g_ws);
        mid_check(s[i].p, s[i].n, s[i].key, "replace");
        free(s[i].p);
        uint64_t r = rng_next(&rng);
        uint32_t n = mid_size(r);
        void *p = xmalloc(n);
        mid_stamp(p, n, (uint32_t)(r >> 3));
        s[i] = (slot_t){p, n, (uint32_t)(r >> 3)};
    }
    pthread_barrier_wait(&g_bar);
    for (uint64_t i = 0; i < g_ws; i++) {
        mid_check(s[i].p, s[i].n, s[i].key, "final");
        free(s[i].p);
    }
    free(s);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_mid [iterations working_set seed threads]\n"
                    "  e.g. bench_mid 1000000 256 7 2   (all arguments or none; iterations and\n"
                    "  working_set are per thread)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "bench_mid";
    uint64_t threads = 2;
    g_iters = 1000000;
    g_ws = 256;
    g_seed = 7;
    if (argc != 1) {
        if (argc != 5 || parse_u64(argv[1], &g_iters) || parse_u64(argv[2], &g_ws) ||
            parse_u64(argv[3], &g_seed) || parse_u64(argv[4], &threads))
            usage();
        if (g_ws < 1 || g_ws > (1u << 24) || threads < 1 || threads > 1024)
            usage();
    }
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    if (pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1) != 0)
        fail("pthread_barrier_init");
    for (uint64_t t = 0; t < threads; t++) {
        int e = pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
        if (e != 0)
            fail("pthread_create: %s", strerror(e));
    }
    pthread_barrier_wait(&g_bar); /* all working sets filled */
    double t0 = now_sec();
    pthread_barrier_wait(&g_bar); /* all iterations done */
    double el = now_sec() - t0;
    for (uint64_t t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&g_bar);
    free(tid);
    uint64_t ops = g_iters * threads;
    fprintf(stderr, "bench_mid: %llu ops in %.3f s (%llu threads, working set %llu each)\n",
            (unsigned long long)ops, el, (unsigned long long)threads, (unsigned long long)g_ws);
    printf("RESULT name=bench_mid threads=%llu ops_per_sec=%.0f maxrss_kb=%ld\n",
           (unsigned long long)threads, el > 0 ? (double)ops / el : 0.0, maxrss_kb());
    return 0;
}

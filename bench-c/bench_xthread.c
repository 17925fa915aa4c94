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

/* Cross-thread producer/consumer.  P = max(1, threads/2) producers, C = max(1, threads-P)
 * consumers.  Every (producer, consumer) pair has a bounded single-producer/single-consumer
 * lock-free ring; producers malloc+stamp blocks and push them in batches, round-robin over
 * the consumers; consumers verify and free.  ops_per_sec = blocks / second. */

typedef struct {
    void *p;
    uint32_t n;
    uint32_t key;
} item_t;

#define RING_CAP 4096u /* power of two */
#define BATCH 32u

typedef struct {
    _Alignas(64) atomic_size_t tail; /* producer writes */
    size_t head_cache;                /* producer-private */
    _Alignas(64) atomic_size_t head; /* consumer writes */
    _Alignas(64) atomic_int done;
    item_t buf[RING_CAP];
} ring_t;

static ring_t *g_rings; /* index: p * C + c */
static uint32_t g_P, g_C;
static uint64_t g_iters;
static uint32_t g_smin, g_smax;
static pthread_barrier_t g_bar;

/* spin briefly, then yield, then sleep: on an oversubscribed machine the peer thread may
 * not be running at all, and pure spinning/yielding can starve it */
static inline void backoff(unsigned *spins)
{
    unsigned s = ++*spins;
    if (s < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else if (s < 72) {
        sched_yield();
    } else {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint64_t rng = rng_init(0x70726f64ULL + id);
    const uint32_t span = g_smax - g_smin + 1;
    uint32_t cur = id % g_C;
    uint64_t i = 0;
    unsigned spins = 0;
    pthread_barrier_wait(&g_bar);
    while (i < g_iters) {
        ring_t *r = &g_rings[(size_t)id * g_C + cur];
        size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        size_t space = RING_CAP - (t - r->head_cache);
        if (space < BATCH) {
            r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
            space = RING_CAP - (t - r->head_cache);
        }
        if (space == 0) {
            cur = (cur + 1) % g_C;
            backoff(&spins);
            continue;
        }
        spins = 0;
        size_t k = space < BATCH ? space : BATCH;
        if (k > g_iters - i)
            k = (size_t)(g_iters - i);
        for (size_t j = 0; j < k; j++) {
            uint64_t x = rng_next(&rng);
            uint32_t n = g_smin + (uint32_t)((x >> 32) % span);
            void *p = xmalloc(n);
            stamp(p, n, (uint32_t)x);
            r->buf[(t + j) & (RING_CAP - 1)] = (item_t){p, n, (uint32_t)x};
        }
        atomic_store_explicit(&r->tail, t + k, memory_order_release);
        i += k;
        cur = (cur + 1) % g_C;
    }
    for (uint32_t c = 0; c < g_C; c++)
        atomic_store_explicit(&g_rings[(size_t)id * g_C + c].done, 1, memory_order_release);
    return NULL;
}

static void *consumer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint64_t got = 0;
    uint32_t open = g_P;
    unsigned spins = 0;
    char *closed = calloc(g_P, 1);
    if (!closed)
        fail("calloc");
    pthread_barrier_wait(&g_bar);
    while (open > 0) {
        int progress = 0;
        for (uint32_t p = 0; p < g_P; p++) {
            if (closed[p])
                continue;
            ring_t *r = &g_rings[(size_t)p * g_C + id];
            int done = atomic_load_explicit(&r->done, memory_order_acquire);
            size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
            size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
            if (h == t) {
                if (done) {
                    closed[p] = 1;
                    open--;
                }
                continue;
            }
            if (t - h > 2 * BATCH)
                t = h + 2 * BATCH;
            for (; h != t; h++) {
                item_t *it = &r->buf[h & (RING_CAP - 1)];
                check(it->p, it->n, it->key, "consumer");
                free(it->p);
                got++;
            }
            atomic_store_explicit(&r->head, h, memory_order_release);
            progress = 1;
        }
        if (progress)
            spins = 0;
        else if (open > 0)
            backoff(&spins);
    }
    free(closed);
    return (void *)(uintptr_t)got;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_xthread [iterations_per_producer size_min size_max threads]\n"
                    "  e.g. bench_xthread 15000000 16 512 2   (all arguments or none;\n"
                    "  threads/2 producers (>=1), the rest consumers (>=1))\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "bench_xthread";
    uint64_t iters = 15000000, smin = 16, smax = 512, threads = 2;
    if (argc != 1) {
        if (argc != 5 || parse_u64(argv[1], &iters) || parse_u64(argv[2], &smin) ||
            parse_u64(argv[3], &smax) || parse_u64(argv[4], &threads))
            usage();
        if (smin < 1 || smax < smin || smax > (1u << 30) || threads < 1 || threads > 1024)
            usage();
    }
    g_iters = iters;
    g_smin = (uint32_t)smin;
    g_smax = (uint32_t)smax;
    g_P = (uint32_t)(threads / 2 ? threads / 2 : 1);
    g_C = (uint32_t)(threads > g_P ? threads - g_P : 1);
    uint32_t total = g_P + g_C;
    size_t nr = (size_t)g_P * g_C;
    g_rings = aligned_alloc(64, nr * sizeof(ring_t));
    if (!g_rings)
        fail("aligned_alloc of %zu rings", nr);
    memset(g_rings, 0, nr * sizeof(ring_t));
    pthread_t *tid = xmalloc(sizeof(pthread_t) * total);
    if (pthread_barrier_init(&g_bar, NULL, total + 1) != 0)
        fail("pthread_barrier_init");
    for (uint32_t i = 0; i < total; i++) {
        int e = i < g_P ? pthread_create(&tid[i], NULL, producer, (void *)(uintptr_t)i)
                        : pthread_create(&tid[i], NULL, consumer, (void *)(uintptr_t)(i - g_P));
        if (e != 0)
            fail("pthread_create: %s", strerror(e));
    }
    pthread_barrier_wait(&g_bar);
    double t0 = now_sec();
    uint64_t got = 0;
    for (uint32_t i = 0; i < total; i++) {
        void *ret;
        pthread_join(tid[i], &ret);
        if (i >= g_P)
            got += (uint64_t)(uintptr_t)ret;
    }
    double el = now_sec() - t0;
    uint64_t want = iters * g_P;
    if (got != want)
        fail("consumers freed %llu blocks, producers made %llu",
             (unsigned long long)got, (unsigned long long)want);
    pthread_barrier_destroy(&g_bar);
    free(tid);
    free(g_rings);
    fprintf(stderr, "bench_xthread: %llu blocks, %u producers -> %u consumers, %.3f s\n",
            (unsigned long long)want, g_P, g_C, el);
    printf("RESULT name=bench_xthread threads=%u ops_per_sec=%.0f maxrss_kb=%ld\n",
           total, el > 0 ? (double)want / el : 0.0, maxrss_kb());
    return 0;
}

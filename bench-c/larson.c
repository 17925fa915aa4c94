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

/* Larson & Krishnan style server workload.
 * Each "chain" owns an array of chunks_per_thread blocks.  A thread of the chain does
 * rounds*chunks_per_thread replace operations (verify+free a random slot, malloc a new
 * random-size block there), then creates a successor thread that takes over the array
 * (and therefore frees blocks this thread allocated) and exits.  After `seconds` the
 * chains stop, the main thread joins the last thread of every chain and frees all. */

typedef struct {
    void *p;
    uint32_t n;
    uint32_t key;
} slot_t;

typedef struct {
    slot_t *slots;
    uint64_t rng;
    uint64_t ops;          /* malloc+free pairs done by all threads of this chain */
    uint64_t generations;  /* threads run in this chain */
    pthread_t prev;        /* predecessor, joined by the successor */
    int has_prev;
    int finished;          /* protected by g_mu */
    pthread_t last;        /* last thread of the chain, joined by main */
} chain_t;

static atomic_int g_stop;
static uint32_t g_min, g_max, g_chunks;
static uint64_t g_rounds;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

static void *worker(void *arg)
{
    chain_t *c = arg;
    if (c->has_prev) {
        int e = pthread_join(c->prev, NULL);
        if (e != 0)
            fail("pthread_join of predecessor: %s", strerror(e));
    }
    slot_t *s = c->slots;
    uint64_t rng = c->rng;
    const uint64_t todo = g_rounds * g_chunks;
    const uint32_t span = g_max - g_min + 1;
    uint64_t done = 0;
    while (done < todo) {
        if ((done & 63) == 0 && atomic_load_explicit(&g_stop, memory_order_relaxed))
            break;
        uint32_t i = rng_below(&rng, g_chunks);
        check(s[i].p, s[i].n, s[i].key, "replace");
        free(s[i].p);
        uint64_t r = rng_next(&rng);
        uint32_t n = g_min + (uint32_t)((r >> 32) % span);
        void *p = xmalloc(n);
        stamp(p, n, (uint32_t)r);
        s[i].p = p;
        s[i].n = n;
        s[i].key = (uint32_t)r;
        done++;
    }
    c->rng = rng;
    c->ops += done;
    c->generations++;
    if (done == todo && !atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        pthread_t t;
        c->prev = pthread_self();
        c->has_prev = 1;
        int e = pthread_create(&t, NULL, worker, c);
        if (e != 0)
            fail("pthread_create of successor: %s", strerror(e));
        return NULL; /* c now belongs to the successor */
    }
    pthread_mutex_lock(&g_mu);
    c->last = pthread_self();
    c->finished = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: larson [seconds min_size max_size chunks_per_thread rounds seed threads]\n"
            "  e.g. larson 1 8 1000 5000 100 4141 2   (all arguments or none; seconds may be fractional)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "larson";
    double seconds = 1.0;
    uint64_t min = 8, max = 1000, chunks = 5000, rounds = 100, seed = 4141, threads = 2;
    if (argc != 1) {
        char *end;
        if (argc != 8)
            usage();
        errno = 0;
        seconds = strtod(argv[1], &end);
        if (errno || *end || !(seconds > 0) || seconds > 1e6 ||
            parse_u64(argv[2], &min) || parse_u64(argv[3], &max) || parse_u64(argv[4], &chunks) ||
            parse_u64(argv[5], &rounds) || parse_u64(argv[6], &seed) || parse_u64(argv[7], &threads))
            usage();
        if (min < 1 || max < min || max > (1u << 30) || chunks < 1 || chunks > (1u << 26) ||
            rounds < 1 || rounds > (1ull << 32) || threads < 1 || threads > 4096)
            usage();
    }
    g_min = (uint32_t)min;
    g_max = (uint32_t)max;
    g_chunks = (uint32_t)chunks;
    g_rounds = rounds;

    chain_t *ch = calloc(threads, sizeof *ch);
    if (!ch)
        fail("calloc of chain table");
    /* the main thread pre-fills every array, so generation 0 frees foreign blocks */
    for (uint64_t t = 0; t < threads; t++) {
        chain_t *c = &ch[t];
        c->rng = rng_init(seed * 0x100000001b3ULL + t);
        c->slots = xmalloc(sizeof(slot_t) * chunks);
        for (uint64_t i = 0; i < chunks; i++) {
            uint64_t r = rng_next(&c->rng);
            uint32_t n = g_min + (uint32_t)((r >> 32) % (g_max - g_min + 1));
            void *p = xmalloc(n);
            stamp(p, n, (uint32_t)r);
            c->slots[i] = (slot_t){p, n, (uint32_t)r};
        }
    }

    double t0 = now_sec();
    for (uint64_t t = 0; t < threads; t++) {
        pthread_t tid;
        int e = pthread_create(&tid, NULL, worker, &ch[t]);
        if (e != 0)
            fail("pthread_create: %s", strerror(e));
    }
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    atomic_store(&g_stop, 1);
    pthread_mutex_lock(&g_mu);
    for (uint64_t t = 0; t < threads; t++)
        while (!ch[t].finished)
            pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    for (uint64_t t = 0; t < threads; t++) {
        int e = pthread_join(ch[t].last, NULL);
        if (e != 0)
            fail("pthread_join: %s", strerror(e));
    }
    double el = now_sec() - t0;

    uint64_t ops = 0, gens = 0;
    for (uint64_t t = 0; t < threads; t++) {
        ops += ch[t].ops;
        gens += ch[t].generations;
        for (uint64_t i = 0; i < chunks; i++) {
            slot_t *s = &ch[t].slots[i];
            check(s->p, s->n, s->key, "final");
            free(s->p);
        }
        free(ch[t].slots);
    }
    free(ch);
    fprintf(stderr, "larson: %llu malloc+free pairs in %.3f s by %llu threads (%llu chains)\n",
            (unsigned long long)ops, el, (unsigned long long)gens, (unsigned long long)threads);
    printf("RESULT name=larson threads=%llu ops_per_sec=%.0f maxrss_kb=%ld\n",
           (unsigned long long)threads, (double)ops / el, maxrss_kb());
    return 0;
}

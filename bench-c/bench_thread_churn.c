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

/* Thread churn: create threads_total short-lived threads, at most `concurrent` alive at a
 * time.  Each thread first takes one hand-off batch left by an earlier thread (if any),
 * verifies and frees it (cross-thread frees of blocks whose owner thread has exited), then
 * performs allocs_per_thread allocations of 16..512 bytes into a 64-slot window (replacing
 * and freeing locally as it goes); at exit it leaves half of the remaining window as a
 * hand-off batch for a later thread and frees the rest.
 * Metric: ops_per_sec = threads completed per second. */

#define WINDOW 64

typedef struct {
    void *p;
    uint32_t n;
    uint32_t key;
} blk_t;

typedef struct batch {
    struct batch *next;
    uint32_t count;
    blk_t b[WINDOW / 2];
} batch_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static batch_t *g_mail;      /* hand-off batches (LIFO), protected by g_mu */
static uint32_t *g_finished; /* finished slot indices, protected by g_mu */
static uint32_t g_nfinished;
static uint64_t g_allocs;

typedef struct {
    uint32_t slot;
    uint64_t seq;
} targ_t;

static void *worker(void *arg)
{
    targ_t *a = arg;
    uint64_t rng = rng_init(0xc4a5ULL ^ (a->seq * 0x9e3779b97f4a7c15ULL));
    pthread_mutex_lock(&g_mu);
    batch_t *in = g_mail;
    if (in)
        g_mail = in->next;
    pthread_mutex_unlock(&g_mu);
    if (in) {
        for (uint32_t i = 0; i < in->count; i++) {
            check(in->b[i].p, in->b[i].n, in->b[i].key, "hand-off");
            free(in->b[i].p);
        }
        free(in);
    }

    blk_t w[WINDOW];
    memset(w, 0, sizeof w);
    for (uint64_t k = 0; k < g_allocs; k++) {
        uint64_t r = rng_next(&rng);
        uint32_t i = (uint32_t)(r & (WINDOW - 1));
        if (w[i].p) {
            check(w[i].p, w[i].n, w[i].key, "local");
            free(w[i].p);
        }
        uint32_t n = 16 + (uint32_t)(((r >> 32) * 497u) >> 32); /* 16..512 */
        uint32_t key = (uint32_t)(r >> 8);
        void *p = xmalloc(n);
        stamp(p, n, key);
        w[i] = (blk_t){p, n, key};
    }
    batch_t *out = xmalloc(sizeof *out);
    out->count = 0;
    for (uint32_t i = 0; i < WINDOW; i++) {
        if (!w[i].p)
            continue;
        if ((i & 1) == 0) {
            out->b[out->count++] = w[i];
        } else {
            check(w[i].p, w[i].n, w[i].key, "local exit");
            free(w[i].p);
        }
    }
    const int handed = out->count != 0; /* out may be taken and freed once published */
    pthread_mutex_lock(&g_mu);
    if (handed) {
        out->next = g_mail;
        g_mail = out;
    }
    g_finished[g_nfinished++] = a->slot;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    if (!handed)
        free(out);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_thread_churn [threads_total concurrent allocs_per_thread]\n"
                    "  e.g. bench_thread_churn 20000 2 1000   (all arguments or none)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "bench_thread_churn";
    uint64_t total = 20000, conc = 2, allocs = 1000;
    if (argc != 1) {
        if (argc != 4 || parse_u64(argv[1], &total) || parse_u64(argv[2], &conc) ||
            parse_u64(argv[3], &allocs))
            usage();
        if (total < 1 || conc < 1 || conc > 4096)
            usage();
    }
    if (conc > total)
        conc = total;
    g_allocs = allocs;
    pthread_t *tid = xmalloc(sizeof(pthread_t) * conc);
    targ_t *args = xmalloc(sizeof(targ_t) * conc);
    g_finished = xmalloc(sizeof(uint32_t) * conc);
    uint32_t *freeslots = xmalloc(sizeof(uint32_t) * conc);
    uint32_t *done = xmalloc(sizeof(uint32_t) * conc);
    uint32_t nfree = 0;
    for (uint32_t i = 0; i < conc; i++)
        freeslots[nfree++] = (uint32_t)conc - 1 - i;

    double t0 = now_sec();
    uint64_t started = 0, joined = 0;
    while (joined < total) {
        while (nfree > 0 && started < total) {
            uint32_t s = freeslots[--nfree];
            args[s] = (targ_t){s, started};
            int e = pthread_create(&tid[s], NULL, worker, &args[s]);
            if (e != 0)
                fail("pthread_create: %s", strerror(e));
            started++;
        }
        pthread_mutex_lock(&g_mu);
        while (g_nfinished == 0)
            pthread_cond_wait(&g_cv, &g_mu);
        uint32_t n = g_nfinished;
        memcpy(done, g_finished, n * sizeof(uint32_t));
        g_nfinished = 0;
        pthread_mutex_unlock(&g_mu);
        for (uint32_t i = 0; i < n; i++) {
            int e = pthread_join(tid[done[i]], NULL);
            if (e != 0)
                fail("pthread_join: %s", strerror(e));
            freeslots[nfree++] = done[i];
            joined++;
        }
    }
    double el = now_sec() - t0;

    uint64_t left = 0;
    while (g_mail) {
        batch_t *b = g_mail;
        g_mail = b->next;
        for (uint32_t i = 0; i < b->count; i++) {
            check(b->b[i].p, b->b[i].n, b->b[i].key, "final");
            free(b->b[i].p);
            left++;
        }
        free(b);
    }
    free(tid);
    free(args);
    free(g_finished);
    free(freeslots);
    free(done);
    fprintf(stderr, "bench_thread_churn: %llu threads (%llu concurrent, %llu allocs each) in %.3f s, "
                    "%.0f allocs/s, %llu blocks left in hand-off at end\n",
            (unsigned long long)total, (unsigned long long)conc, (unsigned long long)allocs, el,
            el > 0 ? (double)(total * allocs) / el : 0.0, (unsigned long long)left);
    printf("RESULT name=bench_thread_churn threads=%llu ops_per_sec=%.0f maxrss_kb=%ld\n",
           (unsigned long long)conc, el > 0 ? (double)total / el : 0.0, maxrss_kb());
    return 0;
}

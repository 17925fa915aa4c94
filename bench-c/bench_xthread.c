/* Cross-thread producer/consumer.  P = max(1, threads/2) producers, C = max(1, threads-P)
 * consumers.  Every (producer, consumer) pair has a bounded single-producer/single-consumer
 * lock-free ring; producers malloc+stamp blocks and push them in batches, round-robin over
 * the consumers; consumers verify and free.  ops_per_sec = blocks / second. */
#include "bench_common.h"
#include <pthread.h>
#include <sched.h>

#define RING_CAP 4096u /* power of two */
#define BATCH 32u

typedef struct {
    _Alignas(64) atomic_size_t tail; /* producer writes */
    size_t head_cache;                /* producer-private */
    _Alignas(64) atomic_size_t head; /* consumer writes */
    _Alignas(64) atomic_int done;
    block_t buf[RING_CAP];
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
            r->buf[(t + j) & (RING_CAP - 1)] = block_new(g_smin + (uint32_t)((x >> 32) % span), (uint32_t)x);
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
                block_free(&r->buf[h & (RING_CAP - 1)], "consumer");
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

static const char usage_text[] =
    "usage: bench_xthread [iterations_per_producer size_min size_max threads]\n"
    "  e.g. bench_xthread 15000000 16 512 2   (all arguments or none;\n"
    "  threads/2 producers (>=1), the rest consumers (>=1))\n";

int main(int argc, char **argv)
{
    g_name = "bench_xthread";
    uint64_t iters = 15000000, smin = 16, smax = 512, threads = 2;
    if (PARSE_ARGS(argc, argv, usage_text, &iters, &smin, &smax, &threads) &&
        (smin < 1 || smax < smin || smax > (1u << 30) || threads < 1 || threads > 1024))
        usage_exit(usage_text);
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
    for (uint32_t i = 0; i < total; i++)
        check_pthread(i < g_P ? pthread_create(&tid[i], NULL, producer, (void *)(uintptr_t)i)
                              : pthread_create(&tid[i], NULL, consumer, (void *)(uintptr_t)(i - g_P)),
                      "pthread_create");
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
    bench_result(total, "ops_per_sec", per_sec((double)want, el), 0);
    return 0;
}

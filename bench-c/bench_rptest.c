/* rptest: a live set that grows and shrinks, with some blocks freed by another thread
 * (in the spirit of rpmalloc's rptest).
 *
 * Each thread runs cycles until it has made ops_per_thread allocations:
 *   grow:   allocate blocks of random sizes 8 B..16 KiB (log-uniform: mostly small) until its
 *           live set reaches a random target in [max_live/2, max_live];
 *   shrink: take random live blocks out until the live set is down to a random level in
 *           [0, max_live/4]; each one is freed here, except that with probability
 *           cross_pct % (when threads > 1) it goes to a random other thread's inbox instead.
 * Outgoing blocks are gathered per destination in batches of XBATCH (the batch container is
 * malloc'ed here and freed by the receiver) and pushed onto the receiver's lock-free inbox
 * stack; every thread empties its inbox after each grow and shrink phase, checking and
 * freeing what it finds.  When a thread is done it frees its remaining blocks, sends its
 * partial batches, and keeps emptying its inbox until every thread is done.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads         threads, 1..1024
 *   ops_per_thread  allocations per thread
 *   max_live        maximum live blocks per thread, 4..2^24
 *   cross_pct       percentage (0..100) of shrink-phase frees sent to another thread
 *   seed            PRNG seed
 * Defaults: 2 3000000 4096 10 1.
 *
 * Metric: ops_per_sec = allocations per second, all threads (every allocation is also
 * checked and freed within the timed region). */
#include "bench_common.h"
#include <pthread.h>
#include <sched.h>

#define XBATCH 32u

typedef struct xbatch {
    struct xbatch *next;
    uint64_t tag; /* block_tag(container, n, from): the container is checked too */
    uint32_t n;
    uint32_t from;
    block_t b[XBATCH];
} xbatch_t;

typedef struct {
    _Alignas(64) _Atomic(xbatch_t *) inbox; /* Treiber stack, emptied whole by the owner */
    _Alignas(64) uint64_t allocs, frees, sent;
    uint32_t id;
} tstate_t;

static tstate_t *g_ts;
static uint32_t g_threads, g_max_live, g_cross;
static uint64_t g_ops, g_seed;
static atomic_uint g_finished;
static pthread_barrier_t g_bar;

/* spin briefly, then yield, then sleep: the thread being waited for may not be running */
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

/* 8 B .. 16 KiB - 1, log-uniform over the powers of two */
static inline uint32_t draw_size(uint64_t *rng)
{
    unsigned s = 3 + rng_below(rng, 11);
    return (1u << s) + rng_below(rng, 1u << s);
}

static void send_batch(tstate_t *me, uint32_t dest, xbatch_t *bt)
{
    const uint32_t n = bt->n; /* bt may be freed by the receiver as soon as it is pushed */
    bt->from = me->id;
    bt->tag = block_tag(bt, n, me->id);
    _Atomic(xbatch_t *) *in = &g_ts[dest].inbox;
    xbatch_t *old = atomic_load_explicit(in, memory_order_relaxed);
    do
        bt->next = old;
    while (!atomic_compare_exchange_weak_explicit(in, &old, bt, memory_order_release, memory_order_relaxed));
    me->sent += n;
}

/* check and free everything in my inbox; returns the number of blocks freed */
static uint64_t drain(tstate_t *me)
{
    xbatch_t *list = atomic_exchange_explicit(&me->inbox, NULL, memory_order_acquire);
    uint64_t n = 0;
    while (list) {
        xbatch_t *bt = list;
        list = bt->next;
        if (bt->n == 0 || bt->n > XBATCH || bt->from >= g_threads || bt->tag != block_tag(bt, bt->n, bt->from))
            fail("inbox batch container %p corrupted", (void *)bt);
        for (uint32_t i = 0; i < bt->n; i++)
            block_free(&bt->b[i], "inbox");
        n += bt->n;
        free(bt);
    }
    me->frees += n;
    return n;
}

static void *worker(void *arg)
{
    tstate_t *me = arg;
    uint64_t rng = rng_init(g_seed * 0x100000001b3ULL + me->id);
    block_t *live = xmalloc(sizeof(block_t) * g_max_live);
    xbatch_t **out = calloc(g_threads, sizeof(xbatch_t *));
    if (!out)
        fail("calloc");
    uint32_t n = 0;
    uint64_t done = 0, frees = 0;
    pthread_barrier_wait(&g_bar);
    while (done < g_ops) {
        uint32_t target = g_max_live / 2 + rng_below(&rng, g_max_live - g_max_live / 2 + 1);
        while (n < target && done < g_ops) {
            uint64_t r = rng_next(&rng);
            live[n++] = block_new(draw_size(&rng), (uint32_t)r);
            done++;
        }
        drain(me);
        uint32_t low = rng_below(&rng, g_max_live / 4 + 1);
        while (n > low) {
            uint32_t i = rng_below(&rng, n);
            block_t b = live[i];
            live[i] = live[--n];
            if (g_threads > 1 && rng_below(&rng, 100) < g_cross) {
                uint32_t d = (me->id + 1 + rng_below(&rng, g_threads - 1)) % g_threads;
                xbatch_t *bt = out[d];
                if (!bt) {
                    bt = out[d] = xmalloc(sizeof *bt);
                    bt->n = 0;
                }
                bt->b[bt->n++] = b;
                if (bt->n == XBATCH) {
                    send_batch(me, d, bt);
                    out[d] = NULL;
                }
            } else {
                block_free(&b, "local");
                frees++;
            }
        }
        drain(me);
    }
    while (n > 0)
        block_free(&live[--n], "local at end"), frees++;
    for (uint32_t d = 0; d < g_threads; d++)
        if (out[d])
            send_batch(me, d, out[d]);
    me->allocs = done;
    atomic_fetch_add_explicit(&g_finished, 1, memory_order_acq_rel);
    unsigned spins = 0;
    while (atomic_load_explicit(&g_finished, memory_order_acquire) < g_threads)
        if (drain(me))
            spins = 0;
        else
            backoff(&spins);
    drain(me); /* every send happened before its sender's increment of g_finished */
    me->frees += frees;
    free(out);
    free(live);
    return NULL;
}

static const char usage_text[] =
    "usage: bench_rptest [threads ops_per_thread max_live cross_pct seed]\n"
    "  e.g. bench_rptest 2 3000000 4096 10 1   (all arguments or none; threads 1..1024,\n"
    "  max_live 4..16777216 blocks per thread, cross_pct 0..100)\n";

int main(int argc, char **argv)
{
    g_name = "bench_rptest";
    uint64_t threads = 2, ops = 3000000, max_live = 4096, cross = 10, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &ops, &max_live, &cross, &seed) &&
        (threads < 1 || threads > 1024 || max_live < 4 || max_live > (1u << 24) || cross > 100 ||
         ops > (1ull << 40)))
        usage_exit(usage_text);
    g_threads = (uint32_t)threads;
    g_ops = ops;
    g_max_live = (uint32_t)max_live;
    g_cross = (uint32_t)cross;
    g_seed = seed;
    g_ts = aligned_alloc(64, threads * sizeof(tstate_t));
    if (!g_ts)
        fail("aligned_alloc of thread states");
    memset(g_ts, 0, threads * sizeof(tstate_t));
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    check_pthread(pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1), "pthread_barrier_init");
    for (uint32_t t = 0; t < threads; t++) {
        g_ts[t].id = t;
        atomic_init(&g_ts[t].inbox, NULL);
        check_pthread(pthread_create(&tid[t], NULL, worker, &g_ts[t]), "pthread_create");
    }
    pthread_barrier_wait(&g_bar);
    double t0 = now_sec();
    for (uint32_t t = 0; t < threads; t++)
        check_pthread(pthread_join(tid[t], NULL), "pthread_join");
    double el = now_sec() - t0;

    uint64_t allocs = 0, frees = 0, sent = 0;
    for (uint32_t t = 0; t < threads; t++) {
        if (atomic_load(&g_ts[t].inbox) != NULL)
            fail("thread %u exited with a non-empty inbox", t);
        allocs += g_ts[t].allocs;
        frees += g_ts[t].frees;
        sent += g_ts[t].sent;
    }
    if (allocs != threads * ops || frees != allocs)
        fail("%llu allocations, %llu frees, %llu expected", (unsigned long long)allocs,
             (unsigned long long)frees, (unsigned long long)(threads * ops));
    pthread_barrier_destroy(&g_bar);
    free(tid);
    free(g_ts);
    fprintf(stderr, "bench_rptest: %llu allocations (%llu freed by another thread), %llu threads, %.3f s\n",
            (unsigned long long)allocs, (unsigned long long)sent, (unsigned long long)threads, el);
    bench_result(threads, "ops_per_sec", per_sec((double)allocs, el), 0);
    return 0;
}

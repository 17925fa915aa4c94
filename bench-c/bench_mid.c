/* Mid-size random replacement: like bench_random_mixed but block sizes are roughly
 * log-uniform in 1 KiB .. 256 KiB (pick an octave 1K<<k, k in 0..7, then uniform within it).
 * Every block gets its header, bytes 8..15, last 8 bytes and one byte per 4 KiB page touched.
 * Threads are independent; iterations and working_set are per thread. */
#include "bench_common.h"
#include <pthread.h>

static uint64_t g_iters, g_ws, g_seed;
static pthread_barrier_t g_bar;

static inline uint32_t mid_size(uint64_t r)
{
    uint32_t base = 1024u << (r & 7);                       /* 1 KiB .. 128 KiB */
    return base + (uint32_t)(((r >> 32) * (uint64_t)base) >> 32); /* .. 256 KiB - 1 */
}

/* A new block of mid_size(r) bytes, key (uint32_t)(r >> 3): block_new's stamp plus one byte
 * in every 4 KiB page after the first (derived from the key). */
static inline block_t mid_new(uint64_t r)
{
    block_t blk = block_new(mid_size(r), (uint32_t)(r >> 3));
    unsigned char *b = blk.p;
    for (uint32_t off = 4096; off + 8 < blk.n; off += 4096)
        b[off] = (unsigned char)(blk.key ^ (off >> 12));
    return blk;
}

/* Verify what mid_new wrote (block_free's check plus the page bytes), then free. */
static inline void mid_free(const block_t *blk, const char *where)
{
    const unsigned char *b = blk->p;
    check(blk->p, blk->n, blk->key, where);
    for (uint32_t off = 4096; off + 8 < blk->n; off += 4096)
        if (__builtin_expect(b[off] != (unsigned char)(blk->key ^ (off >> 12)), 0))
            fail("corrupted page byte at offset %u of block %p size %u (%s)", off, blk->p, blk->n, where);
    free(blk->p);
}

static void *worker(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t rng = rng_init(g_seed * 0x100000001b3ULL + id);
    block_t *s = xmalloc(sizeof(block_t) * g_ws);
    for (uint64_t i = 0; i < g_ws; i++)
        s[i] = mid_new(rng_next(&rng));
    pthread_barrier_wait(&g_bar);
    for (uint64_t it = 0; it < g_iters; it++) {
        uint32_t i = rng_below(&rng, (uint32_t)g_ws);
        mid_free(&s[i], "replace");
        s[i] = mid_new(rng_next(&rng));
    }
    pthread_barrier_wait(&g_bar);
    for (uint64_t i = 0; i < g_ws; i++)
        mid_free(&s[i], "final");
    free(s);
    return NULL;
}

static const char usage_text[] =
    "usage: bench_mid [iterations working_set seed threads]\n"
    "  e.g. bench_mid 1000000 256 7 2   (all arguments or none; iterations and\n"
    "  working_set are per thread)\n";

int main(int argc, char **argv)
{
    g_name = "bench_mid";
    uint64_t threads = 2;
    g_iters = 1000000;
    g_ws = 256;
    g_seed = 7;
    if (PARSE_ARGS(argc, argv, usage_text, &g_iters, &g_ws, &g_seed, &threads) &&
        (g_ws < 1 || g_ws > (1u << 24) || threads < 1 || threads > 1024))
        usage_exit(usage_text);
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    if (pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1) != 0)
        fail("pthread_barrier_init");
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t), "pthread_create");
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
    bench_result(threads, "ops_per_sec", per_sec((double)ops, el), 0);
    return 0;
}

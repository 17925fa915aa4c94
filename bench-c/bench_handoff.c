/* Thread rotation hand-off: threads that allocate, hand their blocks over and exit.
 *
 * In each of `rounds` rounds the main thread starts `workers` threads and joins them.
 * Worker w of round r first checks and frees the set that worker (w+1) % workers of round
 * r-1 left behind (blocks allocated by a thread that has already exited), then allocates
 * `blocks` blocks of mixed sizes 16..4096 B (log-uniform), stamps them, leaves them in its
 * slot of a shared array for the next round and exits.  After the last round the main
 * thread checks and frees the last sets.  At most two rounds' sets are live at any time, so
 * memory should stay flat: an allocator that does not reclaim (or reuse) the memory of
 * exited threads shows it in maxrss_kb.
 *
 * Arguments (all or none, unsigned decimal):
 *   rounds   rounds (each starts and joins `workers` threads)
 *   workers  threads per round, 1..1024
 *   blocks   blocks allocated by each worker, 1..2^24
 *   seed     PRNG seed
 * Defaults: 3000 2 1000 1.
 *
 * Metric: ops_per_sec = blocks allocated (each also freed by a later thread) per second,
 * thread creation and exit included; the main thread's final frees are untimed. */
#include "bench_common.h"
#include <pthread.h>

typedef struct {
    uint64_t round;
    uint32_t w;
} warg_t;

static block_t *g_set[2]; /* [round & 1][w * blocks + i] */
static uint32_t g_workers, g_blocks;
static uint64_t g_seed;

/* 16 .. 4096 B, log-uniform over the powers of two */
static inline uint32_t draw_size(uint64_t *rng)
{
    unsigned s = 4 + rng_below(rng, 8);
    uint32_t n = (1u << s) + rng_below(rng, (1u << s) + 1);
    return n > 4096 ? 4096 : n;
}

static void *worker(void *arg)
{
    const warg_t *a = arg;
    if (a->round > 0) {
        const block_t *prev = g_set[(a->round - 1) & 1] + (size_t)((a->w + 1) % g_workers) * g_blocks;
        for (uint32_t i = 0; i < g_blocks; i++)
            block_free(&prev[i], "handed off by an exited thread");
    }
    block_t *cur = g_set[a->round & 1] + (size_t)a->w * g_blocks;
    uint64_t rng = rng_init(g_seed ^ mix64(a->round * g_workers + a->w + 1));
    for (uint32_t i = 0; i < g_blocks; i++) {
        uint64_t r = rng_next(&rng);
        cur[i] = block_new(draw_size(&rng), (uint32_t)r);
    }
    return NULL;
}

static const char usage_text[] =
    "usage: bench_handoff [rounds workers blocks seed]\n"
    "  e.g. bench_handoff 3000 2 1000 1   (all arguments or none; rounds >= 1,\n"
    "  workers 1..1024 threads per round, blocks 1..16777216 per worker)\n";

int main(int argc, char **argv)
{
    g_name = "bench_handoff";
    uint64_t rounds = 3000, workers = 2, blocks = 1000, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &rounds, &workers, &blocks, &seed) &&
        (rounds < 1 || rounds > (1ull << 40) || workers < 1 || workers > 1024 || blocks < 1 ||
         blocks > (1u << 24)))
        usage_exit(usage_text);
    g_workers = (uint32_t)workers;
    g_blocks = (uint32_t)blocks;
    g_seed = seed;
    for (int k = 0; k < 2; k++)
        g_set[k] = xmalloc(sizeof(block_t) * workers * blocks);
    pthread_t *tid = xmalloc(sizeof(pthread_t) * workers);
    warg_t *args = xmalloc(sizeof(warg_t) * workers);

    double t0 = now_sec();
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint32_t w = 0; w < workers; w++) {
            args[w] = (warg_t){r, w};
            check_pthread(pthread_create(&tid[w], NULL, worker, &args[w]), "pthread_create");
        }
        for (uint32_t w = 0; w < workers; w++)
            check_pthread(pthread_join(tid[w], NULL), "pthread_join");
    }
    double el = now_sec() - t0;

    const block_t *last = g_set[(rounds - 1) & 1];
    for (uint64_t i = 0; i < workers * blocks; i++)
        block_free(&last[i], "final");
    free(args);
    free(tid);
    free(g_set[0]);
    free(g_set[1]);
    double total = (double)rounds * (double)workers * (double)blocks;
    fprintf(stderr, "bench_handoff: %llu rounds x %llu workers x %llu blocks in %.3f s (%.0f threads/s)\n",
            (unsigned long long)rounds, (unsigned long long)workers, (unsigned long long)blocks, el,
            per_sec((double)rounds * (double)workers, el));
    bench_result(workers, "ops_per_sec", per_sec(total, el), 0);
    return 0;
}

/* Larson & Krishnan style server workload.
 * Each "chain" owns an array of chunks_per_thread blocks.  A thread of the chain does
 * rounds*chunks_per_thread replace operations (verify+free a random slot, malloc a new
 * random-size block there), then creates a successor thread that takes over the array
 * (and therefore frees blocks this thread allocated) and exits.  After `seconds` the
 * chains stop, the main thread joins the last thread of every chain and frees all. */
#include "bench_common.h"
#include <pthread.h>

typedef struct {
    block_t *slots;
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
    if (c->has_prev)
        check_pthread(pthread_join(c->prev, NULL), "pthread_join of predecessor");
    block_t *s = c->slots;
    uint64_t rng = c->rng;
    const uint64_t todo = g_rounds * g_chunks;
    const uint32_t span = g_max - g_min + 1;
    uint64_t done = 0;
    while (done < todo) {
        if ((done & 63) == 0 && atomic_load_explicit(&g_stop, memory_order_relaxed))
            break;
        uint32_t i = rng_below(&rng, g_chunks);
        block_free(&s[i], "replace");
        uint64_t r = rng_next(&rng);
        s[i] = block_new(g_min + (uint32_t)((r >> 32) % span), (uint32_t)r);
        done++;
    }
    c->rng = rng;
    c->ops += done;
    c->generations++;
    if (done == todo && !atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        pthread_t t;
        c->prev = pthread_self();
        c->has_prev = 1;
        check_pthread(pthread_create(&t, NULL, worker, c), "pthread_create of successor");
        return NULL; /* c now belongs to the successor */
    }
    pthread_mutex_lock(&g_mu);
    c->last = pthread_self();
    c->finished = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static const char usage_text[] =
    "usage: larson [seconds min_size max_size chunks_per_thread rounds seed threads]\n"
    "  e.g. larson 1 8 1000 5000 100 4141 2   (all arguments or none; seconds may be fractional)\n";

int main(int argc, char **argv)
{
    g_name = "larson";
    double seconds = 1.0;
    uint64_t min = 8, max = 1000, chunks = 5000, rounds = 100, seed = 4141, threads = 2;
    if (argc != 1) {
        char *end;
        if (argc != 8)
            usage_exit(usage_text);
        errno = 0;
        seconds = strtod(argv[1], &end);
        if (errno || *end || !(seconds > 0) || seconds > 1e6)
            usage_exit(usage_text);
        /* argv[1] (seconds) stands where argv[0] would: the rest are the 6 integers */
        PARSE_ARGS(argc - 1, argv + 1, usage_text, &min, &max, &chunks, &rounds, &seed, &threads);
        if (min < 1 || max < min || max > (1u << 30) || chunks < 1 || chunks > (1u << 26) ||
            rounds < 1 || rounds > (1ull << 32) || threads < 1 || threads > 4096)
            usage_exit(usage_text);
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
        c->slots = xmalloc(sizeof(block_t) * chunks);
        for (uint64_t i = 0; i < chunks; i++) {
            uint64_t r = rng_next(&c->rng);
            c->slots[i] = block_new(g_min + (uint32_t)((r >> 32) % (g_max - g_min + 1)), (uint32_t)r);
        }
    }

    double t0 = now_sec();
    for (uint64_t t = 0; t < threads; t++) {
        pthread_t tid;
        check_pthread(pthread_create(&tid, NULL, worker, &ch[t]), "pthread_create");
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
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_join(ch[t].last, NULL), "pthread_join");
    double el = now_sec() - t0;

    uint64_t ops = 0, gens = 0;
    for (uint64_t t = 0; t < threads; t++) {
        ops += ch[t].ops;
        gens += ch[t].generations;
        for (uint64_t i = 0; i < chunks; i++)
            block_free(&ch[t].slots[i], "final");
        free(ch[t].slots);
    }
    free(ch);
    fprintf(stderr, "larson: %llu malloc+free pairs in %.3f s by %llu threads (%llu chains)\n",
            (unsigned long long)ops, el, (unsigned long long)gens, (unsigned long long)threads);
    bench_result(threads, "ops_per_sec", per_sec((double)ops, el), 0);
    return 0;
}

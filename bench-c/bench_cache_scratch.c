/* Passive false sharing (in the spirit of Berger et al.'s cache-scratch).
 *
 * The main thread allocates one small object per worker, back to back (so with most
 * allocators several of them share a cache line), stamps them and hands one to each
 * worker.  Each worker checks and frees the object it was given, then `iterations` times:
 * allocates an object of the same size, writes every byte of it `writes` times (volatile
 * byte increments), undoes the writes, checks and frees it.  An allocator that lets the
 * worker's free put main's block in the worker's own cache and hands it straight back
 * gives threads blocks on the same cache line: the writes then bounce that line between
 * cores and the run is many times slower.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads      worker threads, 1..1024
 *   iterations   allocate/write/free cycles per thread
 *   object_size  bytes per object, 1..4096
 *   writes       write passes over each object (each pass writes every byte once)
 * Defaults: 2 80000 8 2000.
 *
 * Metric: ops_per_sec = object write passes per second, all threads together
 * (threads * iterations * writes / elapsed). */
#include "bench_common.h"
#include <pthread.h>

typedef struct {
    _Alignas(64) void *given; /* main's object, handed to this worker */
    uint32_t id;
} warg_t;

static uint64_t g_iters, g_size, g_writes;
static pthread_barrier_t g_bar;

/* write every byte of p `writes` times, then undo the net change so check() still holds */
static inline void hammer(void *p, size_t n, uint64_t writes)
{
    volatile unsigned char *v = p;
    for (uint64_t w = 0; w < writes; w++)
        for (size_t i = 0; i < n; i++)
            v[i]++;
    unsigned char d = (unsigned char)writes;
    for (size_t i = 0; i < n; i++)
        v[i] = (unsigned char)(v[i] - d);
}

static void *worker(void *arg)
{
    warg_t *a = arg;
    const size_t n = (size_t)g_size;
    pthread_barrier_wait(&g_bar);
    check(a->given, n, a->id, "object handed over by main");
    free(a->given);
    for (uint64_t it = 0; it < g_iters; it++) {
        uint32_t key = (uint32_t)(it * 0x9e3779b9u) ^ a->id;
        void *p = xmalloc(n);
        stamp(p, n, key);
        hammer(p, n, g_writes);
        check(p, n, key, "worker object after writes");
        free(p);
    }
    return NULL;
}

static const char usage_text[] =
    "usage: bench_cache_scratch [threads iterations object_size writes]\n"
    "  e.g. bench_cache_scratch 2 80000 8 2000   (all arguments or none;\n"
    "  threads 1..1024, object_size 1..4096, writes = write passes per object)\n";

int main(int argc, char **argv)
{
    g_name = "bench_cache_scratch";
    uint64_t threads = 2, iters = 80000, size = 8, writes = 2000;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &iters, &size, &writes) &&
        (threads < 1 || threads > 1024 || size < 1 || size > 4096 || writes > (1ull << 40)))
        usage_exit(usage_text);
    g_iters = iters;
    g_size = size;
    g_writes = writes;
    warg_t *args = aligned_alloc(64, threads * sizeof(warg_t));
    if (!args)
        fail("aligned_alloc of thread arguments");
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    /* back-to-back small objects from the main thread, one per worker */
    for (uint64_t t = 0; t < threads; t++) {
        args[t].id = (uint32_t)t;
        args[t].given = xmalloc(size);
        stamp(args[t].given, size, (uint32_t)t);
    }
    check_pthread(pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1), "pthread_barrier_init");
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_create(&tid[t], NULL, worker, &args[t]), "pthread_create");
    pthread_barrier_wait(&g_bar);
    double t0 = now_sec();
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_join(tid[t], NULL), "pthread_join");
    double el = now_sec() - t0;
    pthread_barrier_destroy(&g_bar);
    free(tid);
    free(args);
    double ops = (double)threads * (double)iters * (double)writes;
    fprintf(stderr, "bench_cache_scratch: %llu threads x %llu objects of %llu B x %llu writes in %.3f s\n",
            (unsigned long long)threads, (unsigned long long)iters, (unsigned long long)size,
            (unsigned long long)writes, el);
    bench_result(threads, "ops_per_sec", per_sec(ops, el), 0);
    return 0;
}

/* Active false sharing (in the spirit of Berger et al.'s cache-thrash).
 *
 * Each thread, independently and with nothing handed over, `iterations` times: allocates
 * a small object, stamps it, writes every byte of it `writes` times (volatile byte
 * increments), undoes the writes, checks and frees it.  An allocator that carves the
 * objects of different threads out of the same cache line makes the threads' writes
 * bounce that line between cores; one with per-thread (or per-CPU) memory does not.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads      threads, 1..1024
 *   iterations   allocate/write/free cycles per thread
 *   object_size  bytes per object, 1..4096
 *   writes       write passes over each object (each pass writes every byte once)
 * Defaults: 2 150000 8 2000.
 *
 * Metric: ops_per_sec = object write passes per second, all threads together
 * (threads * iterations * writes / elapsed). */
#include "bench_common.h"
#include <pthread.h>

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
    uint32_t id = (uint32_t)(uintptr_t)arg;
    const size_t n = (size_t)g_size;
    pthread_barrier_wait(&g_bar);
    for (uint64_t it = 0; it < g_iters; it++) {
        uint32_t key = (uint32_t)(it * 0x9e3779b9u) ^ id;
        void *p = xmalloc(n);
        stamp(p, n, key);
        hammer(p, n, g_writes);
        check(p, n, key, "object after writes");
        free(p);
    }
    return NULL;
}

static const char usage_text[] =
    "usage: bench_cache_thrash [threads iterations object_size writes]\n"
    "  e.g. bench_cache_thrash 2 150000 8 2000   (all arguments or none;\n"
    "  threads 1..1024, object_size 1..4096, writes = write passes per object)\n";

int main(int argc, char **argv)
{
    g_name = "bench_cache_thrash";
    uint64_t threads = 2, iters = 150000, size = 8, writes = 2000;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &iters, &size, &writes) &&
        (threads < 1 || threads > 1024 || size < 1 || size > 4096 || writes > (1ull << 40)))
        usage_exit(usage_text);
    g_iters = iters;
    g_size = size;
    g_writes = writes;
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    check_pthread(pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1), "pthread_barrier_init");
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t), "pthread_create");
    pthread_barrier_wait(&g_bar);
    double t0 = now_sec();
    for (uint64_t t = 0; t < threads; t++)
        check_pthread(pthread_join(tid[t], NULL), "pthread_join");
    double el = now_sec() - t0;
    pthread_barrier_destroy(&g_bar);
    free(tid);
    double ops = (double)threads * (double)iters * (double)writes;
    fprintf(stderr, "bench_cache_thrash: %llu threads x %llu objects of %llu B x %llu writes in %.3f s\n",
            (unsigned long long)threads, (unsigned long long)iters, (unsigned long long)size,
            (unsigned long long)writes, el);
    bench_result(threads, "ops_per_sec", per_sec(ops, el), 0);
    return 0;
}

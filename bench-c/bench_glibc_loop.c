/* Tight malloc/free loops (in the spirit of glibc's bench-malloc-simple and
 * bench-malloc-thread).
 *
 * Each thread, independently: `iterations` times, allocates `batch` blocks and then frees
 * them in the same (FIFO) order.  Block sizes cycle through 16, 64, 256, 1024 and 4096 B
 * (block j of the thread's whole sequence has size SIZES[j % 5]).  Every block is stamped
 * on allocation and checked before it is freed.  No block crosses threads.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads     threads, 1..1024
 *   iterations  batches per thread
 *   batch       blocks allocated (then freed) per batch, 1..2^24
 * Defaults: 1 300000 100.
 *
 * Metric: ops_per_sec = malloc+free pairs per second, all threads together
 * (threads * iterations * batch / elapsed). */
#include "bench_common.h"
#include <pthread.h>

static const uint32_t SIZES[5] = {16, 64, 256, 1024, 4096};

static uint64_t g_iters, g_batch;
static pthread_barrier_t g_bar;

static void *worker(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    const uint64_t k = g_batch;
    block_t *a = xmalloc(sizeof(block_t) * k);
    uint32_t c = 0, key = id * 0x9e3779b9u;
    pthread_barrier_wait(&g_bar);
    for (uint64_t it = 0; it < g_iters; it++) {
        for (uint64_t j = 0; j < k; j++) {
            a[j] = block_new(SIZES[c], key++);
            c = c == 4 ? 0 : c + 1;
        }
        for (uint64_t j = 0; j < k; j++)
            block_free(&a[j], "batch");
    }
    free(a);
    return NULL;
}

static const char usage_text[] =
    "usage: bench_glibc_loop [threads iterations batch]\n"
    "  e.g. bench_glibc_loop 1 300000 100   (all arguments or none; threads 1..1024,\n"
    "  batch 1..16777216 blocks of 16/64/256/1024/4096 B, cycled)\n";

int main(int argc, char **argv)
{
    g_name = "bench_glibc_loop";
    uint64_t threads = 1, iters = 300000, batch = 100;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &iters, &batch) &&
        (threads < 1 || threads > 1024 || batch < 1 || batch > (1u << 24) || iters > (1ull << 40)))
        usage_exit(usage_text);
    g_iters = iters;
    g_batch = batch;
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
    double pairs = (double)threads * (double)iters * (double)batch;
    fprintf(stderr, "bench_glibc_loop: %llu threads x %llu batches x %llu blocks in %.3f s\n",
            (unsigned long long)threads, (unsigned long long)iters, (unsigned long long)batch, el);
    bench_result(threads, "ops_per_sec", per_sec(pairs, el), 0);
    return 0;
}

/* bench_pair.c — a fixed loop of malloc/free pairs of one size, for instruction counting.
 *
 *   bench_pair iterations size
 *
 * Keeps one block of `size` live, runs a fixed warm-up of WARMUP pairs (so caches, size
 * classes and thread state exist), then `iterations` pairs p = malloc(size); touch one byte; free(p).  The pointer goes
 * through a volatile sink so the compiler cannot elide the pair.  scripts/callgrind.sh
 * runs it twice (two iteration counts) under valgrind --tool=callgrind and divides the
 * difference in instructions by the difference in iterations, so start-up, warm-up and
 * exit cost cancel and what is left is the cost of one pair plus a few loop instructions.
 *
 * Last stdout line: RESULT name=bench_pair threads=1 ops_per_sec=<pairs/s> maxrss_kb=<n>
 */
#include "bench_common.h"

#define WARMUP 1000

static void *volatile sink;

static void pairs(long n, size_t size)
{
    for (long i = 0; i < n; i++) {
        char *p = malloc(size);
        if (!p) {
            fprintf(stderr, "bench_pair: malloc(%zu) failed\n", size);
            exit(1);
        }
        p[0] = (char)i;
        sink = p;
        free(sink);
    }
}

int main(int argc, char **argv)
{
    g_name = "bench_pair";
    if (argc != 3) {
        fprintf(stderr, "usage: %s iterations size\n", argv[0]);
        return 2;
    }
    long iters = atol(argv[1]);
    long size = atol(argv[2]);
    if (iters < 0 || size < 0) {
        fprintf(stderr, "bench_pair: iterations and size must be >= 0\n");
        return 2;
    }

    /* One block of the size stays live throughout, so the pairs measure each
     * allocator's fast path: with nothing else live, some allocators (mimalloc)
     * retire the page at every free and take their slow path at every malloc. */
    void *pin = malloc((size_t)size);
    if (!pin) {
        fprintf(stderr, "bench_pair: malloc(%ld) failed\n", size);
        return 1;
    }
    pairs(WARMUP, (size_t)size);
    double t0 = now_sec();
    pairs(iters, (size_t)size);
    double dt = now_sec() - t0;

    free(pin);
    bench_result(1, "ops_per_sec", per_sec((double)iters, dt), 0);
    return 0;
}

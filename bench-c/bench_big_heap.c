/* A big live heap: millions of small blocks stay live while the program churns.
 *
 * Fill: allocate `live` blocks of random sizes 16..128 B (uniform) and keep them all.
 * Churn: `steps` times, pick a random live block, check and free it, and allocate a
 * replacement of a new random size 16..128 B in its place.  At the end every block is
 * checked and freed.  An allocator whose cost grows with the size of the heap (one that
 * periodically walks all its slabs or pages, or keeps long per-size lists) is slow here;
 * the random order also makes every step a cache miss on the block and on the
 * allocator's metadata for it.
 * Bookkeeping is kept small (a pointer and a size byte per block, key = slot index) so
 * that the benchmark's own arrays add only 9 B per live block to the RSS.
 *
 * Arguments (all or none, unsigned decimal):
 *   live   live blocks, 1..2^32-1 (4 Mi: about 0.4 GB RSS under glibc; 8 Mi: 0.8 GB)
 *   steps  churn steps
 *   seed   PRNG seed
 * Defaults: 4194304 1500000 1.
 *
 * Metric: ops_per_sec = churn steps (free + malloc) per second; only the churn phase is
 * timed.  The fill time is printed on a separate stdout line before the RESULT line (the
 * RESULT line has room for one metric only):
 *     FILL name=bench_big_heap live=<L> seconds=<s> ops_per_sec=<L/s> */
#include "bench_common.h"

static inline uint32_t draw_size(uint64_t *rng)
{
    return 16 + rng_below(rng, 113); /* 16..128 */
}

static const char usage_text[] =
    "usage: bench_big_heap [live steps seed]\n"
    "  e.g. bench_big_heap 4194304 1500000 1   (all arguments or none; live 1..4294967295)\n";

int main(int argc, char **argv)
{
    g_name = "bench_big_heap";
    uint64_t live = 4194304, steps = 1500000, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &live, &steps, &seed) &&
        (live < 1 || live > 0xffffffffull || steps > (1ull << 40)))
        usage_exit(usage_text);
    uint64_t rng = rng_init(seed);
    void **ptr = xmalloc(sizeof(void *) * live);
    uint8_t *sz = xmalloc(live); /* size - 16 */

    double t0 = now_sec();
    for (uint64_t i = 0; i < live; i++) {
        uint32_t n = draw_size(&rng);
        ptr[i] = xmalloc(n);
        stamp(ptr[i], n, (uint32_t)i);
        sz[i] = (uint8_t)(n - 16);
    }
    double t1 = now_sec();
    for (uint64_t k = 0; k < steps; k++) {
        uint32_t i = rng_below(&rng, (uint32_t)live);
        check(ptr[i], 16u + sz[i], i, "churn");
        free(ptr[i]);
        uint32_t n = draw_size(&rng);
        ptr[i] = xmalloc(n);
        stamp(ptr[i], n, i);
        sz[i] = (uint8_t)(n - 16);
    }
    double t2 = now_sec();
    /* printed before the final frees: stdio's buffer is malloc'ed by the first printf, and
     * an allocator may do deferred work (glibc consolidates its fastbins) on that call */
    printf("FILL name=%s live=%llu seconds=%.3f ops_per_sec=%.0f\n", g_name, (unsigned long long)live, t1 - t0,
           per_sec((double)live, t1 - t0));
    for (uint64_t i = 0; i < live; i++) {
        check(ptr[i], 16u + sz[i], (uint32_t)i, "final");
        free(ptr[i]);
    }
    double t3 = now_sec();
    free(sz);
    free(ptr);
    fprintf(stderr, "bench_big_heap: fill %llu blocks %.3f s, churn %llu steps %.3f s, final free %.3f s\n",
            (unsigned long long)live, t1 - t0, (unsigned long long)steps, t2 - t1, t3 - t2);
    bench_result(1, "ops_per_sec", per_sec((double)steps, t2 - t1), 0);
    return 0;
}

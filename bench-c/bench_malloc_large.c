/* malloc-large: a small working set of very large blocks, churned.
 *
 * `slots` blocks of random sizes 5..25 MiB (uniform, not page multiples) are allocated;
 * then each of `iterations` steps picks a random slot, checks and frees its block and
 * allocates a new one of a new random size.  Only a few bytes of each block are touched:
 * a check word at NTOUCH evenly spaced offsets from the first to the last 8 bytes (so the
 * first page, the last page and a few pages in between), written on allocation and
 * verified before the free.  The block is never memset: the benchmark measures the
 * allocator (its mmap/munmap, reuse and page-fault behaviour), not memory bandwidth.
 *
 * Arguments (all or none, unsigned decimal):
 *   iterations  replace steps
 *   slots       live blocks, 1..4096
 *   seed        PRNG seed
 * Defaults: 60000 20 1.
 *
 * Metric: ops_per_sec = replace steps (free + malloc) per second; the initial fill and the
 * final frees are untimed. */
#include "bench_common.h"

#define MIB (1024u * 1024u)
#define NTOUCH 9u /* check words at offsets j * (n - 8) / (NTOUCH - 1), j = 0 .. NTOUCH-1 */

static inline size_t touch_off(size_t n, unsigned j)
{
    return (size_t)(((uint64_t)(n - 8) * j / (NTOUCH - 1)) & ~(uint64_t)7);
}

static void big_stamp(block_t *b)
{
    unsigned char *p = b->p;
    uint64_t t = block_tag(p, b->n, b->key);
    for (unsigned j = 0; j < NTOUCH; j++) {
        uint64_t w = mix64(t + j);
        memcpy(p + touch_off(b->n, j), &w, 8);
    }
}

static void big_check(const block_t *b, const char *where)
{
    const unsigned char *p = b->p;
    if (p == NULL)
        fail("NULL block (%s)", where);
    if ((uintptr_t)p & 15)
        fail("misaligned block %p size %u (%s)", (const void *)p, b->n, where);
    uint64_t t = block_tag(p, b->n, b->key);
    for (unsigned j = 0; j < NTOUCH; j++) {
        uint64_t w;
        memcpy(&w, p + touch_off(b->n, j), 8);
        if (w != mix64(t + j))
            fail("check word %u (offset %zu) corrupted in block %p size %u (%s)", j, touch_off(b->n, j),
                 (const void *)p, b->n, where);
    }
}

static block_t big_new(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    uint32_t n = 5 * MIB + (uint32_t)(((r >> 32) * (uint64_t)(20 * MIB + 1)) >> 32); /* 5..25 MiB */
    block_t b = {xmalloc(n), n, (uint32_t)r};
    big_stamp(&b);
    return b;
}

static const char usage_text[] =
    "usage: bench_malloc_large [iterations slots seed]\n"
    "  e.g. bench_malloc_large 60000 20 1   (all arguments or none; slots 1..4096)\n";

int main(int argc, char **argv)
{
    g_name = "bench_malloc_large";
    uint64_t iters = 60000, nslots = 20, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &iters, &nslots, &seed) &&
        (nslots < 1 || nslots > 4096 || iters > (1ull << 40)))
        usage_exit(usage_text);
    uint64_t rng = rng_init(seed);
    block_t *s = xmalloc(sizeof(block_t) * nslots);
    for (uint64_t i = 0; i < nslots; i++)
        s[i] = big_new(&rng);
    double t0 = now_sec();
    for (uint64_t it = 0; it < iters; it++) {
        uint32_t i = rng_below(&rng, (uint32_t)nslots);
        big_check(&s[i], "replace");
        free(s[i].p);
        s[i] = big_new(&rng);
    }
    double el = now_sec() - t0;
    for (uint64_t i = 0; i < nslots; i++) {
        big_check(&s[i], "final");
        free(s[i].p);
    }
    free(s);
    fprintf(stderr, "bench_malloc_large: %llu replacements over %llu slots of 5..25 MiB in %.3f s\n",
            (unsigned long long)iters, (unsigned long long)nslots, el);
    bench_result(1, "ops_per_sec", per_sec((double)iters, el), 0);
    return 0;
}

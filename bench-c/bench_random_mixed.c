/* Single-threaded random replacement over a working set of slots:
 * each step verifies+frees a random slot's block and mallocs 16 + (r & 0x3FF) bytes. */
#include "bench_common.h"

static const char usage_text[] =
    "usage: bench_random_mixed [iterations working_set seed]\n"
    "  e.g. bench_random_mixed 20000000 8192 42   (all arguments or none)\n";

int main(int argc, char **argv)
{
    g_name = "bench_random_mixed";
    uint64_t iters = 20000000, ws = 8192, seed = 42;
    if (PARSE_ARGS(argc, argv, usage_text, &iters, &ws, &seed) && (ws < 1 || ws > (1u << 26)))
        usage_exit(usage_text);
    uint64_t rng = rng_init(seed);
    block_t *s = xmalloc(sizeof(block_t) * ws);
    for (uint64_t i = 0; i < ws; i++) {
        uint64_t r = rng_next(&rng);
        s[i] = block_new(16 + (uint32_t)(r & 0x3ff), (uint32_t)(r >> 32));
    }
    double t0 = now_sec();
    for (uint64_t it = 0; it < iters; it++) {
        uint32_t i = rng_below(&rng, (uint32_t)ws);
        block_free(&s[i], "replace");
        uint64_t r = rng_next(&rng);
        s[i] = block_new(16 + (uint32_t)(r & 0x3ff), (uint32_t)(r >> 32));
    }
    double el = now_sec() - t0;
    for (uint64_t i = 0; i < ws; i++)
        block_free(&s[i], "final");
    free(s);
    fprintf(stderr, "bench_random_mixed: %llu ops in %.3f s (working set %llu)\n",
            (unsigned long long)iters, el, (unsigned long long)ws);
    bench_result(1, "ops_per_sec", per_sec((double)iters, el), 0);
    return 0;
}

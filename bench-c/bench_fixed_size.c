/* Single-threaded random replacement over a working set of slots, one block size. */
#include "bench_common.h"

typedef struct {
    void *p;
    uint64_t key;
} slot_t;

static const char usage_text[] =
    "usage: bench_fixed_size [iterations size working_set]\n"
    "  e.g. bench_fixed_size 50000000 64 4096   (all arguments or none)\n";

int main(int argc, char **argv)
{
    g_name = "bench_fixed_size";
    uint64_t iters = 50000000, size = 64, ws = 4096;
    if (PARSE_ARGS(argc, argv, usage_text, &iters, &size, &ws) &&
        (size < 1 || size > (1ull << 32) || ws < 1 || ws > (1u << 26)))
        usage_exit(usage_text);
    const size_t n = (size_t)size;
    uint64_t rng = rng_init(0x5eedULL ^ size);
    slot_t *s = xmalloc(sizeof(slot_t) * ws);
    for (uint64_t i = 0; i < ws; i++) {
        uint64_t k = rng_next(&rng);
        void *p = xmalloc(n);
        stamp(p, n, k);
        s[i] = (slot_t){p, k};
    }
    double t0 = now_sec();
    for (uint64_t it = 0; it < iters; it++) {
        uint64_t r = rng_next(&rng);
        uint32_t i = (uint32_t)(((r >> 32) * ws) >> 32);
        check(s[i].p, n, s[i].key, "replace");
        free(s[i].p);
        void *p = xmalloc(n);
        stamp(p, n, r);
        s[i].p = p;
        s[i].key = r;
    }
    double el = now_sec() - t0;
    for (uint64_t i = 0; i < ws; i++) {
        check(s[i].p, n, s[i].key, "final");
        free(s[i].p);
    }
    free(s);
    fprintf(stderr, "bench_fixed_size: %llu ops of %zu bytes in %.3f s (working set %llu)\n",
            (unsigned long long)iters, n, el, (unsigned long long)ws);
    bench_result(1, "ops_per_sec", per_sec((double)iters, el), 0);
    return 0;
}

/* Large blocks, 1 .. 64 MiB.  One iteration =
 *   (a) SLOT_OPS random replacements over NSLOTS live blocks: verify + free the old block,
 *       malloc a new roughly log-uniform size in 1..64 MiB and write a word into every page;
 *   (b) a realloc chain: malloc 1 MiB, grow by ~1.5x up to 64 MiB, then shrink by ~1/1.5
 *       back to 1 MiB, checking after every step that the preserved prefix still holds its
 *       per-page pattern and writing the pattern into newly added pages; then free.
 * Metric: wall seconds for all iterations (lower is better). */
#include "bench_common.h"

#define MIB (1024u * 1024u)
#define MAXB (64u * MIB)
#define PAGE 4096u
#define NSLOTS 2
#define SLOT_OPS 4

/* address-independent page words, so realloc moves keep them valid */
static inline uint64_t page_word(uint64_t key, size_t pg)
{
    return mix64(key ^ ((uint64_t)pg * 0xd1b54a32d192ed03ULL));
}

/* write one word at the start of every page fully inside [from, n) - 8 bytes of tail */
static void fill_pages(unsigned char *b, size_t from_pg, size_t n, uint64_t key)
{
    for (size_t pg = from_pg; (size_t)pg * PAGE + 8 <= n - 8; pg++) {
        uint64_t w = page_word(key, pg);
        memcpy(b + pg * PAGE, &w, 8);
    }
}

static void check_pages(const unsigned char *b, size_t n_pages_bytes, uint64_t key, const char *where)
{
    for (size_t pg = 0; (size_t)pg * PAGE + 8 <= n_pages_bytes - 8; pg++) {
        uint64_t w;
        memcpy(&w, b + pg * PAGE, 8);
        if (w != page_word(key, pg))
            fail("page %zu word lost in block %p (%s)", pg, (const void *)b, where);
    }
}

static inline void put_tail(unsigned char *b, size_t n, uint64_t key)
{
    uint64_t w = ~page_word(key, (size_t)n);
    memcpy(b + n - 8, &w, 8);
}

static inline void check_tail(const unsigned char *b, size_t n, uint64_t key, const char *where)
{
    uint64_t w;
    memcpy(&w, b + n - 8, 8);
    if (w != ~page_word(key, (size_t)n))
        fail("last 8 bytes corrupted in block %p size %zu (%s)", (const void *)b, n, where);
}

/* random-size blocks also carry the address/size/key header word of the other benchmarks
 * at offset 8 (offset 0 holds page word 0) */
static void large_stamp(void *p, size_t n, uint64_t key)
{
    unsigned char *b = p;
    fill_pages(b, 0, n, key);
    uint64_t t = block_tag(p, n, key);
    memcpy(b + 8, &t, 8);
    put_tail(b, n, key);
}

static void large_check(const void *p, size_t n, uint64_t key, const char *where)
{
    const unsigned char *b = p;
    if (p == NULL)
        fail("NULL block (%s)", where);
    if ((uintptr_t)p & 15)
        fail("misaligned block %p size %zu (%s)", p, n, where);
    uint64_t t;
    memcpy(&t, b + 8, 8);
    if (t != block_tag(p, n, key))
        fail("header word corrupted in block %p size %zu (%s)", p, n, where);
    check_pages(b, n, key, where);
    check_tail(b, n, key, where);
}

static size_t large_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    size_t base = (size_t)MIB << (r % 6);                     /* 1 .. 32 MiB */
    size_t n = base + (size_t)(((r >> 32) * (uint64_t)base) >> 32); /* .. 64 MiB */
    return n > MAXB ? MAXB : n;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL)
        fail("realloc(%p, %zu) returned NULL", p, n);
    if ((uintptr_t)q & 15)
        fail("realloc returned misaligned %p", q);
    return q;
}

static const char usage_text[] =
    "usage: bench_large [iterations seed]\n"
    "  e.g. bench_large 15 1   (all arguments or none)\n";

int main(int argc, char **argv)
{
    g_name = "bench_large";
    uint64_t iters = 15, seed = 1;
    PARSE_ARGS(argc, argv, usage_text, &iters, &seed);
    uint64_t rng = rng_init(seed);
    void *sp[NSLOTS];
    size_t sn[NSLOTS];
    uint64_t sk[NSLOTS];
    uint64_t reallocs = 0, mallocs = 0, moved = 0;

    double t0 = now_sec();
    for (int i = 0; i < NSLOTS; i++) {
        sn[i] = large_size(&rng);
        sk[i] = rng_next(&rng);
        sp[i] = xmalloc(sn[i]);
        large_stamp(sp[i], sn[i], sk[i]);
        mallocs++;
    }
    for (uint64_t it = 0; it < iters; it++) {
        for (int k = 0; k < SLOT_OPS; k++) {
            int i = (int)rng_below(&rng, NSLOTS);
            large_check(sp[i], sn[i], sk[i], "replace");
            free(sp[i]);
            sn[i] = large_size(&rng);
            sk[i] = rng_next(&rng);
            sp[i] = xmalloc(sn[i]);
            large_stamp(sp[i], sn[i], sk[i]);
            mallocs++;
        }

        uint64_t key = rng_next(&rng);
        size_t n = MIB;
        unsigned char *b = xmalloc(n);
        mallocs++;
        if ((uintptr_t)b & 15)
            fail("misaligned block %p", (void *)b);
        fill_pages(b, 0, n, key);
        put_tail(b, n, key);
        /* grow */
        while (n < MAXB) {
            size_t m = n + n / 2 + (size_t)(rng_next(&rng) & 0xfff);
            if (m > MAXB)
                m = MAXB;
            unsigned char *q = xrealloc(b, m);
            reallocs++;
            moved += q != b;
            check_pages(q, n, key, "realloc grow");
            check_tail(q, n, key, "realloc grow");
            /* old tail position becomes ordinary data; rewrite pages from the old end on */
            fill_pages(q, (n - 8) / PAGE, m, key);
            put_tail(q, m, key);
            b = q;
            n = m;
        }
        /* shrink */
        while (n > MIB) {
            size_t m = n - n / 3 - (size_t)(rng_next(&rng) & 0xfff);
            if (m < MIB)
                m = MIB;
            unsigned char *q = xrealloc(b, m);
            reallocs++;
            moved += q != b;
            check_pages(q, m, key, "realloc shrink");
            put_tail(q, m, key);
            b = q;
            n = m;
        }
        check_pages(b, n, key, "chain end");
        check_tail(b, n, key, "chain end");
        free(b);
    }
    for (int i = 0; i < NSLOTS; i++) {
        large_check(sp[i], sn[i], sk[i], "final");
        free(sp[i]);
    }
    double el = now_sec() - t0;
    fprintf(stderr, "bench_large: %llu iterations, %llu mallocs, %llu reallocs (%llu moved), %.3f s\n",
            (unsigned long long)iters, (unsigned long long)mallocs, (unsigned long long)reallocs,
            (unsigned long long)moved, el);
    bench_result(1, "seconds", el, 4);
    return 0;
}

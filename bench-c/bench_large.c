#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- shared helpers (each bench file carries its own copy) ---- */
static const char *g_name;

static void fail(const char *fmt, ...) __attribute__((noreturn, cold, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    static atomic_flag once = ATOMIC_FLAG_INIT;
    va_list ap;
    if (atomic_flag_test_and_set(&once))
        for (;;)
            pause(); /* another thread is already reporting and exiting */
    fprintf(stderr, "FAIL %s: ", g_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* xorshift64* seeded through splitmix64 */
static inline uint64_t rng_init(uint64_t seed)
{
    uint64_t s = mix64(seed + 0x9e3779b97f4a7c15ULL);
    return s ? s : 0x853c49e6748fea9bULL;
}
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}
/* uniform in [0, n) for n < 2^32 */
static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

/* Block check words: header (bytes 0..7) = tag(addr,size,key), bytes 8..15 = tag^size^const
 * (when size >= 24), last 8 bytes = ~tag.  Blocks < 16 bytes get a byte pattern. */
static inline uint64_t block_tag(const void *p, size_t n, uint64_t key)
{
    return mix64((uint64_t)(uintptr_t)p ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL) ^ (key << 17) ^ key);
}

static inline void stamp(void *p, size_t n, uint64_t key)
{
    unsigned char *b = p;
    uint64_t t = block_tag(p, n, key);
    if (n >= 16) {
        uint64_t u = ~t;
        memcpy(b, &t, 8);
        memcpy(b + n - 8, &u, 8);
        if (n >= 24) {
            uint64_t m = t ^ (uint64_t)n ^ 0xa5a5a5a5a5a5a5a5ULL;
            memcpy(b + 8, &m, 8);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)((t >> (8 * (i & 7))) ^ i);
    }
}

static void check_fail(const void *p, size_t n, const char *what, const char *where)
    __attribute__((noreturn, cold));
static void check_fail(const void *p, size_t n, const char *what, const char *where)
{
    fail("%s of block %p size %zu (%s)", what, p, n, where);
}

static inline void check(const void *p, size_t n, uint64_t key, const char *where)
{
    const unsigned char *b = p;
    if (__builtin_expect(p == NULL, 0))
        check_fail(p, n, "NULL pointer", where);
    if (__builtin_expect(((uintptr_t)p & (n <= 8 ? 7u : 15u)) != 0, 0))
        check_fail(p, n, "misalignment", where);
    uint64_t t = block_tag(p, n, key);
    if (n >= 16) {
        uint64_t h, e;
        memcpy(&h, b, 8);
        memcpy(&e, b + n - 8, 8);
        if (__builtin_expect(h != t, 0))
            check_fail(p, n, "corrupted header word", where);
        if (__builtin_expect(e != ~t, 0))
            check_fail(p, n, "corrupted last 8 bytes", where);
        if (n >= 24) {
            uint64_t m;
            memcpy(&m, b + 8, 8);
            if (__builtin_expect(m != (t ^ (uint64_t)n ^ 0xa5a5a5a5a5a5a5a5ULL), 0))
                check_fail(p, n, "corrupted bytes 8..15", where);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            if (__builtin_expect(b[i] != (unsigned char)((t >> (8 * (i & 7))) ^ i), 0))
                check_fail(p, n, "corrupted byte pattern", where);
    }
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (__builtin_expect(p == NULL, 0))
        fail("malloc(%zu) returned NULL", n);
    return p;
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

/* strict unsigned decimal parse; returns 0 on success */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}
/* ---- end shared helpers ---- */

/* Large blocks, 1 .. 64 MiB.  One iteration =
 *   (a) SLOT_OPS random replacements over NSLOTS live blocks: verify + free the old block,
 *       malloc a new roughly log-uniform size in 1..64 MiB and write a word into every page;
 *   (b) a realloc chain: malloc 1 MiB, grow by ~1.5x up to 64 MiB, then shrink by ~1/1.5
 *       back to 1 MiB, checking after every step that the preserved prefix still holds its
 *       per-page pattern and writing the pattern into newly added pages; then free.
 * Metric: wall seconds for all iterations (lower is better). */

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

static void usage(void)
{
    fprintf(stderr, "usage: bench_large [iterations seed]\n"
                    "  e.g. bench_large 15 1   (all arguments or none)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g_name = "bench_large";
    uint64_t iters = 15, seed = 1;
    if (argc != 1) {
        if (argc != 3 || parse_u64(argv[1], &iters) || parse_u64(argv[2], &seed))
            usage();
    }
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
    printf("RESULT name=bench_large threads=1 seconds=%.4f maxrss_kb=%ld\n", el, maxrss_kb());
    return 0;
}

/*
 * test_api.c — glibc malloc API semantics.
 *
 * Checks, for malloc / calloc / realloc / reallocarray / posix_memalign /
 * aligned_alloc / memalign / valloc / pvalloc / malloc_usable_size / free:
 *   - alignment of results (16 bytes; 8 allowed for requests <= 8) over every
 *     size 0..4096 and geometric sizes up to 2 MiB;
 *   - every power-of-two alignment 1..4 MiB with sizes around the alignment,
 *     with the whole malloc_usable_size() range writable;
 *   - calloc returns zeroed memory, also when it recycles dirty blocks, and for
 *     large sizes; n*size overflow gives NULL + ENOMEM;
 *   - huge requests give NULL + ENOMEM;
 *   - realloc keeps contents while growing and shrinking across every tier
 *     boundary (1 B .. 64 MiB); realloc(NULL,n), realloc(p,0);
 *   - reallocarray overflow; posix_memalign EINVAL / ENOMEM;
 *   - malloc(0) gives unique, freeable pointers; free(NULL) is a no-op;
 *   - out of memory under RLIMIT_AS (in a forked child): NULL + ENOMEM, and a
 *     failed realloc leaves the old block intact.
 *
 * Usage: test_api [hakmem]   (the argument is accepted and ignored: every check
 * here is plain glibc semantics).  Prints "PASS test_api" and exits 0 on success.
 */
#define TEST_NAME "test_api"
#include "test_common.h"
#include <malloc.h>

/* Returns the first non-zero offset, or n. */
static size_t first_nonzero(const unsigned char *p, size_t n)
{
    size_t i = 0;
    /* word-at-a-time for speed on the big blocks */
    for (; i < n && ((uintptr_t)(p + i) & 7); i++)
        if (p[i]) return i;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w) break;
    }
    for (; i < n; i++)
        if (p[i]) return i;
    return n;
}

/* One PRNG stream with a fixed start: runs are reproducible. */
static rng_t api_rng = { 0x9E3779B97F4A7C15ull };

/* ------------------------------------------------------------------------- */
/* 1. alignment / usable size of malloc, calloc, realloc(NULL, n)            */

static void check_plain_block(void *p, size_t n, const char *what)
{
    CHECK(p != NULL, "%s(%zu) returned NULL", what, n);
    CHECK(is_aligned(p, min_align(n)), "%s(%zu) = %p not %zu-aligned", what, n, p, min_align(n));
    size_t us = malloc_usable_size(p);
    CHECK(us >= n, "%s(%zu): malloc_usable_size %zu < request", what, n, us);
    memset(p, 0x5A, us); /* the whole usable range must be writable */
}

static void test_one_size(size_t n)
{
    void *p = malloc(n);
    check_plain_block(p, n, "malloc");
    free(p);

    p = opaque(calloc(1, n));
    check_plain_block(p, n, "calloc");
    free(p);

    p = realloc(NULL, n);
    check_plain_block(p, n, "realloc(NULL)");
    free(p);
}

static void test_sizes(void)
{
    for (size_t n = 0; n <= 4096; n++) test_one_size(n);
    for (size_t s = 4096; s <= 2 * MiB; s += s / 8 + 1) {
        test_one_size(s - 1);
        test_one_size(s);
        test_one_size(s + 1);
    }
    test_one_size(2 * MiB);
    /* Many live blocks of mixed sizes at once: no overlap between them. */
    enum { LIVE = 2000 };
    static unsigned char *blk[LIVE];
    static size_t len[LIVE];
    for (int i = 0; i < LIVE; i++) {
        size_t r = rnd(&api_rng);
        len[i] = (r & 3) == 0 ? (r >> 8) % (300 * KiB) : (r >> 8) % 2048;
        blk[i] = malloc(len[i]);
        check_plain_block(blk[i], len[i], "malloc");
        fill(blk[i], len[i], (unsigned)i);
    }
    for (int i = 0; i < LIVE; i++) {
        size_t bad = verify(blk[i], len[i], (unsigned)i);
        CHECK(bad == len[i], "live block %d (%zu bytes) corrupted at %zu (overlap?)", i, len[i], bad);
        free(blk[i]);
    }
}

/* ------------------------------------------------------------------------- */
/* 2. aligned allocation                                                     */

static void check_aligned_block(void *p, size_t align, size_t n, const char *what)
{
    CHECK(p != NULL, "%s(align %zu, %zu) returned NULL", what, align, n);
    size_t need = align > min_align(n) ? align : min_align(n);
    CHECK(is_aligned(p, need), "%s(align %zu, %zu) = %p not %zu-aligned", what, align, n, p, need);
    size_t us = malloc_usable_size(p);
    CHECK(us >= n, "%s(align %zu, %zu): usable %zu < request", what, align, n, us);
    memset(p, 0xC3, us);
}

static void test_aligned(void)
{
    for (int shift = 0; shift <= 22; shift++) {
        size_t a = (size_t)1 << shift;
        size_t sizes[] = { 1, a / 2 + 3, a - 1, a, a + 1, 2 * a, 100 };
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            if (n == 0) continue;
            void *p;
            if (a >= sizeof(void *)) {
                p = NULL;
                int rc = posix_memalign(&p, a, n);
                CHECK(rc == 0, "posix_memalign(align %zu, %zu) = %d", a, n, rc);
                check_aligned_block(p, a, n, "posix_memalign");
                free(p);
            }
            p = aligned_alloc(a, n);
            check_aligned_block(p, a, n, "aligned_alloc");
            free(p);
            p = memalign(a, n);
            check_aligned_block(p, a, n, "memalign");
            /* realloc of an aligned block keeps its contents */
            fill(p, n, 7);
            unsigned char *q = realloc(p, n + 4096);
            CHECK(q != NULL, "realloc of memalign(%zu, %zu) block failed", a, n);
            size_t bad = verify(q, n, 7);
            CHECK(bad == n, "realloc of memalign(%zu, %zu) block lost contents at %zu", a, n, bad);
            free(q);
        }
    }

    /* Many live aligned blocks, freed in shuffled order. */
    enum { LIVE = 512 };
    static void *blk[LIVE];
    for (int i = 0; i < LIVE; i++) {
        size_t a = (size_t)16 << (rnd(&api_rng) % 9); /* 16 .. 4096 */
        size_t n = 1 + rnd(&api_rng) % 5000;
        blk[i] = memalign(a, n);
        check_aligned_block(blk[i], a, n, "memalign");
    }
    for (int i = LIVE - 1; i > 0; i--) {
        int j = (int)(rnd(&api_rng) % (uint64_t)(i + 1));
        void *t = blk[i]; blk[i] = blk[j]; blk[j] = t;
    }
    for (int i = 0; i < LIVE; i++) free(blk[i]);

    /* posix_memalign argument errors. */
    size_t bad_aligns[] = { 0, 1, 3, 24, sizeof(void *) / 2, 48, 96, 4095, 4097, 12345 };
    for (size_t k = 0; k < sizeof bad_aligns / sizeof bad_aligns[0]; k++) {
        void *sentinel = (void *)0x1234;
        void *p = sentinel;
        int rc = posix_memalign(&p, opaque_size(bad_aligns[k]), 64);
        CHECK(rc == EINVAL, "posix_memalign(align %zu) = %d, want EINVAL", bad_aligns[k], rc);
        CHECK(p == sentinel || p == NULL, "posix_memalign(align %zu) failed but set *memptr=%p",
              bad_aligns[k], p);
    }
    {
        void *sentinel = (void *)0x1234;
        void *p = sentinel;
        int rc = posix_memalign(&p, 64, opaque_size(SIZE_MAX - 100));
        CHECK(rc == ENOMEM, "posix_memalign(64, SIZE_MAX-100) = %d, want ENOMEM", rc);
        CHECK(p == sentinel || p == NULL, "failed posix_memalign set *memptr=%p", p);
        p = sentinel;
        rc = posix_memalign(&p, 4096, opaque_size((size_t)PTRDIFF_MAX + 1));
        CHECK(rc == ENOMEM, "posix_memalign(4096, PTRDIFF_MAX+1) = %d, want ENOMEM", rc);
    }
    errno = 0;
    CHECK(aligned_alloc(64, opaque_size(SIZE_MAX - 100)) == NULL && errno == ENOMEM,
          "aligned_alloc(64, SIZE_MAX-100) not NULL/ENOMEM");
    errno = 0;
    CHECK(memalign(4096, opaque_size(SIZE_MAX - 100)) == NULL && errno == ENOMEM,
          "memalign(4096, SIZE_MAX-100) not NULL/ENOMEM");

    /* valloc / pvalloc */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t vsizes[] = { 1, 100, page - 1, page, page + 1, 3 * page + 5, 300 * KiB, 3 * MiB };
    for (size_t k = 0; k < sizeof vsizes / sizeof vsizes[0]; k++) {
        size_t n = vsizes[k];
        void *p = valloc(n);
        check_aligned_block(p, page, n, "valloc");
        free(p);
        p = pvalloc(n);
        size_t rounded = (n + page - 1) & ~(page - 1);
        check_aligned_block(p, page, rounded, "pvalloc");
        free(p);
    }
}

/* ------------------------------------------------------------------------- */
/* 3. calloc zeroing                                                         */

static void test_calloc(void)
{
    static const size_t sizes[] = {
        1, 8, 16, 24, 40, 48, 64, 100, 128, 256, 500, 1000, 1024, 1500, 2048, 4000, 4096,
        8192, 10000, 20000, 32768, 65536, 100000, 131072, 200000, 262144, 262145, 300000,
        524288, MiB, 3 * MiB, 8 * MiB,
    };
    enum { MAXN = 256 };
    static unsigned char *blk[MAXN];
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        size_t count = (32 * MiB) / (n + 1);
        if (count > MAXN) count = MAXN;
        if (count < 4) count = 4;
        /* dirty a batch of blocks of this size and return them to the allocator */
        for (size_t i = 0; i < count; i++) {
            blk[i] = malloc(n);
            CHECK(blk[i] != NULL, "malloc(%zu) failed", n);
            memset(blk[i], 0xAA, malloc_usable_size(blk[i]));
        }
        for (size_t i = 0; i < count; i++) free(blk[i]);
        /* calloc the same sizes: they likely reuse the dirty blocks */
        for (size_t i = 0; i < count; i++) {
            /* alternate how n is split between nmemb and size */
            if ((i & 1) && n % 8 == 0) blk[i] = opaque(calloc(n / 8, 8));
            else blk[i] = opaque(calloc(1, n));
            CHECK(blk[i] != NULL, "calloc(%zu) failed", n);
            size_t nz = first_nonzero(blk[i], n);
            CHECK(nz == n, "calloc(%zu) #%zu: byte %zu is 0x%02x, not zero", n, i, nz, blk[i][nz]);
            memset(blk[i], 0xAA, n); /* dirty again for the next round */
        }
        for (size_t i = 0; i < count; i++) free(blk[i]);
    }

    /* Large callocs, including one right after freeing a dirty block of the same size. */
    size_t big[] = { 16 * MiB, 64 * MiB, 64 * MiB + 12345 };
    for (size_t k = 0; k < sizeof big / sizeof big[0]; k++) {
        unsigned char *p = malloc(big[k]);
        CHECK(p != NULL, "malloc(%zu) failed", big[k]);
        memset(p, 0xAA, big[k]);
        free(p);
        p = opaque(calloc(big[k] / 16, 16));
        CHECK(p != NULL, "calloc(%zu) failed", big[k]);
        size_t nz = first_nonzero(p, big[k] / 16 * 16);
        CHECK(nz == big[k] / 16 * 16, "large calloc(%zu): byte %zu non-zero", big[k], nz);
        free(p);
    }

    /* nmemb * size overflow */
    struct { size_t a, b; } ov[] = {
        { SIZE_MAX, 2 }, { SIZE_MAX / 2 + 1, 2 }, { (size_t)1 << 33, (size_t)1 << 33 },
        { SIZE_MAX, SIZE_MAX }, { 3, SIZE_MAX / 3 + 1 },
    };
    for (size_t k = 0; k < sizeof ov / sizeof ov[0]; k++) {
        errno = 0;
        void *p = calloc(opaque_size(ov[k].a), opaque_size(ov[k].b));
        CHECK(p == NULL, "calloc(%zu, %zu) overflow returned %p", ov[k].a, ov[k].b, p);
        CHECK(errno == ENOMEM, "calloc(%zu, %zu) overflow: errno %d, want ENOMEM", ov[k].a, ov[k].b, errno);
    }
    /* calloc(0, n) and calloc(n, 0) give a freeable pointer (glibc: non-NULL) */
    void *z1 = calloc(0, 100), *z2 = calloc(100, 0);
    CHECK(z1 != NULL && z2 != NULL && z1 != z2, "calloc with zero count/size: %p %p", z1, z2);
    free(z1);
    free(z2);
}

/* ------------------------------------------------------------------------- */
/* 4. huge requests, malloc(0), free(NULL), malloc_usable_size               */

static void test_huge_and_zero(void)
{
    size_t huge[] = { SIZE_MAX, SIZE_MAX - 15, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX + 1,
                      (size_t)PTRDIFF_MAX, (size_t)1 << 62, (size_t)1 << 56 };
    for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
        errno = 0;
        void *p = malloc(opaque_size(huge[k]));
        CHECK(p == NULL, "malloc(%zu) returned %p", huge[k], p);
        CHECK(errno == ENOMEM, "malloc(%zu): errno %d, want ENOMEM", huge[k], errno);
        errno = 0;
        p = calloc(1, opaque_size(huge[k]));
        CHECK(p == NULL && errno == ENOMEM, "calloc(1, %zu) not NULL/ENOMEM", huge[k]);
        errno = 0;
        p = realloc(NULL, opaque_size(huge[k]));
        CHECK(p == NULL && errno == ENOMEM, "realloc(NULL, %zu) not NULL/ENOMEM", huge[k]);
        errno = 0;
        p = valloc(opaque_size(huge[k]));
        CHECK(p == NULL && errno == ENOMEM, "valloc(%zu) not NULL/ENOMEM", huge[k]);
        errno = 0;
        p = pvalloc(opaque_size(huge[k]));
        CHECK(p == NULL && errno == ENOMEM, "pvalloc(%zu) not NULL/ENOMEM", huge[k]);
    }
    /* a failed huge realloc leaves the block intact */
    size_t tiers[] = { 24, 3000, 100 * KiB, 2 * MiB };
    for (size_t k = 0; k < sizeof tiers / sizeof tiers[0]; k++) {
        unsigned char *p = malloc(tiers[k]);
        CHECK(p != NULL, "malloc(%zu)", tiers[k]);
        fill(p, tiers[k], 99);
        errno = 0;
        void *q = realloc(p, opaque_size(SIZE_MAX - 64));
        CHECK(q == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX-64) not NULL/ENOMEM");
        errno = 0;
        q = realloc(p, opaque_size((size_t)PTRDIFF_MAX + 1));
        CHECK(q == NULL && errno == ENOMEM, "realloc(p, PTRDIFF_MAX+1) not NULL/ENOMEM");
        size_t bad = verify(p, tiers[k], 99);
        CHECK(bad == tiers[k], "failed realloc damaged a %zu-byte block at %zu", tiers[k], bad);
        free(p);
    }

    /* malloc(0): unique, non-NULL, freeable */
    enum { Z = 1000 };
    static void *zp[Z];
    for (int i = 0; i < Z; i++) {
        zp[i] = malloc(0);
        CHECK(zp[i] != NULL, "malloc(0) returned NULL");
        CHECK(is_aligned(zp[i], 8), "malloc(0) = %p not 8-aligned", zp[i]);
    }
    /* sort-free uniqueness check: insertion into a small open-addressing set */
    enum { H = 4096 };
    static uintptr_t set[H];
    for (int i = 0; i < Z; i++) {
        uintptr_t v = (uintptr_t)zp[i];
        size_t h = (size_t)((v >> 3) * 0x9E3779B97F4A7C15ull >> 52) & (H - 1);
        while (set[h]) {
            CHECK(set[h] != v, "malloc(0) returned %p twice", zp[i]);
            h = (h + 1) & (H - 1);
        }
        set[h] = v;
    }
    for (int i = 0; i < Z; i++) free(zp[i]);

    free(NULL); /* no-op */
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
    for (size_t n = 1; n < 1 << 20; n = n * 3 + 1) {
        void *p = malloc(n);
        CHECK(p && malloc_usable_size(p) >= n, "malloc_usable_size < %zu", n);
        free(p);
    }
}

/* ------------------------------------------------------------------------- */
/* 5. realloc                                                                */

/* One step of the ladder walk: realloc p (cur bytes holding the pattern of *seed) to n,
 * check alignment, kept contents and usable size, then refill it with the next seed. */
static unsigned char *ladder_step(unsigned char *p, size_t cur, size_t n, unsigned *seed)
{
    const char *dir = n > cur ? "grow" : "shrink";
    size_t keep = cur < n ? cur : n;
    unsigned char *q = realloc(p, n);
    CHECK(q != NULL, "realloc %s %zu -> %zu failed", dir, cur, n);
    CHECK(is_aligned(q, min_align(n)), "realloc to %zu: %p misaligned", n, (void *)q);
    size_t bad = verify(q, keep, *seed);
    CHECK(bad == keep, "realloc %s %zu -> %zu lost byte %zu", dir, cur, n, bad);
    CHECK(malloc_usable_size(q) >= n, "realloc to %zu: usable too small", n);
    ++*seed;
    fill(q, n, *seed);
    return q;
}

static void test_realloc(void)
{
    static const size_t ladder[] = {
        1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 65, 100, 128, 200, 256, 257,
        512, 1000, 1023, 1024, 1025, 2048, 3000, 4095, 4096, 4097, 8192, 16384, 32768,
        65535, 65536, 65537, 131072, 200000, 262143, 262144, 262145, 300000, 524288,
        MiB - 1, MiB, MiB + 1, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB, 64 * MiB,
    };
    const size_t L = sizeof ladder / sizeof ladder[0];

    /* grow step by step through every tier, then shrink back */
    unsigned char *p = malloc(ladder[0]);
    CHECK(p != NULL, "malloc(1)");
    fill(p, ladder[0], 1);
    size_t cur = ladder[0];
    unsigned seed = 1;
    for (size_t k = 1; k < L; k++) {
        p = ladder_step(p, cur, ladder[k], &seed);
        cur = ladder[k];
    }
    for (size_t k = L - 1; k-- > 0;) {
        p = ladder_step(p, cur, ladder[k], &seed);
        cur = ladder[k];
    }
    free(p);

    /* jumps straight across tiers, in both directions */
    for (size_t i = 0; i < L; i += 3) {
        for (size_t j = 0; j < L; j += 5) {
            size_t a = ladder[i], b = ladder[j];
            if (a > 8 * MiB || b > 8 * MiB) continue;
            unsigned char *x = malloc(a);
            CHECK(x != NULL, "malloc(%zu)", a);
            fill(x, a, (unsigned)(i * 100 + j));
            unsigned char *y = realloc(x, b);
            CHECK(y != NULL, "realloc %zu -> %zu failed", a, b);
            size_t keep = a < b ? a : b;
            size_t bad = verify(y, keep, (unsigned)(i * 100 + j));
            CHECK(bad == keep, "realloc %zu -> %zu lost byte %zu", a, b, bad);
            free(y);
        }
    }

    /* random walk with several live blocks */
    enum { W = 16 };
    unsigned char *wb[W] = { 0 };
    size_t wl[W] = { 0 };
    unsigned ws[W] = { 0 };
    for (int it = 0; it < 6000; it++) {
        int i = (int)(rnd(&api_rng) % W);
        size_t r = rnd(&api_rng);
        size_t n = (r & 15) == 0 ? (r >> 8) % (2 * MiB) : (r & 3) == 0 ? (r >> 8) % (64 * KiB) : (r >> 8) % 1024;
        unsigned char *q = realloc(wb[i], n);
        if (n == 0) { /* realloc(p, 0) frees and returns NULL (glibc) */
            CHECK(wb[i] == NULL || q == NULL, "realloc(p, 0) returned %p, want NULL", (void *)q);
            if (wb[i] == NULL) free(q); /* realloc(NULL, 0) == malloc(0) */
            wb[i] = NULL; wl[i] = 0;
            continue;
        }
        CHECK(q != NULL, "realloc walk to %zu failed", n);
        size_t keep = wl[i] < n ? wl[i] : n;
        size_t bad = verify(q, keep, ws[i]);
        CHECK(bad == keep, "realloc walk %zu -> %zu lost byte %zu", wl[i], n, bad);
        ws[i] = (unsigned)it;
        fill(q, n, ws[i]);
        wb[i] = q; wl[i] = n;
    }
    for (int i = 0; i < W; i++) free(wb[i]);

    /* realloc(NULL, n) behaves like malloc */
    unsigned char *r = realloc(NULL, 300);
    CHECK(r != NULL && malloc_usable_size(r) >= 300, "realloc(NULL, 300)");
    fill(r, 300, 5);
    /* realloc(p, 0) frees p and returns NULL */
    void *z = realloc(r, 0);
    CHECK(z == NULL, "realloc(p, 0) returned %p, want NULL", z);
    for (size_t k = 0; k < L; k += 4) { /* in every tier */
        void *b = malloc(ladder[k]);
        CHECK(b != NULL, "malloc(%zu)", ladder[k]);
        z = realloc(b, 0);
        CHECK(z == NULL, "realloc(p of %zu, 0) returned %p, want NULL", ladder[k], z);
    }

    /* reallocarray */
    unsigned char *ra = reallocarray(NULL, 10, 10);
    CHECK(ra != NULL && malloc_usable_size(ra) >= 100, "reallocarray(NULL, 10, 10)");
    fill(ra, 100, 11);
    unsigned char *rb = reallocarray(ra, 100, 100);
    CHECK(rb != NULL && verify(rb, 100, 11) == 100, "reallocarray grow lost contents");
    fill(rb, 10000, 12);
    errno = 0;
    void *rc = reallocarray(rb, opaque_size(SIZE_MAX / 2), 3);
    CHECK(rc == NULL && errno == ENOMEM, "reallocarray overflow not NULL/ENOMEM");
    errno = 0;
    rc = reallocarray(rb, opaque_size((size_t)1 << 33), opaque_size((size_t)1 << 33));
    CHECK(rc == NULL && errno == ENOMEM, "reallocarray overflow (2^33*2^33) not NULL/ENOMEM");
    CHECK(verify(rb, 10000, 12) == 10000, "reallocarray overflow damaged the block");
    errno = 0;
    rc = reallocarray(NULL, opaque_size(SIZE_MAX), 2);
    CHECK(rc == NULL && errno == ENOMEM, "reallocarray(NULL) overflow not NULL/ENOMEM");
    free(rb);
}

/* ------------------------------------------------------------------------- */
/* 6. out of memory under RLIMIT_AS (forked child)                           */

/* Current virtual size of this process in bytes (from /proc/self/statm). */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static int oom_child(void)
{
    const size_t GiB = 1024 * MiB;
    /* Warm up the allocator's per-thread state before limiting address space. */
    void *warm = malloc(100);
    free(warm);
    unsigned char *small = malloc(1000), *mid = malloc(100 * KiB), *large = malloc(4 * MiB);
    if (!small || !mid || !large) { fprintf(stderr, "FAIL %s: OOM child setup\n", test_name); return 1; }
    fill(small, 1000, 21);
    fill(mid, 100 * KiB, 22);
    fill(large, 4 * MiB, 23);

    struct rlimit rl;
    size_t lim = vm_size() + 256 * MiB;
    rl.rlim_cur = rl.rlim_max = lim;
    if (setrlimit(RLIMIT_AS, &rl) != 0) { perror("setrlimit"); return 1; }

    int bad = 0;
#define OOM_CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL %s: OOM: ", test_name); \
            fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); bad = 1; } } while (0)

    errno = 0;
    void *p = malloc(opaque_size(GiB));
    OOM_CHECK(p == NULL, "malloc(1 GiB) under RLIMIT_AS succeeded");
    OOM_CHECK(errno == ENOMEM, "malloc(1 GiB): errno %d, want ENOMEM", errno);
    free(p);

    errno = 0;
    p = calloc(1, opaque_size(GiB));
    OOM_CHECK(p == NULL && errno == ENOMEM, "calloc(1, 1 GiB) not NULL/ENOMEM");
    free(p);
    errno = 0;
    p = calloc(1024, opaque_size(MiB));
    OOM_CHECK(p == NULL && errno == ENOMEM, "calloc(1024, 1 MiB) not NULL/ENOMEM");
    free(p);

    void *pm = (void *)0x1234;
    int rc = posix_memalign(&pm, 4096, opaque_size(GiB));
    OOM_CHECK(rc == ENOMEM, "posix_memalign(4096, 1 GiB) = %d, want ENOMEM", rc);
    errno = 0;
    p = aligned_alloc(64, opaque_size(GiB));
    OOM_CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(64, 1 GiB) not NULL/ENOMEM");
    free(p);

    unsigned char *blocks[3] = { small, mid, large };
    size_t lens[3] = { 1000, 100 * KiB, 4 * MiB };
    for (int i = 0; i < 3; i++) {
        errno = 0;
        void *q = realloc(blocks[i], opaque_size(GiB));
        OOM_CHECK(q == NULL, "realloc(%zu-byte block, 1 GiB) succeeded", lens[i]);
        OOM_CHECK(errno == ENOMEM, "realloc(%zu-byte block, 1 GiB): errno %d", lens[i], errno);
        if (q) { blocks[i] = q; continue; }
        size_t off = verify(blocks[i], lens[i], 21u + (unsigned)i);
        OOM_CHECK(off == lens[i], "failed realloc damaged %zu-byte block at %zu", lens[i], off);
    }

    /* The allocator still works after the failures. */
    for (int i = 0; i < 1000; i++) {
        void *s = malloc((size_t)(i % 200) * 16 + 1);
        OOM_CHECK(s != NULL, "small malloc after OOM failed");
        free(s);
    }
    void *m = malloc(8 * MiB);
    OOM_CHECK(m != NULL, "malloc(8 MiB) after OOM failed (limit leaves 256 MiB)");
    if (m) memset(m, 1, 8 * MiB);
    free(m);
    for (int i = 0; i < 3; i++) free(blocks[i]);
#undef OOM_CHECK
    return bad;
}

static void test_oom(void)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) _exit(oom_child());
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFEXITED(st), "OOM child died with signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    CHECK(WEXITSTATUS(st) == 0, "OOM child exited %d", WEXITSTATUS(st));
}

int main(int argc, char **argv)
{
    (void)argc; (void)argv;
    test_sizes();
    test_aligned();
    test_calloc();
    test_huge_and_zero();
    test_realloc();
    test_oom();
    return test_finish("check");
}

/*
 * test_introspect.c — glibc's introspection calls answer for hakmem: mallinfo2,
 * mallinfo, malloc_info, mallopt, free_sized, free_aligned_sized, malloc_trim.
 *
 * Why: programs and tools (python's tracemalloc helpers, monitoring agents, test
 * suites) read mallinfo2()/malloc_info() to see the heap; under a replacement
 * allocator they must describe that allocator's memory, not glibc's empty arena,
 * and the C23 sized frees must free (and, under HAKMEM_CHECK=1, check the size).
 *
 * What hakmem's figures mean (crates/hakmem-core/src/report.rs): uordblks = bytes
 * of small blocks (<= 256 KiB) in use, so N mallocs of stride S raise it by exactly
 * N*S in a single-threaded program; hblks/hblkhd = live large blocks and their
 * bytes (whole pages); fsmblks = bytes of free blocks in thread caches; arena =
 * bytes mapped minus hblkhd; fordblks = arena - uordblks; in counting mode
 * (HAKMEM_STATS) usmblks = peak bytes in use, smblks = classes with blocks in use,
 * ordblks = live thread heaps; mallinfo() saturates each int field.
 *
 * Cases (each in a child, spawn_self, run twice: without HAKMEM_STATS and with
 * HAKMEM_STATS=1 plus HAKMEM_STATS_FILE in a temporary directory; the flag matrix of
 * the run is inherited):
 *   mallinfo          exact uordblks/fsmblks/hblks/hblkhd deltas, fordblks identity,
 *                     mallinfo() == mallinfo2() field by field (glibc: loose checks)
 *   mallinfo-sat      a 3 GiB block: mallinfo().hblkhd saturates at INT_MAX (hakmem)
 *   malloc_info       XML shape, <total type="mmap"> = live large blocks, <total
 *                     type="rest"> size = uordblks, per-size totals add up; options
 *                     != 0 -> -1 with errno EINVAL (hakmem, as glibc's manual says;
 *                     glibc 2.36 itself returns EINVAL: there only "non-zero")
 *   mallopt-values    return values (hakmem exact; glibc only called)
 *   mallopt-mmap      M_MMAP_THRESHOLD = 256 KiB unmaps a freed 1 MiB block at once
 *                     (mincore says ENOMEM; glibc too), at 256 KiB + 1 hakmem keeps it cached
 *   check-action-*    M_CHECK_ACTION bit 2 makes an invalid free abort; without it the
 *                     free is reported and ignored even under HAKMEM_ABORT_ON_ERROR=1
 *   free-sized        free_sized/free_aligned_sized free (uordblks, hblks), no
 *                     diagnostic for sizes up to the usable size nor for NULL
 *   sized-mismatch    HAKMEM_CHECK=1: size > usable size, a misaligned alignment claim,
 *                     a non-power-of-two alignment: exactly one diagnostic each, in the
 *                     documented wording, and the block is still freed
 *   trim              malloc_trim(0) after freeing 50 MB of small blocks returns 1, a
 *                     second call at once returns 0 (hakmem)
 *   stats-consistency HAKMEM_STATS=json: mallinfo2 and the report taken right after
 *                     agree (uordblks = sum of the classes' in-use bytes, ...)
 * The parent also runs mallinfo, malloc_info and free-sized in its own process,
 * under whatever HAKMEM_* flags the runner gave it.
 *
 * free_sized and free_aligned_sized are looked up with dlsym(RTLD_DEFAULT); glibc
 * 2.36 has neither (those checks are skipped there).  A directly linked program
 * does not export them to dlsym (an executable exports only the symbols shared
 * libraries use, unless linked with -rdynamic), so a weak reference finds them.
 *
 * Usage: test_introspect hakmem   hakmem's exact figures and return values
 *        test_introspect          (glibc) loose checks only
 */
#define TEST_NAME "test_introspect"
#include "test_common.h"
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

static int hakmem_mode;

/* In a child, failures are reported and counted (case_fail); in the parent's own
 * process they count as test failures.  Both print the case and the numbers. */
static int in_child;
static const char *cur_case = "";
static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: %s%s: ", test_name, in_child ? "child: " : "", cur_case);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (in_child) case_failed = 1;
    else test_failures++;
}
#define EXPECT_EQ(what, got, want)                                                                        \
    do {                                                                                                  \
        long long g_ = (long long)(got), w_ = (long long)(want);                                          \
        if (g_ != w_) bad("%s: got %lld, want %lld (%+lld)", what, g_, w_, g_ - w_);                      \
    } while (0)

/* ---- environment of this run ---------------------------------------------------------- */

static int env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}
/* Do frees of mid blocks (3000 B) land in the thread cache in this run?  Not under
 * HAKMEM_CHECK=1 (no thread caches) nor HAKMEM_TCACHE_MID=0. */
static int mid_cache_on(void) { return !env_is("HAKMEM_CHECK", "1") && !env_is("HAKMEM_TCACHE_MID", "0"); }

/* ---- free_sized / free_aligned_sized ------------------------------------------------- */

typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);
extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));
static free_sized_fn fs_fn;
static free_aligned_sized_fn fas_fn;
static const char *fs_how = "absent";

/* Looks them up; with must_find (hakmem, where they are needed) their absence fails. */
static void find_sized_frees(int must_find)
{
    void *a = dlsym(RTLD_DEFAULT, "free_sized"), *b = dlsym(RTLD_DEFAULT, "free_aligned_sized");
    if (a && b) {
        fs_fn = (free_sized_fn)a;
        fas_fn = (free_aligned_sized_fn)b;
        fs_how = "dlsym";
    } else if (free_sized && free_aligned_sized) {
        fs_fn = free_sized;
        fas_fn = free_aligned_sized;
        fs_how = "weak reference (dlsym does not see them: linked into the executable)";
    }
    cur_case = "free_sized lookup";
    if (must_find && hakmem_mode && (!fs_fn || !fas_fn))
        bad("free_sized / free_aligned_sized not found (dlsym: %p %p, weak: %p %p)", a, b,
            (void *)(uintptr_t)free_sized, (void *)(uintptr_t)free_aligned_sized);
}

/* ---- the checks (run in children, and some in the parent itself) -------------------- */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static struct mallinfo old_mallinfo(void) { return mallinfo(); }
#pragma GCC diagnostic pop

/* mallinfo() must be mallinfo2() with each field saturated to int (hakmem). */
static void compare_mallinfo(const struct mallinfo2 *m2, const struct mallinfo *m)
{
#define SAT(v) ((v) > (size_t)INT_MAX ? INT_MAX : (int)(v))
#define FIELD(f) EXPECT_EQ("mallinfo()." #f " vs mallinfo2()." #f " saturated", m->f, SAT(m2->f))
    FIELD(arena); FIELD(ordblks); FIELD(smblks); FIELD(hblks); FIELD(hblkhd);
    FIELD(usmblks); FIELD(fsmblks); FIELD(uordblks); FIELD(fordblks); FIELD(keepcost);
#undef FIELD
#undef SAT
}

static void identities(const char *when, const struct mallinfo2 *m)
{
    if (!hakmem_mode) return;
    char w[96];
    snprintf(w, sizeof w, "%s: fordblks + uordblks == arena", when);
    EXPECT_EQ(w, m->fordblks + m->uordblks, m->arena);
    if (m->fsmblks > m->fordblks)
        bad("%s: fsmblks %zu (free bytes in thread caches) > fordblks %zu (all free bytes)", when, m->fsmblks, m->fordblks);
}

static void check_mallinfo(void)
{
    enum { N = 50 };
    static void *v[N];
    cur_case = "mallinfo";
    /* N mid blocks: uordblks rises by exactly N strides (hakmem), by at least the
     * bytes requested (glibc). */
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < N; i++) v[i] = opaque(malloc(3000));
    struct mallinfo2 m1 = mallinfo2();
    for (int i = 0; i < N; i++) CHECK(v[i], "malloc(3000) failed");
    size_t s = malloc_usable_size(v[0]);
    if (hakmem_mode) {
        EXPECT_EQ("uordblks after 50 x malloc(3000) (50 strides)", m1.uordblks - m0.uordblks, N * s);
        EXPECT_EQ("hblks after small mallocs", m1.hblks, m0.hblks);
        EXPECT_EQ("hblkhd after small mallocs", m1.hblkhd, m0.hblkhd);
    } else if (m1.uordblks < m0.uordblks + N * 3000) {
        bad("glibc: uordblks rose by %zd after 50 x malloc(3000), want >= %d", (ssize_t)(m1.uordblks - m0.uordblks), N * 3000);
    }
    identities("after mallocs", &m1);
    for (int i = 0; i < N; i++) free(v[i]);
    struct mallinfo2 m2 = mallinfo2();
    if (hakmem_mode) EXPECT_EQ("uordblks after freeing them", m2.uordblks, m0.uordblks);
    else if (m2.uordblks + N * 3000 > m1.uordblks)
        bad("glibc: uordblks fell by %zd after freeing 50 x 3000 B, want >= %d", (ssize_t)(m1.uordblks - m2.uordblks), N * 3000);
    identities("after frees", &m2);

    /* One block: its free goes to the thread cache (fsmblks + stride) when caches are on. */
    void *p = opaque(malloc(3000));
    CHECK(p, "malloc(3000) failed");
    struct mallinfo2 m3 = mallinfo2();
    free(p);
    struct mallinfo2 m4 = mallinfo2();
    if (hakmem_mode) {
        EXPECT_EQ("uordblks fall after one free", m3.uordblks - m4.uordblks, s);
        EXPECT_EQ(mid_cache_on() ? "fsmblks rise after one free (into the thread cache)"
                                 : "fsmblks rise after one free (thread caches off)",
                  m4.fsmblks - m3.fsmblks, mid_cache_on() ? s : 0);
    }

    /* A large block (33 MiB: above glibc's largest mmap threshold, so mmapped there too). */
    size_t big_n = 33 * MiB + 100;
    struct mallinfo2 m5 = mallinfo2();
    void *big = opaque(malloc(big_n));
    CHECK(big, "malloc(33 MiB) failed");
    struct mallinfo2 m6 = mallinfo2();
    EXPECT_EQ("hblks after malloc(33 MiB + 100)", m6.hblks - m5.hblks, 1);
    if (hakmem_mode) {
        EXPECT_EQ("hblkhd after malloc(33 MiB + 100) (pages rounded)", m6.hblkhd - m5.hblkhd, 33 * MiB + 4096);
        EXPECT_EQ("uordblks after a large malloc", m6.uordblks, m5.uordblks);
        identities("with a large block", &m6);
    } else if (m6.hblkhd - m5.hblkhd < big_n) {
        bad("glibc: hblkhd rose by %zd, want >= %zu", (ssize_t)(m6.hblkhd - m5.hblkhd), big_n);
    }
    struct mallinfo m = old_mallinfo();
    struct mallinfo2 m6b = mallinfo2();
    if (hakmem_mode) compare_mallinfo(&m6b, &m);
    free(big);
    struct mallinfo2 m7 = mallinfo2();
    EXPECT_EQ("hblks after freeing the large block", m7.hblks, m5.hblks);
    EXPECT_EQ("hblkhd after freeing the large block", m7.hblkhd, m5.hblkhd);
}

static void check_mallinfo_saturation(void)
{
    cur_case = "mallinfo saturation";
    if (!hakmem_mode) return; /* glibc truncates: its own semantics */
    size_t n = 3 * 1024 * MiB; /* never touched: address space only */
    void *big = opaque(malloc(opaque_size(n)));
    CHECK(big, "malloc(3 GiB) failed");
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m = old_mallinfo();
    if (m2.hblkhd < n) bad("mallinfo2().hblkhd %zu with a 3 GiB block live, want >= %zu", m2.hblkhd, n);
    EXPECT_EQ("mallinfo().hblkhd with 3 GiB in large blocks (saturated)", m.hblkhd, INT_MAX);
    compare_mallinfo(&m2, &m);
    free(big);
}

/* The number after `attr="` in the XML element starting at `el`. */
static long long xml_attr(const char *el, const char *attr)
{
    char pat[32];
    snprintf(pat, sizeof pat, " %s=\"", attr);
    const char *end = strchr(el, '>');
    const char *at = strstr(el, pat);
    if (!at || (end && at > end)) return -1;
    return strtoll(at + strlen(pat), NULL, 10);
}

static void check_malloc_info(void)
{
    static char xml[1 << 16], vbuf[4096];
    cur_case = "malloc_info";
    void *keep[2] = { opaque(malloc(MiB)), opaque(malloc(MiB)) }; /* two live large blocks */
    void *small[20];
    for (int i = 0; i < 20; i++) small[i] = opaque(malloc(200 + (size_t)i * 50));
    memset(xml, 0, sizeof xml);
    FILE *f = fmemopen(xml, sizeof xml, "w");
    CHECK(f, "fmemopen: %s", strerror(errno));
    setvbuf(f, vbuf, _IOFBF, sizeof vbuf); /* no allocation while writing */
    struct mallinfo2 m = mallinfo2();
    int r = malloc_info(0, f);
    errno = 0;
    int r2 = malloc_info(1, f);
    int e2 = errno;
    fclose(f);
    for (int i = 0; i < 20; i++) free(small[i]);
    free(keep[0]);
    free(keep[1]);
    EXPECT_EQ("malloc_info(0, f) return", r, 0);
    if (hakmem_mode) {
        EXPECT_EQ("malloc_info(1, f) return", r2, -1);
        if (e2 != EINVAL) bad("malloc_info(1, f): errno %d (%s), want EINVAL", e2, strerror(e2));
    } else if (r2 == 0) {
        /* glibc 2.36 returns EINVAL itself (its manual says -1 and errno). */
        bad("glibc: malloc_info(1, f) returned 0, want an error");
    }
    size_t len = strlen(xml);
    while (len && (xml[len - 1] == '\n' || xml[len - 1] == ' ')) xml[--len] = 0;
    if (strncmp(xml, "<malloc version=\"1\">", 20) != 0 || len < 9 || strcmp(xml + len - 9, "</malloc>") != 0) {
        bad("XML does not start with <malloc version=\"1\"> and end with </malloc>:\n%.2000s", xml);
        return;
    }
    if (!strstr(xml, "<total type=\"mmap\" count=\"")) bad("no <total type=\"mmap\" ...> element:\n%.2000s", xml);
    if (!hakmem_mode) return;
    /* The last mmap total is the process's; every rest total is the small blocks in use. */
    const char *mm = NULL, *p = xml;
    while ((p = strstr(p, "<total type=\"mmap\""))) mm = p++;
    if (mm) {
        EXPECT_EQ("<total type=\"mmap\"> count (= mallinfo2().hblks)", xml_attr(mm, "count"), m.hblks);
        EXPECT_EQ("<total type=\"mmap\"> size (= mallinfo2().hblkhd)", xml_attr(mm, "size"), m.hblkhd);
        if (m.hblks < 2) bad("mallinfo2().hblks %zu with two 1 MiB blocks live", m.hblks);
    }
    int rests = 0;
    long long rest_count = -1;
    for (p = xml; (p = strstr(p, "<total type=\"rest\"")); p++) {
        rests++;
        EXPECT_EQ("<total type=\"rest\"> size (= mallinfo2().uordblks)", xml_attr(p, "size"), m.uordblks);
        rest_count = xml_attr(p, "count");
    }
    if (!rests) bad("no <total type=\"rest\" ...> element:\n%.2000s", xml);
    long long sum_total = 0, sum_count = 0;
    for (p = xml; (p = strstr(p, "<size ")); p++) {
        sum_total += xml_attr(p, "total");
        sum_count += xml_attr(p, "count");
    }
    EXPECT_EQ("sum of <size total=...> (= uordblks)", sum_total, m.uordblks);
    EXPECT_EQ("sum of <size count=...> (= <total type=\"rest\"> count)", sum_count, rest_count);
}

static unsigned char mc_vec[1];
/* Is the page holding p mapped? (mincore fails with ENOMEM on an unmapped range) */
static int page_mapped(const void *p)
{
    void *pg = (void *)((uintptr_t)p & ~(uintptr_t)4095);
    if (mincore(pg, 4096, mc_vec) == 0) return 1;
    if (errno != ENOMEM) bad("mincore: %s", strerror(errno));
    return 0;
}

static void check_mallopt_values(void)
{
    cur_case = "mallopt return values";
    struct { int param, value, want; const char *name; } t[] = {
        { M_TRIM_THRESHOLD, 128 * 1024, 1, "M_TRIM_THRESHOLD 128 KiB" },
        { M_TRIM_THRESHOLD, 0, 1, "M_TRIM_THRESHOLD 0" },
        { M_MMAP_THRESHOLD, 1024 * 1024, 1, "M_MMAP_THRESHOLD 1 MiB" },
        { M_MMAP_MAX, 0, 0, "M_MMAP_MAX 0 (cannot stop mapping large blocks)" },
        { M_MMAP_MAX, 65536, 1, "M_MMAP_MAX 65536" },
        { M_ARENA_MAX, 2, 1, "M_ARENA_MAX 2" },
        { M_ARENA_TEST, 8, 1, "M_ARENA_TEST 8" },
        { M_CHECK_ACTION, 1, 1, "M_CHECK_ACTION 1" },
        { M_MXFAST, 64, 0, "M_MXFAST 64" },
        { M_TOP_PAD, 4096, 0, "M_TOP_PAD 4096" },
        { M_PERTURB, 0x55, 0, "M_PERTURB 0x55" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int r = mallopt(t[i].param, t[i].value);
        char w[96];
        snprintf(w, sizeof w, "mallopt(%s)", t[i].name);
        if (hakmem_mode) EXPECT_EQ(w, r, t[i].want);
    }
    /* The heap still works after the settings changed. */
    for (int i = 0; i < 2000; i++) {
        void *p = opaque(malloc((size_t)(i % 97) * 37 + 1 + (i % 50 == 0 ? 300 * KiB : 0)));
        CHECK(p, "malloc after mallopt failed");
        free(p);
    }
    (void)mallopt(M_PERTURB, 0);
}

static void check_mallopt_mmap(void)
{
    cur_case = "mallopt M_MMAP_THRESHOLD";
    if (hakmem_mode) {
        /* Above 256 KiB (by one byte): the large cache stays (the child runs with
         * HAKMEM_LARGE_CACHE_MB=64). */
        EXPECT_EQ("mallopt(M_MMAP_THRESHOLD, 256 KiB + 1)", mallopt(M_MMAP_THRESHOLD, 256 * 1024 + 1), 1);
        char *p = opaque(malloc(MiB));
        CHECK(p, "malloc(1 MiB) failed");
        p[0] = 1;
        void *was = opaque(p); /* the address only, for mincore */
        free(p);
        if (!page_mapped(was)) bad("a freed 1 MiB block was unmapped at once; the large cache (64 MiB) should keep it");
    }
    /* At most 256 KiB (exactly, the boundary): freed large blocks are unmapped at once. */
    int r = mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    if (hakmem_mode) EXPECT_EQ("mallopt(M_MMAP_THRESHOLD, 256 KiB)", r, 1);
    for (int i = 0; i < 3; i++) {
        char *q = opaque(malloc(MiB));
        CHECK(q, "malloc(1 MiB) failed");
        q[0] = 1;
        void *was = opaque(q);
        free(q);
        if (page_mapped(was)) bad("after mallopt(M_MMAP_THRESHOLD, 256 KiB), freed 1 MiB block %d is still mapped", i);
    }
}

static void check_action(int abort_bit)
{
    cur_case = abort_bit ? "mallopt(M_CHECK_ACTION, 3)" : "mallopt(M_CHECK_ACTION, 1)";
    EXPECT_EQ("mallopt(M_CHECK_ACTION) return", mallopt(M_CHECK_ACTION, abort_bit ? 3 : 1), 1);
    char *p = opaque(malloc(64));
    CHECK(p, "malloc(64) failed");
    free(opaque(p + 16)); /* invalid: aborts with bit 2, else reported and ignored */
    free(p);
}

static void check_free_sized(void)
{
    cur_case = "free_sized / free_aligned_sized";
    if (!fs_fn || !fas_fn) return;
    fs_fn(NULL, 0); /* like free(NULL) */
    fs_fn(NULL, 100);
    fas_fn(NULL, 64, 0);
    char *p = opaque(malloc(100));
    CHECK(p, "malloc(100) failed");
    size_t s = malloc_usable_size(p);
    struct mallinfo2 m0 = mallinfo2();
    fs_fn(p, 100);
    struct mallinfo2 m1 = mallinfo2();
    if (hakmem_mode) EXPECT_EQ("uordblks fall after free_sized(malloc(100), 100)", m0.uordblks - m1.uordblks, s);
    /* The size may be anything up to the usable size. */
    p = opaque(malloc(100));
    CHECK(p, "malloc(100) failed");
    m0 = mallinfo2();
    fs_fn(p, malloc_usable_size(p));
    m1 = mallinfo2();
    if (hakmem_mode) EXPECT_EQ("uordblks fall after free_sized(p, usable size)", m0.uordblks - m1.uordblks, s);
    char *q = opaque(aligned_alloc(64, 192));
    CHECK(q, "aligned_alloc(64, 192) failed");
    size_t sq = malloc_usable_size(q);
    m0 = mallinfo2();
    fas_fn(q, 64, 192);
    m1 = mallinfo2();
    if (hakmem_mode) EXPECT_EQ("uordblks fall after free_aligned_sized(q, 64, 192)", m0.uordblks - m1.uordblks, sq);
    char *big = opaque(malloc(MiB));
    CHECK(big, "malloc(1 MiB) failed");
    m0 = mallinfo2();
    fs_fn(big, MiB);
    m1 = mallinfo2();
    EXPECT_EQ("hblks fall after free_sized(malloc(1 MiB), 1 MiB)", m0.hblks - m1.hblks, 1);
    if (hakmem_mode) EXPECT_EQ("hblkhd fall after free_sized of 1 MiB", m0.hblkhd - m1.hblkhd, MiB);
    big = opaque(aligned_alloc(4096, MiB));
    CHECK(big, "aligned_alloc(4096, 1 MiB) failed");
    m0 = mallinfo2();
    fas_fn(big, 4096, MiB);
    m1 = mallinfo2();
    EXPECT_EQ("hblks fall after free_aligned_sized(aligned_alloc(4096, 1 MiB))", m0.hblks - m1.hblks, 1);
}

/* HAKMEM_CHECK=1: each bad claim gets one diagnostic and the block is still freed.
 * Prints "expect <line>" for each diagnostic the parent must find on stderr. */
static void check_sized_mismatch(void)
{
    cur_case = "free_sized mismatch (HAKMEM_CHECK=1)";
    if (!fs_fn || !fas_fn) return;
    static char expect[4][200];
    int ne = 0;
    char *p = opaque(malloc(100));
    CHECK(p, "malloc(100) failed");
    size_t s = malloc_usable_size(p);
    struct mallinfo2 m0 = mallinfo2();
    fs_fn(p, s + 1); /* one byte more than the block holds */
    struct mallinfo2 m1 = mallinfo2();
    snprintf(expect[ne++], sizeof expect[0], "hakmem: free_sized(): size %zu does not match block %p (its usable size is %zu)",
             s + 1, (void *)p, s);
    EXPECT_EQ("uordblks fall after the mismatched free_sized (still freed)", m0.uordblks - m1.uordblks, s);

    char *big = opaque(malloc(MiB));
    CHECK(big, "malloc(1 MiB) failed");
    size_t sb = malloc_usable_size(big);
    m0 = mallinfo2();
    fs_fn(big, sb + 4096);
    m1 = mallinfo2();
    snprintf(expect[ne++], sizeof expect[0], "hakmem: free_sized(): size %zu does not match block %p (its usable size is %zu)",
             sb + 4096, (void *)big, sb);
    EXPECT_EQ("hblks fall after the mismatched free_sized of a large block (still freed)", m0.hblks - m1.hblks, 1);

    /* A block at 16 mod 32 (48-byte blocks: every other one), claimed 32-aligned. */
    char *blk[8], *odd = NULL;
    for (int i = 0; i < 8; i++) {
        blk[i] = opaque(malloc(48));
        CHECK(blk[i], "malloc(48) failed");
        if (!odd && (uintptr_t)blk[i] % 32 == 16) odd = blk[i];
    }
    CHECK(odd, "no 48-byte block at 16 mod 32 among 8");
    size_t so = malloc_usable_size(odd);
    m0 = mallinfo2();
    fas_fn(odd, 32, 48);
    m1 = mallinfo2();
    snprintf(expect[ne++], sizeof expect[0],
             "hakmem: free_aligned_sized(): size 48 does not match block %p (its usable size is %zu)", (void *)odd, so);
    EXPECT_EQ("uordblks fall after free_aligned_sized with a wrong alignment claim (still freed)",
              m0.uordblks - m1.uordblks, so);
    for (int i = 0; i < 8; i++)
        if (blk[i] != odd) free(blk[i]);

    /* An alignment that is not a power of two. */
    char *q = opaque(aligned_alloc(64, 64));
    CHECK(q, "aligned_alloc(64, 64) failed");
    size_t sq = malloc_usable_size(q);
    m0 = mallinfo2();
    fas_fn(q, 24, 64);
    m1 = mallinfo2();
    snprintf(expect[ne++], sizeof expect[0],
             "hakmem: free_aligned_sized(): size 64 does not match block %p (its usable size is %zu)", (void *)q, sq);
    EXPECT_EQ("uordblks fall after free_aligned_sized with alignment 24 (still freed)", m0.uordblks - m1.uordblks, sq);
    for (int i = 0; i < ne; i++) printf("expect %s\n", expect[i]);
}

static void check_trim(void)
{
    enum { N = 12800 }; /* 12800 x 4000 B: 51 MB of small (mid) blocks */
    static char *v[N];
    cur_case = "malloc_trim";
    for (int i = 0; i < N; i++) {
        v[i] = opaque(malloc(4000));
        CHECK(v[i], "malloc(4000) #%d failed", i);
        v[i][0] = (char)i; /* resident, so there is something to give back */
        v[i][3999] = (char)i;
    }
    for (int i = 0; i < N; i++) free(v[i]);
    int r1 = malloc_trim(0);
    int r2 = malloc_trim(0);
    if (hakmem_mode) {
        EXPECT_EQ("malloc_trim(0) after freeing 51 MB of small blocks", r1, 1);
        EXPECT_EQ("malloc_trim(0) again at once (nothing left to give back)", r2, 0);
    }
    printf("trim %d %d\n", r1, r2);
}

/* Reads the whole file into buf (NUL-terminated); -1 on error. */
static ssize_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
    close(fd);
    buf[n] = 0;
    return (ssize_t)n;
}
/* JSON: the number after "key": inside [obj, end) (section: after "sec":{). */
static long long jget(const char *s, const char *sec, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":{", sec);
    const char *o = strstr(s, pat);
    if (!o) return -1;
    const char *e = strchr(o, '}');
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(o + 1, pat);
    if (!at || at > e) return -1;
    return strtoll(at + strlen(pat), NULL, 10);
}

static void check_stats_consistency(const char *dir)
{
    static char buf[1 << 16];
    cur_case = "mallinfo2 vs the HAKMEM_STATS report";
    if (!hakmem_mode) return;
    static void *a[100], *b[30];
    for (int i = 0; i < 100; i++) a[i] = opaque(malloc(200));
    for (int i = 0; i < 30; i++) b[i] = opaque(malloc(5000));
    void *big[2] = { opaque(malloc(MiB)), opaque(malloc(3 * MiB)) };
    for (int i = 0; i < 100; i += 3) free(a[i]);
    char path[512];
    snprintf(path, sizeof path, "%s/s.%d.json", dir, (int)getpid());
    struct mallinfo2 m = mallinfo2();
    malloc_stats(); /* nothing allocates in between: the same moment */
    if (slurp(path, buf, sizeof buf) <= 0) { bad("no report in %s", path); return; }
    long long sum = 0, classes_in_use = 0;
    const char *cl = strstr(buf, "\"classes\":[");
    const char *clend = cl ? strchr(cl, ']') : NULL;
    if (!cl || !clend) { bad("no classes array in the report: %.300s", buf); return; }
    for (const char *p = cl; (p = strstr(p, "\"in_use_bytes\":")) && p < clend; p++) {
        long long v = strtoll(p + 15, NULL, 10);
        sum += v;
        classes_in_use += v > 0;
    }
    EXPECT_EQ("mallinfo2().uordblks vs the sum of the classes' in_use_bytes", m.uordblks, sum);
    EXPECT_EQ("mallinfo2().uordblks + hblkhd vs totals.in_use_bytes", m.uordblks + m.hblkhd, jget(buf, "totals", "in_use_bytes"));
    EXPECT_EQ("mallinfo2().hblks vs large.in_use", m.hblks, jget(buf, "large", "in_use"));
    EXPECT_EQ("mallinfo2().hblkhd vs large.in_use_bytes", m.hblkhd, jget(buf, "large", "in_use_bytes"));
    EXPECT_EQ("mallinfo2().arena + hblkhd vs totals.mapped_bytes", m.arena + m.hblkhd, jget(buf, "totals", "mapped_bytes"));
    EXPECT_EQ("mallinfo2().usmblks vs totals.peak_in_use_bytes", m.usmblks, jget(buf, "totals", "peak_in_use_bytes"));
    EXPECT_EQ("mallinfo2().smblks vs classes with bytes in use", m.smblks, classes_in_use);
    EXPECT_EQ("mallinfo2().ordblks vs threads.heaps_live", m.ordblks, jget(buf, "threads", "heaps_live"));
    EXPECT_EQ("mallinfo2().keepcost", m.keepcost, 0);
    identities("counting mode", &m);
    size_t want = 0;
    for (int i = 0; i < 100; i++) if (i % 3) want += malloc_usable_size(a[i]);
    for (int i = 0; i < 30; i++) want += malloc_usable_size(b[i]);
    if (m.uordblks < want) bad("uordblks %zu below the %zu bytes this program holds in small blocks", m.uordblks, want);
    for (int i = 0; i < 100; i++) if (i % 3) free(a[i]);
    for (int i = 0; i < 30; i++) free(b[i]);
    free(big[0]);
    free(big[1]);
}

/* ---- child side ---------------------------------------------------------------------- */

static void run_case(const char *name, const char *dir)
{
    in_child = 1;
    find_sized_frees(!strcmp(name, "free-sized") || !strcmp(name, "sized-mismatch"));
    if (!strcmp(name, "mallinfo")) check_mallinfo();
    else if (!strcmp(name, "mallinfo-sat")) check_mallinfo_saturation();
    else if (!strcmp(name, "malloc_info")) check_malloc_info();
    else if (!strcmp(name, "mallopt-values")) check_mallopt_values();
    else if (!strcmp(name, "mallopt-mmap")) check_mallopt_mmap();
    else if (!strcmp(name, "check-action-abort")) check_action(1);
    else if (!strcmp(name, "check-action-continue")) check_action(0);
    else if (!strcmp(name, "free-sized")) check_free_sized();
    else if (!strcmp(name, "sized-mismatch")) check_sized_mismatch();
    else if (!strcmp(name, "trim")) check_trim();
    else if (!strcmp(name, "stats-consistency")) check_stats_consistency(dir);
    else { case_fail("unknown case %s", name); exit(2); }
    if (case_failed) exit(1);
    printf("done\n");
    fflush(stdout);
    exit(0);
}

/* ---- parent side --------------------------------------------------------------------- */

static char top_dir[256];
static int case_no;

enum variant { PLAIN, STATS_TEXT, STATS_JSON };
static const char *const variant_name[] = { "without HAKMEM_STATS", "HAKMEM_STATS=1", "HAKMEM_STATS=json" };

/* Runs case `name` in a child: the run's HAKMEM_* flags minus HAKMEM_STATS*, HAKMEM_VERBOSE
 * (its lines would mix with the diagnostics) and the ones in extra_drop, plus the
 * variant's HAKMEM_STATS / HAKMEM_STATS_FILE (<dir>/s.%p.json, so no report reaches
 * stderr) and extra_add. */
static void spawn_case(const char *name, enum variant v, const char *extra_drop, const char *extra_add,
                       child_result_t *res)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/%02d-%s", top_dir, ++case_no, name);
    if (mkdir(dir, 0700)) { perror("mkdir"); exit(1); }
    const char *drop[] = { "HAKMEM_STATS=", "HAKMEM_STATS_FILE=", "HAKMEM_VERBOSE=", extra_drop, NULL };
    char env_file[512];
    snprintf(env_file, sizeof env_file, "HAKMEM_STATS_FILE=%s/s.%%p.json", dir);
    const char *add[5];
    int na = 0;
    add[na++] = "TEST_INTROSPECT_CHILD=1"; /* see main: a child never acts as the parent */
    if (v != PLAIN) {
        add[na++] = v == STATS_JSON ? "HAKMEM_STATS=json" : "HAKMEM_STATS=1";
        add[na++] = env_file;
    }
    if (extra_add) add[na++] = extra_add;
    add[na] = NULL;
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, dir, (char *)(hakmem_mode ? "hakmem" : "system"),
                     NULL };
    spawn_self(argv, drop, add, res);
}

static void report_child(const char *name, enum variant v, const child_result_t *r, const char *what)
{
    char how[64];
    if (WIFSIGNALED(r->status))
        snprintf(how, sizeof how, "killed by signal %d%s", WTERMSIG(r->status),
                 WTERMSIG(r->status) == SIGALRM ? " (timed out)" : "");
    else
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(r->status));
    fprintf(stderr, "FAIL %s: case %s (%s): %s; child %s\n  child stdout: %s\n  child stderr: %s\n", test_name, name,
            variant_name[v], what, how, r->nout ? r->out : "(empty)", r->nerr ? r->err : "(empty)");
    test_failures++;
}

/* Number of stderr lines starting "hakmem: "; lines[] gets up to max of them. */
static int hakmem_lines(const char *err, char lines[][256], int max)
{
    int n = 0;
    const char *cur = err, *l;
    size_t len;
    while ((l = next_line(&cur, &len)))
        if (starts_with(l, len, "hakmem: ")) {
            if (n < max) snprintf(lines[n], 256, "%.*s", (int)(len < 255 ? len : 255), l);
            n++;
        }
    return n;
}

/* Runs a case that must exit 0 ("done") with no "hakmem: " line on stderr. */
static void run_clean(const char *name, enum variant v, const char *extra_drop, const char *extra_add)
{
    static child_result_t r;
    char lines[4][256];
    spawn_case(name, v, extra_drop, extra_add, &r);
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !strstr(r.out, "done\n"))
        report_child(name, v, &r, "want exit 0 and \"done\"");
    else if (hakmem_lines(r.err, lines, 4) != 0)
        report_child(name, v, &r, "want no \"hakmem: \" line on stderr");
    else if (!strcmp(name, "trim") && !hakmem_mode)
    {
        const char *t = strstr(r.out, "trim ");
        printf("glibc (%s): malloc_trim(0) returned %.*s\n", variant_name[v], t ? (int)strcspn(t + 5, "\n") : 1,
               t ? t + 5 : "?");
    }
}

static void run_mismatch(enum variant v)
{
    static child_result_t r;
    const char *name = "sized-mismatch";
    spawn_case(name, v, "HAKMEM_CHECK=", "HAKMEM_CHECK=1", &r);
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !strstr(r.out, "done\n")) {
        report_child(name, v, &r, "want exit 0 and \"done\" (a mismatch is reported, the block freed)");
        return;
    }
    if (!hakmem_mode || !fs_fn) return;
    char lines[8][256];
    int n = hakmem_lines(r.err, lines, 8);
    int want = 0;
    const char *cur = r.out, *l;
    size_t len;
    while ((l = next_line(&cur, &len))) {
        if (!starts_with(l, len, "expect ")) continue;
        char exp[256];
        snprintf(exp, sizeof exp, "%.*s", (int)(len - 7 < 255 ? len - 7 : 255), l + 7);
        if (want >= n || strcmp(lines[want], exp) != 0) {
            char msg[700];
            snprintf(msg, sizeof msg, "diagnostic %d: want \"%s\", got \"%s\"", want + 1, exp, want < n ? lines[want] : "(none)");
            report_child(name, v, &r, msg);
            return;
        }
        want++;
    }
    if (n != want || want != 4) {
        char msg[128];
        snprintf(msg, sizeof msg, "want exactly 4 \"hakmem: \" lines (one per bad claim), got %d (expected list: %d)", n, want);
        report_child(name, v, &r, msg);
    }
}

static void run_check_action(int abort_bit, enum variant v)
{
    static child_result_t r;
    const char *name = abort_bit ? "check-action-abort" : "check-action-continue";
    /* Without the abort bit, mallopt must override HAKMEM_ABORT_ON_ERROR=1. */
    spawn_case(name, v, "HAKMEM_ABORT_ON_ERROR=", abort_bit ? "HAKMEM_ABORT_ON_ERROR=0" : "HAKMEM_ABORT_ON_ERROR=1", &r);
    char lines[4][256];
    int n = hakmem_lines(r.err, lines, 4);
    if (n != 1 || strncmp(lines[0], "hakmem: free(): invalid pointer 0x", 34) != 0) {
        report_child(name, v, &r, "want exactly one \"hakmem: free(): invalid pointer 0x...\" line");
        return;
    }
    if (abort_bit && (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGABRT))
        report_child(name, v, &r, "want death by SIGABRT after the invalid free");
    if (!abort_bit && (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !strstr(r.out, "done\n")))
        report_child(name, v, &r, "want exit 0 and \"done\": the invalid free is reported and ignored");
}

int main(int argc, char **argv)
{
    case_child_entry(argc, argv, "TEST_INTROSPECT_CHILD", run_case, &hakmem_mode);
    watchdog_arm(30);
    find_sized_frees(1);
    printf("free_sized, free_aligned_sized: %s\n", fs_how);
    fflush(stdout);

    /* In this process, under the runner's flags (the matrix, or HAKMEM_STATS=1). */
    check_mallinfo();
    check_malloc_info();
    check_free_sized();

    const char *tmp = getenv("TMPDIR");
    snprintf(top_dir, sizeof top_dir, "%s/test_introspect.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(top_dir)) { perror("mkdtemp"); return 1; }
    for (enum variant v = PLAIN; v <= STATS_TEXT; v++) {
        run_clean("mallinfo", v, NULL, NULL);
        run_clean("mallinfo-sat", v, NULL, NULL);
        run_clean("malloc_info", v, NULL, NULL);
        run_clean("mallopt-values", v, NULL, NULL);
        run_clean("mallopt-mmap", v, "HAKMEM_LARGE_CACHE_MB=", "HAKMEM_LARGE_CACHE_MB=64");
        run_clean("free-sized", v, NULL, NULL);
        run_clean("trim", v, NULL, NULL);
        run_mismatch(v);
        if (hakmem_mode) { /* glibc aborts on an invalid free whatever M_CHECK_ACTION says */
            run_check_action(1, v);
            run_check_action(0, v);
        }
    }
    run_clean("stats-consistency", STATS_JSON, NULL, NULL);
    if (!test_failures) remove_tree(top_dir);
    else fprintf(stderr, "(child directories kept in %s)\n", top_dir);
    return test_finish("check");
}

/*
 * test_addrspace.c — address space and out of memory (RLIMIT_AS).
 *
 * An allocator that reserves far more address space than it hands out, or that
 * keeps freed memory in caches it will not give back, fails under a limit on the
 * address space (RLIMIT_AS, `ulimit -v`, containers, 32-bit-sized budgets) long
 * before the program's data fills it.  Each case runs in a child process
 * ("--case NAME", see spawn_self in test_common.h), which sets its own soft
 * RLIMIT_AS to (its VmSize from /proc/self/status + the case's budget) just
 * before the measured part, so the budget is what the case may add:
 *
 *   large-300k       budget 200 MiB: malloc(300 KiB) until NULL (errno ENOMEM);
 *                    at least 600 must fit (200 MiB / 300 KiB = 682); free all,
 *                    and the same number fits again.
 *   threads          budget 3 GiB: 1200 threads with 64 KiB stacks, each
 *                    malloc(64), all alive at once; all must start and allocate.
 *   cache-gives-way  budget 256 MiB: 20 x 8 MiB malloc'ed, touched, freed (into
 *                    the large cache / segment caches), then 224 MiB of 64 B ..
 *                    64 KiB blocks must fit (the caches must give way when mmap
 *                    fails), then freed, then one 200 MiB block must fit.
 *   realloc-grow     budget 162 MiB: realloc(malloc(64 MiB), 96 MiB) succeeds
 *                    and keeps the contents (old + new = 160 MiB is enough),
 *                    with pages mapped right before and after the block so it
 *                    has to move.
 *   huge             realloc(malloc(1 MiB), 1 << 46) = NULL with ENOMEM and the
 *                    old block intact; malloc, calloc, posix_memalign,
 *                    aligned_alloc of 64 TiB fail with ENOMEM (no limit set:
 *                    the kernel refuses 64 TiB under overcommit_memory 0 or 2).
 *   recover          budget 128 MiB: fill with mixed sizes through every entry
 *                    point (malloc, calloc, realloc, posix_memalign,
 *                    aligned_alloc, memalign, valloc, pvalloc) until they fail,
 *                    each failure with ENOMEM; free all; a second identical fill
 *                    gets at least 90% of the first one's bytes.
 * Every case also passes on glibc.  The child prints its counts (echoed by the
 * parent as "  case: ..." lines).
 *
 * Usage: test_addrspace [hakmem]  (the argument is passed to the cases, which
 *        check the same things with or without it)
 *        test_addrspace --case NAME [hakmem]   run one case in this process
 */
#define TEST_NAME "test_addrspace"
#include "test_common.h"
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

/* ------------------------------------------------------------------------- */
/* child side helpers                                                        */

/* VmSize of this process in bytes, read without allocating (no stdio). */
static size_t vm_size(void)
{
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0, "open /proc/self/status: errno %d", errno);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    const char *s = strstr(buf, "\nVmSize:");
    CHECK(s != NULL, "no VmSize line in /proc/self/status");
    s += 8;
    while (*s == ' ' || *s == '\t') s++;
    size_t kb = 0;
    while (*s >= '0' && *s <= '9') kb = kb * 10 + (size_t)(*s++ - '0');
    return kb * 1024;
}

static size_t limit_base; /* VmSize when the limit was set */

/* Soft RLIMIT_AS = current VmSize + budget (the hard limit stays as it is). */
static void limit_as(size_t budget)
{
    limit_base = vm_size();
    struct rlimit r;
    CHECK(getrlimit(RLIMIT_AS, &r) == 0, "getrlimit: errno %d", errno);
    r.rlim_cur = limit_base + budget;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0, "setrlimit(RLIMIT_AS, %zu): errno %d", limit_base + budget, errno);
}
static void unlimit_as(void)
{
    struct rlimit r;
    CHECK(getrlimit(RLIMIT_AS, &r) == 0, "getrlimit: errno %d", errno);
    r.rlim_cur = r.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0, "setrlimit(RLIMIT_AS, max): errno %d", errno);
}

/* First allocation of every kind the cases make, before VmSize is read: the
 * allocator's one-time set-up (thread heap, first segment, page-map leaf) and
 * stdout's buffer are then outside the budget.  Nothing stays allocated. */
static void warm_up(const char *name)
{
    printf("case %s\n", name);
    fflush(stdout);
    void *p = malloc(64);
    CHECK(p != NULL, "warm-up malloc(64) failed");
    memset(p, 1, 64);
    free(p);
}

/* Static storage for block pointers: the bookkeeping takes nothing from the
 * allocator under test while it is being squeezed. */
enum { MAX_BLOCKS = 1 << 19 };
static void *blk[MAX_BLOCKS];
static size_t blk_size[MAX_BLOCKS];

/* ------------------------------------------------------------------------- */
/* large-300k                                                                */

/* malloc(300 KiB) until NULL; one byte of each block written.  Returns the
 * count; checks errno at the failure. */
static size_t fill_300k(const char *round)
{
    const size_t sz = 300 * KiB;
    size_t n = 0;
    for (;;) {
        CHECK(n < MAX_BLOCKS, "%s: %zu blocks of 300 KiB and still no NULL", round, n);
        errno = 0;
        unsigned char *p = malloc(sz);
        if (!p) {
            CHECK(errno == ENOMEM, "%s: malloc(300 KiB) #%zu returned NULL with errno %d, want ENOMEM (%d)",
                  round, n + 1, errno, ENOMEM);
            break;
        }
        p[0] = (unsigned char)n;
        p[sz - 1] = (unsigned char)(n >> 8);
        blk[n++] = p;
    }
    return n;
}
static void free_300k(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = blk[i];
        CHECK(p[0] == (unsigned char)i && p[300 * KiB - 1] == (unsigned char)(i >> 8),
              "300 KiB block #%zu (%p) lost its contents", i, (void *)p);
        free(p);
    }
}

static void case_large_300k(void)
{
    limit_as(200 * MiB);
    size_t n1 = fill_300k("first fill");
    free_300k(n1);
    size_t n2 = fill_300k("second fill");
    free_300k(n2);
    unlimit_as();
    printf("300 KiB blocks in 200 MiB: first fill %zu, second fill %zu\n", n1, n2);
    /* 200 MiB / 300 KiB = 682.7; glibc (one 304 KiB mmap per block) fits 673..682.
     * 600 leaves 12% of the budget for per-block rounding and metadata; an
     * allocator that reserves a 4 MiB chunk per block fits about 50. */
    CHECK(n1 >= 600, "only %zu blocks of 300 KiB fit in 200 MiB of address space, want >= 600 "
          "(682 would fit with no overhead)", n1);
    /* Everything was freed: the second fill must find the whole budget again.
     * A margin of 1% (7 blocks) for block placement that differs between the
     * rounds (glibc serves the second round from its heap instead of mmap). */
    CHECK(n2 + n1 / 100 >= n1, "second fill got %zu blocks of 300 KiB, the first %zu: freed memory "
          "did not come back", n2, n1);
}

/* ------------------------------------------------------------------------- */
/* threads                                                                   */

enum { NTHREADS = 1200 };
static pthread_t tids[NTHREADS];
static pthread_mutex_t t_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_cv = PTHREAD_COND_INITIALIZER;
static int t_go;
static atomic_int t_ok, t_nomem;

static void *thread_main(void *arg)
{
    unsigned char *p = malloc(64);
    if (p) {
        memset(p, (int)(uintptr_t)arg, 64);
        atomic_fetch_add(&t_ok, 1);
    } else {
        atomic_fetch_add(&t_nomem, 1);
    }
    pthread_mutex_lock(&t_mu);
    while (!t_go) pthread_cond_wait(&t_cv, &t_mu);
    pthread_mutex_unlock(&t_mu);
    if (p) {
        for (int i = 0; i < 64; i++)
            if (p[i] != (unsigned char)(uintptr_t)arg) {
                fprintf(stderr, "FAIL %s: child: thread %d: its 64-byte block was overwritten\n", test_name,
                        (int)(uintptr_t)arg);
                _exit(1);
            }
        free(p);
    }
    return NULL;
}

static void case_threads(void)
{
    pthread_attr_t attr;
    CHECK(pthread_attr_init(&attr) == 0, "pthread_attr_init");
    CHECK(pthread_attr_setstacksize(&attr, 64 * KiB) == 0, "pthread_attr_setstacksize(64 KiB)");
    limit_as(3072 * MiB);
    int created = 0, err = 0;
    for (; created < NTHREADS; created++) {
        err = pthread_create(&tids[created], &attr, thread_main, (void *)(uintptr_t)(created & 0xff));
        if (err) break;
    }
    /* every started thread has made its malloc before any is let go: all alive at once */
    while (atomic_load(&t_ok) + atomic_load(&t_nomem) < created) sched_yield();
    size_t vm_peak = vm_size() - limit_base;
    pthread_mutex_lock(&t_mu);
    t_go = 1;
    pthread_cond_broadcast(&t_cv);
    pthread_mutex_unlock(&t_mu);
    for (int i = 0; i < created; i++) CHECK(pthread_join(tids[i], NULL) == 0, "pthread_join #%d", i);
    pthread_attr_destroy(&attr);
    unlimit_as();
    int ok = atomic_load(&t_ok), nomem = atomic_load(&t_nomem);
    printf("threads in 3 GiB: %d of %d created (pthread_create error %d), %d malloc(64) ok, %d NULL; "
           "address space in use with all alive: %zu MiB\n",
           created, NTHREADS, err, ok, nomem, vm_peak / MiB);
    /* glibc needs about 1.3 GiB (16 arenas of 64 MiB + stacks): 3 GiB is more than
     * twice that, so every thread must start and allocate. */
    CHECK(created == NTHREADS, "only %d of %d threads (64 KiB stacks, one malloc(64) each) could be "
          "created under a 3 GiB address-space budget (pthread_create: error %d)", created, NTHREADS, err);
    CHECK(nomem == 0, "%d of %d threads got NULL from malloc(64) under a 3 GiB budget", nomem, created);
}

/* ------------------------------------------------------------------------- */
/* cache-gives-way                                                           */

static void case_cache_gives_way(void)
{
    const size_t budget = 256 * MiB;
    limit_as(budget);
    /* 1. 160 MiB of large blocks, freed: what the allocator keeps of them in caches
     *    (hakmem: the large cache, HAKMEM_LARGE_CACHE_MB = 64 by default) holds
     *    address space. */
    enum { NBIG = 20 };
    for (int i = 0; i < NBIG; i++) {
        errno = 0;
        unsigned char *p = malloc(8 * MiB);
        CHECK(p != NULL, "malloc(8 MiB) #%d of %d failed (errno %d) with %d MiB live in a 256 MiB budget", i + 1,
              NBIG, errno, i * 8);
        for (size_t o = 0; o < 8 * MiB; o += 1 * MiB) p[o] = (unsigned char)i; /* touch */
        p[8 * MiB - 1] = (unsigned char)i;
        blk[i] = p;
    }
    for (int i = 0; i < NBIG; i++) free(blk[i]);

    /* 2. small and mid blocks up to budget - 32 MiB live.  Powers of two 64 B ..
     *    64 KiB, the byte count dominated by 16..64 KiB: sizes every allocator
     *    serves with little rounding, so 224 MiB live need well under 256 MiB of
     *    address space — unless freed memory is still held in caches.  32 MiB of
     *    slack covers per-block rounding and slab/segment metadata (~3%, 7 MiB)
     *    plus the partly used slabs/segments of each size class. */
    static const size_t sizes[] = { 64, 16 * KiB, 256, 64 * KiB, 1024, 32 * KiB, 4096, 64 * KiB, 128 };
    const size_t target = budget - 32 * MiB;
    size_t live = 0, n = 0;
    while (live < target) {
        size_t sz = sizes[n % (sizeof sizes / sizeof sizes[0])];
        CHECK(n < MAX_BLOCKS, "too many blocks");
        errno = 0;
        unsigned char *p = malloc(sz);
        CHECK(p != NULL, "malloc(%zu) failed (errno %d) with %zu MiB of small/mid blocks live (%zu blocks), "
              "want %zu MiB to fit in the 256 MiB budget: the 160 MiB freed before are still held",
              sz, errno, live / MiB, n, target / MiB);
        p[0] = (unsigned char)n;
        p[sz - 1] = (unsigned char)(n >> 3);
        blk[n] = p;
        blk_size[n] = sz;
        live += sz;
        n++;
    }
    size_t vm_small = vm_size() - limit_base;
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = blk[i];
        CHECK(p[0] == (unsigned char)i && p[blk_size[i] - 1] == (unsigned char)(i >> 3),
              "block #%zu (%zu bytes) lost its contents", i, blk_size[i]);
        free(p);
    }

    /* 3. all freed: one block of 200 MiB (78% of the budget) must fit. */
    errno = 0;
    unsigned char *big = malloc(200 * MiB);
    int big_errno = errno;
    if (big) {
        big[0] = 1;
        big[200 * MiB - 1] = 2;
        free(big);
    }
    unlimit_as();
    printf("256 MiB budget: 20 x 8 MiB freed, then %zu MiB in %zu small/mid blocks fit (address space "
           "added: %zu MiB), then malloc(200 MiB) %s\n",
           live / MiB, n, vm_small / MiB, big ? "ok" : "FAILED");
    CHECK(big != NULL, "malloc(200 MiB) failed (errno %d) in a 256 MiB budget after everything was freed",
          big_errno);
}

/* ------------------------------------------------------------------------- */
/* realloc-grow                                                              */

static void unmap_neighbours(void *nb[2])
{
    for (int k = 0; k < 2; k++)
        if (nb[k] != MAP_FAILED) munmap(nb[k], 4096);
}

static void case_realloc_grow(void)
{
    const size_t old_sz = 64 * MiB, new_sz = 96 * MiB;
    /* old + new = 160 MiB: moving the block needs both at once at most (mremap
     * needs only the new size).  2 MiB of slack for metadata (page-map leaves,
     * rounding); the baseline's 4 MiB over-mapping for alignment does not fit. */
    limit_as(old_sz + new_sz + 2 * MiB);
    errno = 0;
    unsigned char *p = malloc(old_sz);
    CHECK(p != NULL, "malloc(64 MiB) failed (errno %d) in a 162 MiB budget", errno);
    fill(p, 4096, 11);
    fill(p + old_sz - 4096, 4096, 12);
    /* Neighbours: one page mapped right below the block and one right after it
     * (where the address space is free), as thread stacks, dlopen'ed libraries
     * and file maps end up in a real program.  So the block cannot grow in place,
     * nor can the allocator map the new block just below the old one: it must
     * move it to a new place, with old + new the most it may hold at once. */
    void *nb[2];
    for (int k = 0; k < 2; k++) {
        void *want = k ? (void *)(p + old_sz) : (void *)(p - 4096);
        nb[k] = mmap(want, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (nb[k] != MAP_FAILED && nb[k] != want) { munmap(nb[k], 4096); nb[k] = MAP_FAILED; }
    }
    errno = 0;
    unsigned char *q = realloc(p, new_sz);
    int e = errno;
    if (!q) {
        size_t bad = verify(p, 4096, 11);
        CHECK(bad == 4096, "failed realloc damaged the old block at byte %zu", bad);
        free(p);
        unmap_neighbours(nb);
        unlimit_as();
        printf("realloc(64 MiB -> 96 MiB) in 162 MiB: FAILED, errno %d\n", e);
        fail(__LINE__, "realloc(64 MiB block, 96 MiB) returned NULL (errno %d) with a 162 MiB address-space "
             "budget; old + new = 160 MiB must be enough", e);
    }
    size_t bad1 = verify(q, 4096, 11), bad2 = verify(q + old_sz - 4096, 4096, 12);
    CHECK(bad1 == 4096, "realloc 64 -> 96 MiB: first page differs at byte %zu", bad1);
    CHECK(bad2 == 4096, "realloc 64 -> 96 MiB: last page of the old size differs at byte %zu", bad2);
    q[new_sz - 1] = 1; /* the new tail is writable */
    free(q);
    unmap_neighbours(nb);
    unlimit_as();
    printf("realloc(64 MiB -> 96 MiB) in 162 MiB: ok, contents kept\n");
}

/* ------------------------------------------------------------------------- */
/* huge                                                                      */

static int read_overcommit(void)
{
    char b[16] = { 0 };
    int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, b, sizeof b - 1);
    close(fd);
    return r > 0 ? b[0] - '0' : -1;
}

static void case_huge(void)
{
    /* With overcommit_memory = 1 the kernel maps 64 TiB of anonymous memory on
     * request (the user address space is 128 TiB), so glibc's malloc succeeds
     * too: nothing to test then. */
    if (read_overcommit() == 1) {
        printf("skipped (vm.overcommit_memory = 1: the kernel grants 64 TiB)\n");
        return;
    }
    const size_t huge = opaque_size((size_t)1 << 46);
    int failures = 0;
#define HUGE_EXPECT(call, got_null, what)                                                              \
    do {                                                                                               \
        errno = 0;                                                                                     \
        void *r_ = (call);                                                                             \
        int e_ = errno;                                                                                \
        if (r_) {                                                                                      \
            printf("%s: returned %p (want NULL)\n", what, r_);                                         \
            fprintf(stderr, "FAIL %s: child: %s returned %p, want NULL with ENOMEM\n", test_name, what, r_); \
            failures++;                                                                                \
            got_null = 0;                                                                              \
            free(r_);                                                                                  \
        } else {                                                                                       \
            printf("%s: NULL, errno %d%s\n", what, e_, e_ == ENOMEM ? " (ENOMEM)" : "");               \
            got_null = 1;                                                                              \
            if (e_ != ENOMEM) {                                                                        \
                fprintf(stderr, "FAIL %s: child: %s: errno %d, want ENOMEM (%d)\n", test_name, what, e_, ENOMEM); \
                failures++;                                                                            \
            }                                                                                          \
        }                                                                                              \
    } while (0)
    int null;
    unsigned char *p = malloc(1 * MiB);
    CHECK(p != NULL, "malloc(1 MiB) failed");
    fill(p, 1 * MiB, 21);
    HUGE_EXPECT(realloc(p, huge), null, "realloc(1 MiB block, 1 << 46)");
    if (null) {
        size_t bad = verify(p, 1 * MiB, 21);
        if (bad != 1 * MiB) {
            fprintf(stderr, "FAIL %s: child: after the failed realloc the old block differs at byte %zu\n",
                    test_name, bad);
            failures++;
        }
        free(p);
    }
    HUGE_EXPECT(malloc(huge), null, "malloc(1 << 46)");
    HUGE_EXPECT(calloc(opaque_size((size_t)1 << 23), opaque_size((size_t)1 << 23)), null, "calloc(1 << 23, 1 << 23)");
    HUGE_EXPECT(aligned_alloc(opaque_size((size_t)1 << 21), huge), null, "aligned_alloc(1 << 21, 1 << 46)");
    HUGE_EXPECT(memalign(opaque_size(4096), huge), null, "memalign(4096, 1 << 46)");
    void *pm = NULL;
    int rc = posix_memalign(&pm, 4096, huge);
    printf("posix_memalign(4096, 1 << 46): returned %d, pointer %p\n", rc, pm);
    if (rc != ENOMEM) {
        fprintf(stderr, "FAIL %s: child: posix_memalign(4096, 1 << 46) returned %d, want ENOMEM (%d)\n",
                test_name, rc, ENOMEM);
        failures++;
        if (rc == 0) free(pm);
    }
#undef HUGE_EXPECT
    /* the heap still works */
    void *s = malloc(100);
    CHECK(s != NULL, "malloc(100) after the huge requests failed");
    free(s);
    if (failures) exit(1);
}

/* ------------------------------------------------------------------------- */
/* recover                                                                   */

enum { EP_MALLOC, EP_CALLOC, EP_REALLOC, EP_POSIX_MEMALIGN, EP_ALIGNED_ALLOC, EP_MEMALIGN, EP_VALLOC,
       EP_PVALLOC, EP_COUNT };
static const char *const ep_name[EP_COUNT] = { "malloc", "calloc", "realloc", "posix_memalign",
                                               "aligned_alloc", "memalign", "valloc", "pvalloc" };

/* Random size: 16 B .. 1 KiB (60%), .. 64 KiB (30%), .. 256 KiB (8%), .. 1 MiB (2%). */
static size_t recover_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 100);
    x >>= 8;
    if (pick < 60) return 16 + x % 1009;
    if (pick < 90) return 1024 + x % (63 * KiB);
    if (pick < 98) return 64 * KiB + x % (192 * KiB);
    return 256 * KiB + x % (768 * KiB);
}

/* Tag a block: first and last byte from its index. */
static void tag(size_t i)
{
    unsigned char *p = blk[i];
    p[0] = (unsigned char)(i * 7 + 1);
    p[blk_size[i] - 1] = (unsigned char)(i * 13 + 5);
}
static int tag_ok(size_t i)
{
    const unsigned char *p = blk[i];
    return p[0] == (unsigned char)(i * 7 + 1) && p[blk_size[i] - 1] == (unsigned char)(i * 13 + 5);
}

/* Request n bytes through entry point ep; NULL on failure with *err = the error
 * (errno, or posix_memalign's return value). */
static void *ep_alloc(int ep, size_t n, int *err)
{
    void *p = NULL;
    errno = 0;
    switch (ep) {
    case EP_MALLOC: p = malloc(n); break;
    case EP_CALLOC: p = calloc(1, n); break;
    case EP_POSIX_MEMALIGN: {
        int rc = posix_memalign(&p, 4096, n);
        if (rc) { *err = rc; return NULL; }
        break;
    }
    case EP_ALIGNED_ALLOC: p = aligned_alloc(256, (n + 255) & ~(size_t)255); break;
    case EP_MEMALIGN: p = memalign(64, n); break;
    case EP_VALLOC: p = valloc(n); break;
    case EP_PVALLOC: p = pvalloc(n); break;
    default: break;
    }
    *err = errno;
    return p;
}
static size_t ep_align(int ep)
{
    switch (ep) {
    case EP_POSIX_MEMALIGN: case EP_VALLOC: case EP_PVALLOC: return 4096;
    case EP_ALIGNED_ALLOC: return 256;
    case EP_MEMALIGN: return 64;
    default: return 16;
    }
}

typedef struct { size_t bytes, blocks; int fails[EP_COUNT]; } fill_stats_t;

/* Fill the budget: seeded random sizes, the entry points in turn (realloc grows
 * a random live block), until 64 requests in a row have failed.  Every failure
 * must be ENOMEM and leave the realloc'ed block intact. */
static void recover_fill(const char *round, fill_stats_t *st)
{
    rng_t r = rng_seed(4242);
    size_t n = 0, live = 0;
    int streak = 0;
    memset(st, 0, sizeof *st);
    for (size_t op = 0; streak < 64; op++) {
        CHECK(op < 50000000, "%s: 50 million requests and no end", round);
        int ep = (int)(op % EP_COUNT);
        size_t sz = recover_size(&r);
        uint64_t pick = rnd(&r);
        int err = 0;
        if (ep == EP_REALLOC) {
            if (n == 0) continue;
            size_t i = pick % n, nsz = blk_size[i] + sz;
            errno = 0;
            void *q = realloc(blk[i], nsz);
            err = errno;
            if (!q) {
                CHECK(err == ENOMEM, "%s: realloc(%zu -> %zu) returned NULL with errno %d, want ENOMEM (%d)",
                      round, blk_size[i], nsz, err, ENOMEM);
                CHECK(tag_ok(i), "%s: failed realloc(%zu -> %zu) damaged the block", round, blk_size[i], nsz);
                st->fails[ep]++;
                streak++;
                continue;
            }
            blk[i] = q;
            CHECK(((unsigned char *)q)[0] == (unsigned char)(i * 7 + 1), "%s: realloc lost the first byte", round);
            live += nsz - blk_size[i];
            blk_size[i] = nsz;
            tag(i);
            streak = 0;
            continue;
        }
        CHECK(n < MAX_BLOCKS, "%s: too many blocks", round);
        void *p = ep_alloc(ep, sz, &err);
        if (!p) {
            CHECK(err == ENOMEM, "%s: %s(%zu) failed with %s %d, want ENOMEM (%d)", round, ep_name[ep], sz,
                  ep == EP_POSIX_MEMALIGN ? "return value" : "errno", err, ENOMEM);
            st->fails[ep]++;
            streak++;
            continue;
        }
        streak = 0;
        CHECK(is_aligned(p, ep_align(ep)), "%s: %s(%zu) = %p not %zu-aligned", round, ep_name[ep], sz, p,
              ep_align(ep));
        if (ep == EP_CALLOC)
            CHECK(((unsigned char *)p)[0] == 0 && ((unsigned char *)p)[sz - 1] == 0,
                  "%s: calloc(1, %zu) not zeroed", round, sz);
        blk[n] = p;
        blk_size[n] = sz;
        tag(n);
        n++;
        live += sz;
    }
    st->bytes = live;
    st->blocks = n;

    /* Full: a request of 32 MiB through each entry point must fail with ENOMEM. */
    const size_t big = 32 * MiB;
    for (int ep = 0; ep < EP_COUNT; ep++) {
        int err = 0;
        if (ep == EP_REALLOC) {
            size_t i = n / 2;
            errno = 0;
            void *q = n ? realloc(blk[i], blk_size[i] + big) : NULL;
            err = errno;
            if (!n) continue;
            if (q) {
                blk[i] = q;
                blk_size[i] += big;
                tag(i);
                fail(__LINE__, "%s: heap full, yet realloc(+32 MiB) succeeded", round);
            }
            CHECK(err == ENOMEM, "%s: heap full: realloc(%zu -> +32 MiB) errno %d, want ENOMEM (%d)", round,
                  blk_size[i], err, ENOMEM);
            CHECK(tag_ok(i), "%s: failed realloc damaged the block", round);
            continue;
        }
        void *p = ep_alloc(ep, big, &err);
        CHECK(p == NULL, "%s: heap full (64 requests in a row failed), yet %s(32 MiB) succeeded", round,
              ep_name[ep]);
        CHECK(err == ENOMEM, "%s: heap full: %s(32 MiB) failed with %s %d, want ENOMEM (%d)", round,
              ep_name[ep], ep == EP_POSIX_MEMALIGN ? "return value" : "errno", err, ENOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(tag_ok(i), "%s: block #%zu (%zu bytes) lost its contents", round, i, blk_size[i]);
        free(blk[i]);
    }
}

static void case_recover(void)
{
    fill_stats_t a, b;
    limit_as(128 * MiB);
    recover_fill("first fill", &a);
    recover_fill("second fill", &b);
    unlimit_as();
    for (int k = 0; k < 2; k++) {
        const fill_stats_t *s = k ? &b : &a;
        printf("%s fill of 128 MiB: %zu KiB in %zu blocks; failures:", k ? "second" : "first", s->bytes / KiB,
               s->blocks);
        for (int ep = 0; ep < EP_COUNT; ep++) printf(" %s %d", ep_name[ep], s->fails[ep]);
        printf("\n");
    }
    /* Everything was freed between the fills, which make the same requests: the
     * second must get (nearly) as much.  10% margin for placement differences. */
    CHECK(b.bytes * 10 >= a.bytes * 9, "second fill got %zu KiB, the first %zu KiB (want >= 90%%): freed memory "
          "did not come back", b.bytes / KiB, a.bytes / KiB);
}

/* ------------------------------------------------------------------------- */

static void run_case(const char *name)
{
    alarm(15); /* a hang ends as SIGALRM, reported by the parent */
    test_who = "child";
    warm_up(name);
    if (!strcmp(name, "large-300k")) case_large_300k();
    else if (!strcmp(name, "threads")) case_threads();
    else if (!strcmp(name, "cache-gives-way")) case_cache_gives_way();
    else if (!strcmp(name, "realloc-grow")) case_realloc_grow();
    else if (!strcmp(name, "huge")) case_huge();
    else if (!strcmp(name, "recover")) case_recover();
    else fail(__LINE__, "unknown case %s", name);
    printf("ok\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

static void check_case(const char *name, const char *mode)
{
    static child_result_t r;
    static const char *const drop[] = { "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    static const char *const add[] = { NULL };
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, (char *)mode, NULL };
    spawn_self(argv, drop, add, &r);
    /* echo the child's counts */
    const char *cur = r.out, *line;
    size_t len;
    while ((line = next_line(&cur, &len)))
        if (!starts_with(line, len, "case ") && !starts_with(line, len, "ok")) printf("  %s: %.*s\n", name, (int)len, line);
    int ok = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "\nok\n");
    fflush(stdout);
    if (ok) return;
    fprintf(stderr, "FAIL %s: case %s: status 0x%x", test_name, name, r.status);
    if (WIFSIGNALED(r.status))
        fprintf(stderr, " (signal %d%s)", WTERMSIG(r.status),
                WTERMSIG(r.status) == SIGALRM ? ": the case hung or ran over 15 s" : "");
    fprintf(stderr, "\n  child stderr: %s\n", r.nerr ? r.err : "(empty)");
    test_failures++;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--case")) run_case(argv[2]);
    alarm(60);
    const char *mode = argc >= 2 ? argv[1] : "";
    static const char *cases[] = { "large-300k", "threads", "cache-gives-way", "realloc-grow", "huge", "recover" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(cases[i], mode);
    return test_finish("case");
}

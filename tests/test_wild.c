/*
 * test_wild.c — wild frees that look plausible must get a diagnostic, never a
 * crash, a corrupted heap or a block handed out twice (hakmem only).
 *
 * test_badinput.c covers the obvious misuse (interior pointers, unmapped
 * pages, double frees of hakmem blocks).  These cases are the ones a cheap
 * check lets through:
 *   uncarved            free() of a block-start address inside a live tiny slab
 *                       (48 B blocks) that was never handed out: the lazily
 *                       carved part of the slab ends far below it.  Afterwards
 *                       2000 live 48 B blocks must be distinct, non-overlapping
 *                       and keep their contents (a block handed out twice
 *                       shows as a duplicate address and a clobbered pattern).
 *   uncarved-mid        the same in a mid slab (3000 B requests, 3072 B blocks,
 *                       21 blocks per 64 KiB slab, at most 9 carved at first).
 *   prot-none           free() of base+16 and base+4096 of a PROT_NONE mapping:
 *                       mincore() says "mapped", reading it faults.  (A
 *                       PROT_WRITE-only mapping is readable on x86: no case.)
 *   file-past-eof       free() inside a MAP_SHARED file mapping: on the page past
 *                       the end of the file (reading gives SIGBUS), and on the
 *                       readable first page (not a heap block either).
 *   glibc-double-free-tcache / -bin / -mmapped
 *                       free() twice of a __libc_malloc'ed block of 40 B (glibc
 *                       tcache), 1500 B (past a full tcache: unsorted bin) and
 *                       300000 B (an mmapped chunk).  The first free goes to
 *                       glibc silently; the second must be caught by hakmem, not
 *                       by glibc's "free(): double free detected" abort, and
 *                       glibc must not hand the block out twice afterwards.
 *   fake-chunk-stack    free() of a stack buffer dressed up as a glibc chunk
 *                       (size 0x41, next chunk's PREV_INUSE set): it must not be
 *                       fed to glibc (whose tcache would hand it out again).
 *   fake-mmapped        free() of a fake IS_MMAPPED chunk at a page boundary of a
 *                       stack (the main thread's, then a thread's): glibc would
 *                       munmap that page of the stack.
 *   usable-size-freed / -mid
 *                       malloc_usable_size() of a block already freed (100 B,
 *                       still in the thread cache; 20000 B): reported like a
 *                       double free, returns 0.
 *   valid               the same calls used correctly: no diagnostic at all.
 *
 * Each case runs in a child process (this program re-executed with
 * "--case NAME", stdout and stderr captured), once with
 * HAKMEM_ABORT_ON_ERROR=0 and once with =1.  Expected for every misuse case:
 *   =0: one stderr line starting "hakmem: " per bad call, naming the function
 *       ("free()" / "malloc_usable_size()"), the problem ("invalid pointer" /
 *       "double free" / "free") and the pointer (the child prints "bad <ptr>"
 *       on stdout before each bad call); the call is ignored, the child checks
 *       the heap is intact, prints "survived" and exits 0;
 *   =1: the child dies by SIGABRT right after the first such line.
 * Always a failure: SIGSEGV / SIGBUS, or glibc's own abort text ("free(): ...",
 * "munmap_chunk", "double free or corruption", "tcache") on stderr.
 *
 * Usage: test_wild hakmem          run every case (the runner passes "hakmem")
 *        test_wild                 run only "valid" (glibc aborts on the misuse by design)
 *        test_wild --case NAME     run one case in this process (debugging)
 */
#define TEST_NAME "test_wild"
#include "test_common.h"
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

/* glibc's own allocator, even when malloc is interposed or linked statically. */
extern void *__libc_malloc(size_t);

#define PAGE_SZ ((size_t)4096)
#define SLAB_PAGE_SZ ((uintptr_t)64 * 1024) /* hakmem slabs start on 64 KiB boundaries */

/* Bad pointers go through opaque() (test_common.h): it keeps GCC's
 * -Wfree-nonheap-object / -Wuse-after-free quiet (the misuse is deliberate)
 * and stops it from reasoning about the memory behind them. */

/* ------------------------------------------------------------------------- */
/* child side: one case                                                      */

/* Give up on the case now (after a failure that makes going on meaningless,
 * e.g. a duplicate block whose free would add more diagnostics). */
static void child_give_up(void)
{
    fflush(NULL);
    exit(1);
}

/* Announce a bad call: the parent matches the i-th "bad" pointer against the
 * i-th "hakmem: " line.  Flushed, so it is seen even if the call aborts. */
static void announce_bad(const void *p)
{
    printf("bad %p\n", p);
    fflush(stdout);
}

/* --- uncarved ------------------------------------------------------------ */

enum { PROOF_MAX = 2000 };
static unsigned char *proof_blocks[PROOF_MAX];
typedef struct { uintptr_t a; int i; } addr_idx_t;
static addr_idx_t proof_sorted[PROOF_MAX];

static int cmp_addr(const void *x, const void *y)
{
    uintptr_t a = ((const addr_idx_t *)x)->a, b = ((const addr_idx_t *)y)->a;
    return a < b ? -1 : a > b;
}

/* n live blocks of `size` bytes: all distinct, none overlapping another, each
 * keeping its own pattern after all were allocated; then all freed.  A block
 * handed out twice fails every one of these checks. */
static void prove_no_duplicates(size_t size, int n)
{
    for (int i = 0; i < n; i++) {
        proof_blocks[i] = malloc(size);
        if (!proof_blocks[i]) { case_fail("malloc(%zu) #%d returned NULL", size, i); child_give_up(); }
        fill(proof_blocks[i], size, (unsigned)i);
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        proof_sorted[i].a = (uintptr_t)proof_blocks[i];
        proof_sorted[i].i = i;
    }
    qsort(proof_sorted, (size_t)n, sizeof proof_sorted[0], cmp_addr);
    for (int i = 0; i + 1 < n; i++) {
        if (proof_sorted[i].a + size > proof_sorted[i + 1].a && bad++ < 5)
            case_fail("%d live blocks of %zu B: #%d at %p and #%d at %p overlap (%s)", n, size,
                       proof_sorted[i].i, (void *)proof_sorted[i].a, proof_sorted[i + 1].i,
                       (void *)proof_sorted[i + 1].a,
                       proof_sorted[i].a == proof_sorted[i + 1].a ? "the same block handed out twice"
                                                                  : "blocks overlap");
    }
    for (int i = 0; i < n; i++) {
        size_t off = verify(proof_blocks[i], size, (unsigned)i);
        if (off != size && bad++ < 10)
            case_fail("%d live blocks of %zu B: block #%d at %p clobbered at byte %zu (shared with another block?)",
                       n, size, i, (void *)proof_blocks[i], off);
    }
    if (bad) child_give_up();
    for (int i = 0; i < n; i++) free(proof_blocks[i]);
}

/* First block of a fresh size class, then free() of the block-start address k
 * strides further on in the same slab page: inside the slab, beyond what the
 * allocator has carved so far (carving is lazy: a tiny refill carves at most
 * half the thread-cache capacity + 1 = 65 blocks by default, a mid one 9). */
static void uncarved(size_t size, size_t k, int proof_n)
{
    unsigned char *p = malloc(size);
    if (!p) { case_fail("malloc(%zu) failed", size); child_give_up(); }
    size_t stride = malloc_usable_size(p); /* hakmem: the class's block size */
    unsigned char *q = p + stride * k;
    if (((uintptr_t)p & ~(SLAB_PAGE_SZ - 1)) != ((uintptr_t)(q + stride - 1) & ~(SLAB_PAGE_SZ - 1))) {
        /* The case needs q to be a block start of p's slab; if the layout
         * changed (stride, slab size, p not near the slab start), say so. */
        case_fail("layout assumption broken: malloc(%zu) = %p, usable size %zu, block %zu strides on (%p) "
                   "is not in the same 64 KiB slab page",
                   size, (void *)p, stride, k, (void *)q);
        child_give_up();
    }
    announce_bad(q);
    free(opaque(q));
    prove_no_duplicates(size, proof_n);
    free(p);
}

/* --- prot-none / file-past-eof ------------------------------------------- */

static void prot_none(void)
{
    unsigned char *base = mmap(NULL, 4 * PAGE_SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { case_fail("mmap PROT_NONE: %s", strerror(errno)); child_give_up(); }
    announce_bad(base + 16);
    free(opaque(base + 16));
    announce_bad(base + PAGE_SZ);
    free(opaque(base + PAGE_SZ));
    if (munmap(base, 4 * PAGE_SZ) != 0) case_fail("munmap: %s", strerror(errno));
}

static void file_past_eof(void)
{
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_wild.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) { case_fail("mkstemp(%s): %s", path, strerror(errno)); child_give_up(); }
    unlink(path);
    unsigned char data[100];
    memset(data, 0, sizeof data); /* a zero "chunk header": not a heap block */
    if (write(fd, data, sizeof data) != (ssize_t)sizeof data) {
        case_fail("write temp file: %s", strerror(errno));
        child_give_up();
    }
    /* Two pages of a 100-byte file: the second lies wholly past EOF, so any
     * read of it raises SIGBUS (mincore still calls it mapped). */
    unsigned char *base = mmap(NULL, 2 * PAGE_SZ, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { case_fail("mmap file: %s", strerror(errno)); child_give_up(); }
    announce_bad(base + PAGE_SZ + 16);
    free(opaque(base + PAGE_SZ + 16));
    announce_bad(base + 16);
    free(opaque(base + 16));
    if (base[0] != 0 || base[99] != 0) case_fail("file mapping changed: byte 0 = %d, byte 99 = %d", base[0], base[99]);
    munmap(base, 2 * PAGE_SZ);
    close(fd);
}

/* --- glibc double frees --------------------------------------------------- */

static void glibc_double_free(size_t size)
{
    enum { TCACHE_FILL = 7 }; /* glibc's default tcache_count */
    void *fillers[TCACHE_FILL] = { 0 };
    int fill_tcache = size > 1024 && size < 128 * KiB; /* the "bin" case */
    if (fill_tcache)
        for (int i = 0; i < TCACHE_FILL; i++) fillers[i] = __libc_malloc(size);
    void *g = __libc_malloc(size);
    /* keeps g from merging into glibc's top chunk when freed to a bin */
    void *guard = __libc_malloc(40);
    if (!g || !guard) { case_fail("__libc_malloc(%zu) failed", size); child_give_up(); }
    memset(g, 0x5a, size);
    if (fill_tcache)
        for (int i = 0; i < TCACHE_FILL; i++) free(fillers[i]); /* glibc's tcache for size is now full */
    void *alias = opaque(g);
    free(g); /* valid: hakmem hands it to glibc, silently */
    announce_bad(alias);
    free(opaque(alias)); /* the double free */
    /* glibc must not hand the block out twice now */
    void *a[4] = { __libc_malloc(size), __libc_malloc(size), __libc_malloc(40), __libc_malloc(40) };
    for (int i = 0; i < 4; i++) {
        if (!a[i]) { case_fail("__libc_malloc after the double free returned NULL"); child_give_up(); }
        for (int j = 0; j < i; j++)
            if (a[i] == a[j]) {
                case_fail("after the double free of %p, __libc_malloc returned %p twice (calls %d and %d)", alias,
                           a[i], j, i);
                child_give_up();
            }
    }
    memset(a[0], 1, size);
    memset(a[1], 2, size);
    for (int i = 0; i < 4; i++) free(a[i]);
    free(guard);
}

/* --- fake glibc chunks ---------------------------------------------------- */

static void fake_chunk_stack(void)
{
    /* buf+16 is the "user pointer"; its chunk header is buf[0..16), the chunk
     * is 64 bytes, and the next chunk's header at buf+64 says PREV_INUSE. */
    unsigned char buf[256] __attribute__((aligned(16)));
    memset(buf, 0, sizeof buf);
    size_t hdr[2] = { 0, 0x41 }; /* prev_size, size 64 | PREV_INUSE */
    size_t next[2] = { 0, 0x21 }; /* next chunk: size 32 | PREV_INUSE */
    memcpy(buf, hdr, sizeof hdr);
    memcpy(buf + 64, next, sizeof next);
    fill(buf + 16, 48, 77);
    unsigned char *user = buf + 16;
    announce_bad(user);
    free(opaque(user));
    size_t off = verify(opaque(buf + 16), 48, 77);
    if (off != 48)
        case_fail("free(%p) of a fake chunk on the stack wrote into it (byte %zu changed: glibc's tcache links?)",
                   (void *)user, off);
    void *got[10];
    for (int i = 0; i < 10; i++) {
        got[i] = __libc_malloc(48);
        if (got[i] == (void *)user) {
            case_fail("__libc_malloc(48) call %d returned the stack address %p: the fake chunk was freed into glibc",
                       i, got[i]);
            child_give_up();
        }
    }
    for (int i = 0; i < 10; i++) free(got[i]);
}

/* A fake IS_MMAPPED chunk at a page boundary inside a stack frame (prev_size 0,
 * size one page): glibc would munmap that page of the stack.  A stack is not
 * where glibc's mmapped chunks live; hakmem must refuse it.  Run on the main
 * thread's stack and on a thread's (glibc-made, with a guard page below). */
static void *fake_mmapped_on_this_stack(void *arg)
{
    (void)arg;
    unsigned char frame[4 * PAGE_SZ];
    unsigned char *page = (unsigned char *)(((uintptr_t)frame + PAGE_SZ - 1) & ~(uintptr_t)(PAGE_SZ - 1));
    size_t hdr[2] = { 0, 0x1002 };
    memcpy(page, hdr, sizeof hdr);
    fill(page + 16, PAGE_SZ - 16, 91);
    unsigned char *user = page + 16;
    announce_bad(user);
    free(opaque(user));
    size_t off = verify(page + 16, PAGE_SZ - 16, 91); /* SIGSEGV here if the page was unmapped */
    if (off != PAGE_SZ - 16) case_fail("fake mmapped chunk's contents changed at byte %zu", off);
    memset(opaque(frame), 0x33, sizeof frame); /* still ours, still writable */
    return NULL;
}

static void fake_mmapped(void)
{
    fake_mmapped_on_this_stack(NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, fake_mmapped_on_this_stack, NULL) != 0) {
        case_fail("pthread_create failed");
        child_give_up();
    }
    pthread_join(t, NULL);
}

/* --- malloc_usable_size of a freed block ---------------------------------- */

static void usable_size_freed(size_t size)
{
    void *p = malloc(size);
    if (!p) { case_fail("malloc(%zu) failed", size); child_give_up(); }
    void *alias = opaque(p); /* taken before the free: no -Wuse-after-free */
    free(p);                 /* a tiny block stays in the thread cache */
    announce_bad(alias);
    size_t u = malloc_usable_size(alias);
    if (u != 0) case_fail("malloc_usable_size(%p) of a freed %zu B block returned %zu, want 0", alias, size, u);
}

/* --- valid ---------------------------------------------------------------- */

static void valid(void)
{
    unsigned char *p = malloc(100);
    CHECK(p, "malloc(100)");
    fill(p, 100, 5);
    size_t u = malloc_usable_size(p);
    if (u < 100) case_fail("malloc_usable_size(malloc(100)) = %zu", u);
    unsigned char *r = realloc(p, 3000);
    if (!r) { case_fail("realloc to 3000 failed"); child_give_up(); }
    if (verify(r, 100, 5) != 100) case_fail("realloc lost the contents");
    free(r);
    unsigned char *m = malloc(20000);
    CHECK(m, "malloc(20000)");
    memset(m, 1, 20000);
    free(m);
    /* glibc blocks through hakmem's free / realloc / malloc_usable_size */
    static const size_t gs[] = { 40, 1500, 300000 };
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
        unsigned char *g = __libc_malloc(gs[i]);
        if (!g) { case_fail("__libc_malloc(%zu) failed", gs[i]); child_give_up(); }
        fill(g, gs[i], 9);
        if (malloc_usable_size(g) < gs[i]) case_fail("malloc_usable_size(__libc_malloc(%zu)) = %zu", gs[i], malloc_usable_size(g));
        free(g);
    }
    unsigned char *g = __libc_malloc(40);
    CHECK(g, "__libc_malloc(40)");
    fill(g, 40, 11);
    g = realloc(g, 5000);
    if (!g) { case_fail("realloc(__libc_malloc block) failed"); child_give_up(); }
    if (verify(g, 40, 11) != 40) case_fail("realloc of a glibc block lost the contents");
    free(g);
}

static void run_case(const char *name)
{
    if (!strcmp(name, "valid")) valid();
    else if (!strcmp(name, "uncarved")) uncarved(48, 700, PROOF_MAX);   /* tiny slab: 1365 blocks */
    else if (!strcmp(name, "uncarved-mid")) uncarved(3000, 15, 200);    /* 21 blocks; 200 span ~10 slabs */
    else if (!strcmp(name, "prot-none")) prot_none();
    else if (!strcmp(name, "file-past-eof")) file_past_eof();
    else if (!strcmp(name, "glibc-double-free-tcache")) glibc_double_free(40);
    else if (!strcmp(name, "glibc-double-free-bin")) glibc_double_free(1500);
    else if (!strcmp(name, "glibc-double-free-mmapped")) glibc_double_free(300000);
    else if (!strcmp(name, "fake-chunk-stack")) fake_chunk_stack();
    else if (!strcmp(name, "fake-mmapped")) fake_mmapped();
    else if (!strcmp(name, "usable-size-freed")) usable_size_freed(100);
    else if (!strcmp(name, "usable-size-freed-mid")) usable_size_freed(20000);
    else {
        case_fail("unknown case %s", name);
        exit(2);
    }
    /* the heap keeps working */
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)(i % 100) * 40 + 1);
        if (!p) { case_fail("malloc after the bad call failed"); break; }
        free(p);
    }
    if (case_failed) child_give_up();
    printf("survived\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

typedef struct {
    const char *name;
    int bad_calls;     /* "hakmem: " lines expected with HAKMEM_ABORT_ON_ERROR=0 */
    const char *func;  /* the function each line must name, e.g. "free()" */
    const char *word1; /* each line must contain word1 or word2 */
    const char *word2;
} case_t;

static const case_t cases[] = {
    { "valid", 0, NULL, NULL, NULL },
    { "uncarved", 1, "free()", "invalid pointer", NULL },
    { "uncarved-mid", 1, "free()", "invalid pointer", NULL },
    { "prot-none", 2, "free()", "invalid pointer", NULL },
    { "file-past-eof", 2, "free()", "invalid pointer", NULL },
    { "glibc-double-free-tcache", 1, "free()", "double free", "invalid pointer" },
    { "glibc-double-free-bin", 1, "free()", "double free", "invalid pointer" },
    { "glibc-double-free-mmapped", 1, "free()", "double free", "invalid pointer" },
    { "fake-chunk-stack", 1, "free()", "invalid pointer", NULL },
    { "fake-mmapped", 2, "free()", "invalid pointer", NULL },
    { "usable-size-freed", 1, "malloc_usable_size()", "free", NULL },
    { "usable-size-freed-mid", 1, "malloc_usable_size()", "free", NULL },
};

/* Runs this program with "--case NAME", HAKMEM_ABORT_ON_ERROR=abort_flag and
 * without HAKMEM_STATS / HAKMEM_VERBOSE (whose "hakmem: " lines would mix in). */
static void spawn_case(const char *name, int abort_flag, child_result_t *res)
{
    static const char *const drop[] = { "HAKMEM_ABORT_ON_ERROR=", "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    const char *const add[] = { abort_flag ? "HAKMEM_ABORT_ON_ERROR=1" : "HAKMEM_ABORT_ON_ERROR=0", NULL };
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, NULL };
    spawn_self(argv, drop, add, res);
}

enum { MAX_LINES = 8 };
typedef struct { const char *s; size_t len; } line_t;

/* Collects the lines of buf that start with prefix (at most MAX_LINES kept);
 * returns how many there are. */
static int lines_with_prefix(const char *buf, const char *prefix, line_t *out)
{
    int n = 0;
    const char *cur = buf, *line;
    size_t len;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, prefix)) {
            if (n < MAX_LINES) out[n] = (line_t){ line, len };
            n++;
        }
    return n;
}

/* glibc's own diagnostic (its abort on a bad free) in stderr: a line that is
 * neither hakmem's nor the child's FAIL report naming one of glibc's texts. */
static const char *glibc_abort_text(const char *err)
{
    static const char *const texts[] = { "free(): ", "munmap_chunk", "double free or corruption", "tcache",
                                         "malloc(): ", "corrupted", NULL };
    const char *cur = err, *line;
    size_t len;
    while ((line = next_line(&cur, &len))) {
        if (starts_with(line, len, "hakmem: ") || starts_with(line, len, "FAIL ")) continue;
        for (int i = 0; texts[i]; i++)
            if (line_has(line, len, texts[i])) return texts[i];
    }
    return NULL;
}

static void report(const char *name, int abort_flag, const child_result_t *r, const char *what)
{
    fprintf(stderr, "FAIL %s: case %s (HAKMEM_ABORT_ON_ERROR=%d): %s; status 0x%x", test_name, name, abort_flag,
            what, r->status);
    if (WIFSIGNALED(r->status)) fprintf(stderr, " (signal %d, %s)", WTERMSIG(r->status), strsignal(WTERMSIG(r->status)));
    else if (WIFEXITED(r->status)) fprintf(stderr, " (exit %d)", WEXITSTATUS(r->status));
    fprintf(stderr, "\n  child stdout: %s\n  child stderr: %s\n", r->nout ? r->out : "(empty)",
            r->nerr ? r->err : "(empty)");
    test_failures++;
}


static void check_case(const case_t *c, int abort_flag)
{
    static child_result_t r;
    char msg[768];
    watchdog_context = c->name;
    spawn_case(c->name, abort_flag, &r);
    line_t hl[MAX_LINES], bad[MAX_LINES];
    int n = lines_with_prefix(r.err, "hakmem: ", hl);
    int nbad = lines_with_prefix(r.out, "bad ", bad);
    int survived = strstr(r.out, "survived") != NULL;
    const char *glibc = glibc_abort_text(r.err);

    /* crashes and glibc's own aborts first: they are the bugs this test is about */
    if (WIFSIGNALED(r.status) && (WTERMSIG(r.status) == SIGSEGV || WTERMSIG(r.status) == SIGBUS)) {
        snprintf(msg, sizeof msg, "crashed with %s after %d of %d bad call(s) (the allocator read memory it does "
                 "not own), %d \"hakmem: \" line(s)", WTERMSIG(r.status) == SIGSEGV ? "SIGSEGV" : "SIGBUS", nbad,
                 c->bad_calls, n);
        report(c->name, abort_flag, &r, msg);
        return;
    }
    if (glibc) {
        snprintf(msg, sizeof msg, "glibc's own error message (\"%s\") on stderr: the bad pointer reached glibc's "
                 "allocator; %d \"hakmem: \" line(s)", glibc, n);
        report(c->name, abort_flag, &r, msg);
        return;
    }
    if (c->bad_calls == 0) {
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !survived)
            report(c->name, abort_flag, &r, "valid program did not exit 0 after printing \"survived\"");
        else if (n != 0) {
            snprintf(msg, sizeof msg, "valid program printed %d \"hakmem: \" line(s), want 0", n);
            report(c->name, abort_flag, &r, msg);
        }
        return;
    }
    int want = abort_flag ? 1 : c->bad_calls;
    if (n != want) {
        snprintf(msg, sizeof msg, "want exactly %d \"hakmem: \" line(s) on stderr (%d bad call(s)%s), got %d%s", want,
                 c->bad_calls, abort_flag ? ", abort after the first" : "", n,
                 n == 0 ? " (the misuse went unnoticed)" : "");
        report(c->name, abort_flag, &r, msg);
        return;
    }
    for (int i = 0; i < n && i < MAX_LINES; i++) {
        char line[512], addr[64];
        snprintf(line, sizeof line, "%.*s", (int)(hl[i].len < 500 ? hl[i].len : 500), hl[i].s);
        int has_word = strstr(line, c->word1) || (c->word2 && strstr(line, c->word2));
        if (!strstr(line, c->func) || !has_word) {
            snprintf(msg, sizeof msg, "diagnostic #%d \"%s\" should name \"%s\" and say \"%s\"%s%s%s", i + 1, line,
                     c->func, c->word1, c->word2 ? " or \"" : "", c->word2 ? c->word2 : "", c->word2 ? "\"" : "");
            report(c->name, abort_flag, &r, msg);
            return;
        }
        if (i >= nbad) {
            snprintf(msg, sizeof msg, "diagnostic #%d \"%s\" printed before the child announced bad call #%d", i + 1,
                     line, i + 1);
            report(c->name, abort_flag, &r, msg);
            return;
        }
        snprintf(addr, sizeof addr, "%.*s", (int)(bad[i].len - 4 < 60 ? bad[i].len - 4 : 60), bad[i].s + 4);
        if (!strstr(line, addr)) {
            snprintf(msg, sizeof msg, "diagnostic #%d \"%s\" does not name the bad pointer %s", i + 1, line, addr);
            report(c->name, abort_flag, &r, msg);
            return;
        }
    }
    if (abort_flag) {
        if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGABRT)
            report(c->name, abort_flag, &r, "want death by SIGABRT right after the diagnostic");
        else if (survived)
            report(c->name, abort_flag, &r, "printed \"survived\" although it should have aborted");
        else if (nbad != 1)
            report(c->name, abort_flag, &r, "want the abort at the first bad call");
    } else {
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
            report(c->name, abort_flag, &r, "want exit status 0 (the bad call ignored, the heap intact)");
        else if (!survived)
            report(c->name, abort_flag, &r, "did not print \"survived\"");
    }
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--case")) run_case(argv[2]);

    /* 24 children of a few ms each (the whole run takes ~0.05 s); a hanging
     * child would only be killed by its own alarm(20) (spawn_self), so the
     * parent gives up first and names the case */
    watchdog_arm(15);
    int hakmem = argc >= 2 && !strcmp(argv[1], "hakmem");
    if (!hakmem) {
        /* glibc aborts on every misuse case by design: only "valid" runs */
        check_case(&cases[0], 0);
        printf("skipped misuse cases (hakmem-specific; run with argument \"hakmem\")\n");
        return test_finish("case");
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i], 0);
        check_case(&cases[i], 1);
    }
    return test_finish("case");
}

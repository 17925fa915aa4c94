/*
 * test_dlopen.c — libhakmem.so loaded with dlopen (neither preloaded nor
 * linked) must stay out of the way.
 *
 * A program that dlopen()s libhakmem.so (a plugin host, a language runtime's
 * FFI, a test harness) already has a malloc: glibc's, or hakmem's own when the
 * program is linked with libhakmem.a.  The dlopen'ed copy cannot take over the
 * blocks that malloc handed out, so it must not hand out blocks of its own
 * either: its malloc/free/realloc/... must forward to the process's malloc, and
 * it says once, on stderr, that it has to be preloaded or linked to be used.
 * When the process's malloc IS the library (LD_PRELOAD), dlopen just returns
 * the loaded object: no message, and everything is the same allocator.
 *
 * The library comes from $HAKMEM_SO (scripts/test-c.sh exports the absolute
 * path of target/release/libhakmem.so); without it the test prints "skipped".
 * One child ("--case mix", see spawn_self in test_common.h) does:
 *   dlopen(HAKMEM_SO, RTLD_NOW | RTLD_LOCAL); dlsym of malloc, free, realloc,
 *   calloc, memalign, malloc_usable_size from the handle ("h_*");
 *   h_malloc -> free, malloc -> h_free, realloc across both ways, calloc and
 *   memalign across, then 10000 seeded random operations mixing both sets of
 *   functions with content checks; exit 0.
 * The parent checks the child's exit and its "hakmem: " stderr lines:
 *   process malloc is glibc or linked hakmem: exactly one, mentioning "preload";
 *   process malloc is HAKMEM_SO (preloaded): none.
 *
 * Usage: test_dlopen [hakmem]   ("hakmem" without LD_PRELOAD of HAKMEM_SO means
 *        the program is linked with libhakmem.a)
 */
#define TEST_NAME "test_dlopen"
#include "test_common.h"
#include <ctype.h>
#include <dlfcn.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*memalign_fn)(size_t, size_t);
typedef size_t (*usable_fn)(void *);

/* One allocator's entry points: the process's (set 0) or the dlopen'ed library's (set 1). */
typedef struct {
    const char *name;
    malloc_fn malloc;
    free_fn free;
    realloc_fn realloc;
    calloc_fn calloc;
    memalign_fn memalign;
    usable_fn usable;
} api_t;

/* Does dlsym(RTLD_DEFAULT, "malloc") lie in the object $HAKMEM_SO names? */
static int process_malloc_is(const char *so, char *where, size_t where_len)
{
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (!m || !dladdr(m, &info) || !info.dli_fname) {
        snprintf(where, where_len, "(unknown)");
        return 0;
    }
    snprintf(where, where_len, "%s", info.dli_fname[0] ? info.dli_fname : "(main program)");
    static char a[PATH_MAX], b[PATH_MAX];
    if (!info.dli_fname[0] || !realpath(info.dli_fname, a) || !realpath(so, b)) return 0;
    return strcmp(a, b) == 0;
}

/* ------------------------------------------------------------------------- */
/* child                                                                     */

static void stage(const char *what)
{
    printf("stage: %s\n", what);
    fflush(stdout);
}

static void *sym(void *h, const char *name)
{
    dlerror();
    void *f = dlsym(h, name);
    CHECK(f != NULL, "dlsym(HAKMEM_SO, \"%s\"): %s", name, dlerror());
    return f;
}

/* Allocate n bytes through a (kind 0 malloc, 1 calloc, 2 memalign 64) and fill. */
static unsigned char *alloc_with(const api_t *a, int kind, size_t n, unsigned seed)
{
    unsigned char *p;
    const char *fn = kind == 0 ? "malloc" : kind == 1 ? "calloc" : "memalign";
    if (kind == 0) p = a->malloc(n);
    else if (kind == 1) p = a->calloc(1, n);
    else p = a->memalign(64, n);
    CHECK(p != NULL, "%s %s(%zu) returned NULL", a->name, fn, n);
    CHECK(is_aligned(p, kind == 2 ? 64 : min_align(n)), "%s %s(%zu) = %p misaligned", a->name, fn, n, (void *)p);
    if (kind == 1)
        for (size_t i = 0; i < n; i++)
            CHECK(p[i] == 0, "%s calloc(1, %zu): byte %zu is %d, want 0", a->name, n, i, p[i]);
    fill(p, n, seed);
    return p;
}
static void check_block(const unsigned char *p, size_t n, unsigned seed, const char *what)
{
    size_t bad = verify(p, n, seed);
    CHECK(bad == n, "%s: block %p (%zu bytes) differs at byte %zu", what, (const void *)p, n, bad);
}

/* Random size: mostly small, some mid, a few large. */
static size_t rand_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 100);
    x >>= 8;
    if (pick < 70) return 1 + x % 1024;
    if (pick < 97) return 1024 + x % (63 * KiB);
    return 256 * KiB + x % (768 * KiB);
}

static void run_mix(void)
{
    alarm(15);
    test_who = "child";
    const char *so = getenv("HAKMEM_SO");
    CHECK(so && *so, "HAKMEM_SO not set in the child");
    stage("dlopen");
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen(%s): %s", so, dlerror());
    api_t sets[2] = {
        { "process", malloc, free, realloc, calloc, memalign, malloc_usable_size },
        { "dlopen'ed", (malloc_fn)sym(h, "malloc"), (free_fn)sym(h, "free"), (realloc_fn)sym(h, "realloc"),
          (calloc_fn)sym(h, "calloc"), (memalign_fn)sym(h, "memalign"), (usable_fn)sym(h, "malloc_usable_size") },
    };
    const api_t *P = &sets[0], *H = &sets[1];

    /* Deterministic crossings first, so a crash points at the first one that breaks. */
    static const size_t sizes[] = { 24, 200, 4000, 100 * KiB, 1 * MiB };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        char msg[96];
        snprintf(msg, sizeof msg, "h_malloc(%zu) -> free", n);
        stage(msg);
        unsigned char *p = alloc_with(H, 0, n, 1);
        check_block(p, n, 1, msg);
        P->free(p);

        snprintf(msg, sizeof msg, "malloc(%zu) -> h_free", n);
        stage(msg);
        p = alloc_with(P, 0, n, 2);
        check_block(p, n, 2, msg);
        H->free(p);

        snprintf(msg, sizeof msg, "h_malloc(%zu) -> realloc(x3) -> h_realloc(/2) -> free", n);
        stage(msg);
        p = alloc_with(H, 0, n, 3);
        p = P->realloc(p, n * 3);
        CHECK(p != NULL, "realloc(h_malloc(%zu), %zu) returned NULL", n, n * 3);
        check_block(p, n, 3, msg);
        p = H->realloc(p, n / 2);
        CHECK(p != NULL, "h_realloc(.., %zu) returned NULL", n / 2);
        check_block(p, n / 2, 3, msg);
        P->free(p);

        snprintf(msg, sizeof msg, "malloc(%zu) -> h_realloc(x3) -> realloc(/2) -> h_free", n);
        stage(msg);
        p = alloc_with(P, 0, n, 4);
        p = H->realloc(p, n * 3);
        CHECK(p != NULL, "h_realloc(malloc(%zu), %zu) returned NULL", n, n * 3);
        check_block(p, n, 4, msg);
        p = P->realloc(p, n / 2);
        CHECK(p != NULL, "realloc(.., %zu) returned NULL", n / 2);
        check_block(p, n / 2, 4, msg);
        H->free(p);

        snprintf(msg, sizeof msg, "h_calloc/h_memalign(%zu) -> free; calloc/memalign -> h_free", n);
        stage(msg);
        p = alloc_with(H, 1, n, 5);
        P->free(p);
        p = alloc_with(H, 2, n, 6);
        P->free(p);
        p = alloc_with(P, 1, n, 7);
        H->free(p);
        p = alloc_with(P, 2, n, 8);
        H->free(p);

        snprintf(msg, sizeof msg, "malloc_usable_size(h_malloc(%zu)), h_malloc_usable_size(malloc)", n);
        stage(msg);
        p = alloc_with(H, 0, n, 9);
        size_t u = P->usable(p);
        CHECK(u >= n, "malloc_usable_size(h_malloc(%zu)) = %zu", n, u);
        P->free(p);
        p = alloc_with(P, 0, n, 10);
        u = H->usable(p);
        CHECK(u >= n, "h_malloc_usable_size(malloc(%zu)) = %zu", n, u);
        H->free(p);
    }

    /* 10000 random operations over 256 slots, each picking either set. */
    stage("10000 random operations");
    enum { SLOTS = 256, OPS = 10000 };
    static unsigned char *slot[SLOTS];
    static size_t slot_n[SLOTS];
    static unsigned slot_seed[SLOTS];
    rng_t r = rng_seed(77);
    for (int op = 0; op < OPS; op++) {
        uint64_t x = rnd(&r);
        int s = (int)(x % SLOTS);
        const api_t *a = &sets[(x >> 8) & 1];
        int what = (int)((x >> 9) % 4);
        unsigned seed = (unsigned)op;
        if (!slot[s]) {
            size_t n = rand_size(&r);
            if (what == 3) {
                unsigned char *p = a->realloc(NULL, n);
                CHECK(p != NULL, "op %d: %s realloc(NULL, %zu) returned NULL", op, a->name, n);
                fill(p, n, seed);
                slot[s] = p;
            } else {
                slot[s] = alloc_with(a, what % 3, n, seed);
            }
            slot_n[s] = n;
            slot_seed[s] = seed;
            continue;
        }
        char msg[64];
        snprintf(msg, sizeof msg, "op %d (%s)", op, a->name);
        check_block(slot[s], slot_n[s], slot_seed[s], msg);
        CHECK(a->usable(slot[s]) >= slot_n[s], "op %d: %s malloc_usable_size = %zu < %zu", op, a->name,
              a->usable(slot[s]), slot_n[s]);
        if (what < 2) {
            a->free(slot[s]);
            slot[s] = NULL;
        } else {
            size_t n = rand_size(&r);
            unsigned char *p = a->realloc(slot[s], n);
            CHECK(p != NULL, "op %d: %s realloc(%zu -> %zu) returned NULL", op, a->name, slot_n[s], n);
            size_t keep = n < slot_n[s] ? n : slot_n[s];
            check_block(p, keep, slot_seed[s], msg);
            fill(p, n, seed);
            slot[s] = p;
            slot_n[s] = n;
            slot_seed[s] = seed;
        }
    }
    for (int s = 0; s < SLOTS; s++)
        if (slot[s]) {
            check_block(slot[s], slot_n[s], slot_seed[s], "final");
            sets[s & 1].free(slot[s]);
        }
    stage("done");
    printf("ok\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent                                                                    */

static int has_ci(const char *line, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        size_t k = 0;
        while (k < n && tolower((unsigned char)line[i + k]) == tolower((unsigned char)needle[k])) k++;
        if (k == n) return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--case")) run_mix();
    alarm(30);
    const char *so = getenv("HAKMEM_SO");
    if (!so || !*so) {
        printf("skipped (HAKMEM_SO not set: no library to dlopen)\n");
        return test_finish("check");
    }
    char where[PATH_MAX + 32];
    int preloaded = process_malloc_is(so, where, sizeof where);
    int linked = !preloaded && argc >= 2 && !strcmp(argv[1], "hakmem");
    const char *mode = preloaded ? "preloaded: the process malloc is HAKMEM_SO"
                       : linked  ? "linked: the process malloc is the static libhakmem.a"
                                 : "glibc: the process malloc is glibc's";
    printf("%s (malloc found in %s); dlopen(%s)\n", mode, where, so);

    static child_result_t r;
    static const char *const drop[] = { "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    static const char *const add[] = { NULL };
    char *cargv[] = { (char *)test_name, (char *)"--case", (char *)"mix", NULL };
    spawn_self(cargv, drop, add, &r);

    const char *cur = r.err, *line, *first = NULL;
    size_t len, first_len = 0;
    int nlines = 0;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "hakmem: ") && nlines++ == 0) {
            first = line;
            first_len = len;
        }
    const char *last_stage = NULL;
    size_t last_len = 0;
    cur = r.out;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "stage: ")) { last_stage = line + 7; last_len = len - 7; }
    int exited0 = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "\nok\n");
    printf("child: status 0x%x, %d \"hakmem: \" line(s)%s%.*s, last stage: %.*s\n", r.status, nlines,
           first ? ": " : "", first ? (int)first_len : 0, first ? first : "", last_stage ? (int)last_len : 6,
           last_stage ? last_stage : "(none)");
    fflush(stdout);

    if (!exited0) {
        fprintf(stderr, "FAIL %s: the child mixing the dlopen'ed library's functions with the process's did not "
                "exit 0: status 0x%x", test_name, r.status);
        if (WIFSIGNALED(r.status)) fprintf(stderr, " (signal %d)", WTERMSIG(r.status));
        fprintf(stderr, " during \"%.*s\"\n  child stderr: %s\n", last_stage ? (int)last_len : 6,
                last_stage ? last_stage : "(none)", r.nerr ? r.err : "(empty)");
        test_failures++;
    }
    if (preloaded) {
        if (nlines != 0) {
            fprintf(stderr, "FAIL %s: dlopen of the library that is already the process malloc printed %d "
                    "\"hakmem: \" line(s), want none; first: %.*s\n", test_name, nlines, (int)first_len, first);
            test_failures++;
        }
    } else if (nlines != 1) {
        fprintf(stderr, "FAIL %s: dlopen(HAKMEM_SO) into a process whose malloc is %s printed %d \"hakmem: \" "
                "line(s), want exactly one saying it must be preloaded or linked\n  child stderr: %s\n", test_name,
                linked ? "the linked hakmem" : "glibc", nlines, r.nerr ? r.err : "(empty)");
        test_failures++;
    } else if (!has_ci(first, first_len, "preload")) {
        fprintf(stderr, "FAIL %s: the \"hakmem: \" line does not mention \"preload\": %.*s\n", test_name,
                (int)first_len, first);
        test_failures++;
    }
    return test_finish("check");
}

/*
 * test_badinput.c — misuse must produce a diagnostic, not a crash (hakmem only).
 *
 * Each case runs in a child process (fork + execve of this program with
 * "--case NAME"), with its stdout and stderr captured through pipes:
 *   interior pointers (p+16 of a 64 B and of a 100 KiB block, p+4096 of a
 *   4 MiB block), wild pointers (0x1000, -4096 & ~15, an munmap'ed page),
 *   double frees of small / mid / large blocks, realloc of interior and wild
 *   pointers.
 * Expected under hakmem (see docs: "Bad input"):
 *   HAKMEM_ABORT_ON_ERROR=0: the call is ignored, the child prints "survived"
 *     and exits 0; its stderr holds exactly one line starting "hakmem: " that
 *     mentions "invalid pointer" or "double free".  After the bad call the child
 *     also checks that the heap still works (the valid block is intact, a
 *     double-freed block is not handed out twice, realloc returned NULL).
 *   HAKMEM_ABORT_ON_ERROR=1: the child dies with SIGABRT after printing the line.
 * A "valid" case (no misuse) must print no "hakmem: " line at all.
 *
 * Usage: test_badinput hakmem   run the cases (the runner passes "hakmem")
 *        test_badinput          print "skipped" (glibc aborts on these by design)
 */
#define TEST_NAME "test_badinput"
#include "test_common.h"
#include <signal.h>
#include <sys/mman.h>

/* Bad pointers go through opaque() (test_common.h), which also keeps GCC's
 * -Wfree-nonheap-object / -Wuse-after-free quiet: the misuse is deliberate. */

/* ------------------------------------------------------------------------- */
/* child side: one case                                                      */


static unsigned char *alloc_filled(size_t n)
{
    unsigned char *p = malloc(n);
    if (!p) { case_fail("malloc(%zu) failed", n); exit(1); }
    fill(p, n, 3);
    return p;
}
static void check_filled(const unsigned char *p, size_t n, const char *what)
{
    size_t bad = verify(p, n, 3);
    if (bad != n) case_fail("%s: valid block damaged at byte %zu", what, bad);
}

/* After a bad free of an interior pointer: the real block is intact and frees normally. */
static void interior_free(size_t n, size_t off)
{
    unsigned char *p = alloc_filled(n);
    free(opaque(p + off));
    check_filled(p, n, "interior free");
    free(p);
}

/* After a double free: the block must not be handed out twice. */
static void double_free(size_t n)
{
    void *p = malloc(n);
    if (!p) { case_fail("malloc(%zu) failed", n); exit(1); }
    void *alias = opaque(p); /* taken before the first free: no -Wuse-after-free */
    free(p);
    free(alias);
    enum { K = 40 };
    void *q[K];
    for (int i = 0; i < K; i++) {
        q[i] = malloc(n);
        if (!q[i]) { case_fail("malloc(%zu) after double free failed", n); exit(1); }
        memset(q[i], i, n < 4096 ? n : 4096);
        for (int j = 0; j < i; j++)
            if (q[j] == q[i]) case_fail("after double free, malloc(%zu) returned %p twice", n, q[i]);
    }
    for (int i = 0; i < K; i++) free(q[i]);
}

static void realloc_interior(size_t n, size_t off)
{
    unsigned char *p = alloc_filled(n);
    errno = 0;
    void *q = realloc(opaque(p + off), n * 2);
    if (q != NULL) case_fail("realloc(interior pointer) returned %p, want NULL", q);
    check_filled(p, n, "realloc interior");
    free(p);
}

static void run_case(const char *name)
{
    if (!strcmp(name, "valid")) {
        unsigned char *p = alloc_filled(100);
        free(p);
        p = alloc_filled(4 * MiB);
        free(p);
    } else if (!strcmp(name, "interior-small")) {
        interior_free(64, 16);
    } else if (!strcmp(name, "interior-mid")) {
        interior_free(100 * KiB, 16);
    } else if (!strcmp(name, "interior-large")) {
        interior_free(4 * MiB, 4096);
    } else if (!strcmp(name, "wild-low")) {
        free(opaque((void *)(uintptr_t)0x1000));
    } else if (!strcmp(name, "wild-high")) {
        free(opaque((void *)(uintptr_t)(-4096L & ~15L)));
    } else if (!strcmp(name, "unmapped")) {
        void *pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pg == MAP_FAILED) { case_fail("mmap"); exit(1); }
        munmap(pg, 4096);
        free(opaque(pg));
    } else if (!strcmp(name, "double-small")) {
        double_free(64);
    } else if (!strcmp(name, "double-mid")) {
        double_free(100 * KiB);
    } else if (!strcmp(name, "double-large")) {
        double_free(4 * MiB);
    } else if (!strcmp(name, "realloc-interior-small")) {
        realloc_interior(64, 16);
    } else if (!strcmp(name, "realloc-interior-large")) {
        realloc_interior(4 * MiB, 4096);
    } else if (!strcmp(name, "realloc-wild")) {
        void *q = realloc(opaque((void *)(uintptr_t)0x1000), 100);
        if (q != NULL) case_fail("realloc(0x1000) returned %p, want NULL", q);
    } else {
        case_fail("unknown case %s", name);
        exit(2);
    }
    /* the heap keeps working */
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)(i % 100) * 40 + 1);
        if (!p) { case_fail("malloc after bad call failed"); break; }
        free(p);
    }
    if (case_failed) exit(1);
    printf("survived\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

/* Runs this program with "--case NAME", HAKMEM_ABORT_ON_ERROR=abort_flag and
 * without HAKMEM_STATS / HAKMEM_VERBOSE (whose "hakmem: " lines would mix in). */
static void spawn_case(const char *name, int abort_flag, child_result_t *res)
{
    static const char *const drop[] = { "HAKMEM_ABORT_ON_ERROR=", "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    const char *const add[] = { abort_flag ? "HAKMEM_ABORT_ON_ERROR=1" : "HAKMEM_ABORT_ON_ERROR=0", NULL };
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, NULL };
    spawn_self(argv, drop, add, res);
}

/* Counts stderr lines starting "hakmem: "; *first gets the first one. */
static int hakmem_lines(const char *err, const char **first, size_t *first_len)
{
    int n = 0;
    const char *cur = err, *line;
    size_t len;
    *first = NULL;
    *first_len = 0;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "hakmem: ") && n++ == 0) {
            *first = line;
            *first_len = len;
        }
    return n;
}

static void report(const char *name, int abort_flag, const child_result_t *r, const char *what)
{
    fprintf(stderr, "FAIL %s: case %s (HAKMEM_ABORT_ON_ERROR=%d): %s; status 0x%x", test_name, name,
            abort_flag, what, r->status);
    if (WIFSIGNALED(r->status)) fprintf(stderr, " (signal %d)", WTERMSIG(r->status));
    fprintf(stderr, "\n  child stdout: %s\n  child stderr: %s\n", r->nout ? r->out : "(empty)",
            r->nerr ? r->err : "(empty)");
    test_failures++;
}

static void check_case(const char *name, int abort_flag)
{
    static child_result_t r;
    spawn_case(name, abort_flag, &r);
    const char *line;
    size_t len;
    int n = hakmem_lines(r.err, &line, &len);
    int survived = strstr(r.out, "survived") != NULL;

    if (!strcmp(name, "valid")) {
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !survived) report(name, abort_flag, &r, "valid program did not exit 0");
        else if (n != 0) report(name, abort_flag, &r, "valid program printed a \"hakmem: \" line");
        return;
    }
    if (n != 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "want exactly one \"hakmem: \" line on stderr, got %d", n);
        report(name, abort_flag, &r, msg);
        return;
    }
    char first[512];
    snprintf(first, sizeof first, "%.*s", (int)(len < 500 ? len : 500), line);
    if (!strstr(first, "invalid pointer") && !strstr(first, "double free")) {
        report(name, abort_flag, &r, "diagnostic mentions neither \"invalid pointer\" nor \"double free\"");
        return;
    }
    if (abort_flag) {
        if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGABRT) report(name, abort_flag, &r, "want death by SIGABRT");
        else if (survived) report(name, abort_flag, &r, "printed \"survived\" although it should have aborted");
    } else {
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) report(name, abort_flag, &r, "want exit status 0");
        else if (!survived) report(name, abort_flag, &r, "did not print \"survived\"");
    }
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--case")) run_case(argv[2]);
    skip_unless_hakmem(argc, argv);
    static const char *cases[] = {
        "valid", "interior-small", "interior-mid", "interior-large", "wild-low", "wild-high",
        "unmapped", "double-small", "double-mid", "double-large", "realloc-interior-small",
        "realloc-interior-large", "realloc-wild",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(cases[i], 0);
        if (strcmp(cases[i], "valid") != 0) check_case(cases[i], 1);
    }
    return test_finish("case");
}

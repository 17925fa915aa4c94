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
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *test_name = "test_badinput";

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Hide pointers from the optimiser and from GCC's -Wfree-nonheap-object /
 * -Wuse-after-free: the misuse is deliberate. */
static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* ------------------------------------------------------------------------- */
/* child side: one case                                                      */

static int child_failed;
static void child_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: child: ", test_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    child_failed = 1;
}

static unsigned char *alloc_filled(size_t n)
{
    unsigned char *p = malloc(n);
    if (!p) { child_fail("malloc(%zu) failed", n); exit(1); }
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
    return p;
}
static void check_filled(const unsigned char *p, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + 3)) {
            child_fail("%s: valid block damaged at byte %zu", what, i);
            return;
        }
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
    if (!p) { child_fail("malloc(%zu) failed", n); exit(1); }
    void *alias = opaque(p); /* taken before the first free: no -Wuse-after-free */
    free(p);
    free(alias);
    enum { K = 40 };
    void *q[K];
    for (int i = 0; i < K; i++) {
        q[i] = malloc(n);
        if (!q[i]) { child_fail("malloc(%zu) after double free failed", n); exit(1); }
        memset(q[i], i, n < 4096 ? n : 4096);
        for (int j = 0; j < i; j++)
            if (q[j] == q[i]) child_fail("after double free, malloc(%zu) returned %p twice", n, q[i]);
    }
    for (int i = 0; i < K; i++) free(q[i]);
}

static void realloc_interior(size_t n, size_t off)
{
    unsigned char *p = alloc_filled(n);
    errno = 0;
    void *q = realloc(opaque(p + off), n * 2);
    if (q != NULL) child_fail("realloc(interior pointer) returned %p, want NULL", q);
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
        if (pg == MAP_FAILED) { child_fail("mmap"); exit(1); }
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
        if (q != NULL) child_fail("realloc(0x1000) returned %p, want NULL", q);
    } else {
        child_fail("unknown case %s", name);
        exit(2);
    }
    /* the heap keeps working */
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)(i % 100) * 40 + 1);
        if (!p) { child_fail("malloc after bad call failed"); break; }
        free(p);
    }
    if (child_failed) exit(1);
    printf("survived\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

typedef struct { char out[8192], err[65536]; size_t nout, nerr; int status; } result_t;

/* Runs this program with "--case NAME", HAKMEM_ABORT_ON_ERROR=abort_flag and
 * without HAKMEM_STATS / HAKMEM_VERBOSE (whose "hakmem: " lines would mix in). */
static void spawn_case(const char *name, int abort_flag, result_t *res)
{
    size_t ne = 0;
    while (environ[ne]) ne++;
    char **env = calloc(ne + 2, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        if (!strncmp(environ[i], "HAKMEM_ABORT_ON_ERROR=", 22) || !strncmp(environ[i], "HAKMEM_STATS=", 13) ||
            !strncmp(environ[i], "HAKMEM_VERBOSE=", 15))
            continue;
        env[k++] = environ[i];
    }
    env[k++] = abort_flag ? "HAKMEM_ABORT_ON_ERROR=1" : "HAKMEM_ABORT_ON_ERROR=0";
    env[k] = NULL;

    int po[2], pe[2];
    if (pipe(po) || pipe(pe)) { perror("pipe"); exit(1); }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core); /* no core files from the SIGABRT runs */
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]); close(po[1]); close(pe[0]); close(pe[1]);
        alarm(20); /* survives execve: a hang becomes SIGALRM */
        char *argv[] = { (char *)"test_badinput", (char *)"--case", (char *)name, NULL };
        execve("/proc/self/exe", argv, env);
        _exit(127);
    }
    free(env);
    close(po[1]);
    close(pe[1]);
    res->nout = res->nerr = 0;
    struct pollfd fds[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            exit(1);
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char *buf = i ? res->err : res->out;
            size_t *len = i ? &res->nerr : &res->nout;
            size_t cap = (i ? sizeof res->err : sizeof res->out) - 1;
            char tmp[4096];
            ssize_t r = read(fds[i].fd, tmp, sizeof tmp);
            if (r <= 0) { close(fds[i].fd); fds[i].fd = -1; open_fds--; continue; }
            size_t take = (size_t)r < cap - *len ? (size_t)r : cap - *len;
            memcpy(buf + *len, tmp, take);
            *len += take;
        }
    }
    res->out[res->nout] = 0;
    res->err[res->nerr] = 0;
    while (waitpid(pid, &res->status, 0) < 0 && errno == EINTR) {}
}

/* Counts stderr lines starting "hakmem: "; *first gets the first one. */
static int hakmem_lines(const char *err, const char **first, size_t *first_len)
{
    int n = 0;
    const char *line = err;
    *first = NULL;
    *first_len = 0;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (!strncmp(line, "hakmem: ", 8)) {
            if (n++ == 0) { *first = line; *first_len = len; }
        }
        line += len + (nl ? 1 : 0);
    }
    return n;
}

static int failures;
static void report(const char *name, int abort_flag, const result_t *r, const char *what)
{
    fprintf(stderr, "FAIL %s: case %s (HAKMEM_ABORT_ON_ERROR=%d): %s; status 0x%x", test_name, name,
            abort_flag, what, r->status);
    if (WIFSIGNALED(r->status)) fprintf(stderr, " (signal %d)", WTERMSIG(r->status));
    fprintf(stderr, "\n  child stdout: %s\n  child stderr: %s\n", r->nout ? r->out : "(empty)",
            r->nerr ? r->err : "(empty)");
    failures++;
}

static void check_case(const char *name, int abort_flag)
{
    static result_t r;
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
    if (argc < 2 || strcmp(argv[1], "hakmem") != 0) {
        printf("skipped (hakmem-specific; run with argument \"hakmem\")\n");
        printf("PASS %s\n", test_name);
        return 0;
    }
    static const char *cases[] = {
        "valid", "interior-small", "interior-mid", "interior-large", "wild-low", "wild-high",
        "unmapped", "double-small", "double-mid", "double-large", "realloc-interior-small",
        "realloc-interior-large", "realloc-wild",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(cases[i], 0);
        if (strcmp(cases[i], "valid") != 0) check_case(cases[i], 1);
    }
    if (failures) {
        fprintf(stderr, "FAIL %s: %d case(s) failed\n", test_name, failures);
        return 1;
    }
    printf("PASS %s\n", test_name);
    return 0;
}

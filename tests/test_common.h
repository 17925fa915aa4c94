/* test_common.h — helpers shared by the test programs tests/test_*.c.
 *
 * Use:
 *     #define TEST_NAME "test_xyz"
 *     #include "test_common.h"     (first include: it defines _GNU_SOURCE)
 * Everything is `static inline` (or unused-tolerant), so a test takes only what it uses
 * and unused helpers draw no warning.
 *
 * Conventions every test follows (the runners grep for them):
 *   - success: the last stdout line is "PASS <test_name>" and the exit status 0
 *     (test_finish);
 *   - failure: a line "FAIL <test_name>: ..." on stderr and a non-zero exit status
 *     (fail / CHECK, or counted failures reported by test_finish).
 */
#ifndef HAKMEM_TEST_COMMON_H
#define HAKMEM_TEST_COMMON_H

#ifndef TEST_NAME
#error "define TEST_NAME (the program's name, e.g. \"test_api\") before including test_common.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* ---- reporting ------------------------------------------------------------------------ */

static const char *const test_name __attribute__((unused)) = TEST_NAME;
/* Optional role of this process ("parent", "child", ...), printed after the test name by
 * fail(); NULL prints nothing.  Tests that fork set it in each process. */
static const char *test_who __attribute__((unused));
/* Failures a test counts instead of exiting on the first one (see test_finish). */
static int test_failures __attribute__((unused));

/* Print "FAIL <test_name>: [<test_who> ]line <line>: <message>" on stderr and exit(1). */
static inline void fail(int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static inline void fail(int line, const char *fmt, ...)
{
    va_list ap;
    if (test_who)
        fprintf(stderr, "FAIL %s: %s line %d: ", test_name, test_who, line);
    else
        fprintf(stderr, "FAIL %s: line %d: ", test_name, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}
/* In a case child: report a failure on stderr ("FAIL <test>: child: ...") and go on, so
 * that one run shows every failed check; the child's exit status comes from case_failed. */
static int case_failed __attribute__((unused));
static inline void case_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static inline void case_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: child: ", test_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    case_failed = 1;
}
/* The parent's watchdog: watchdog_arm(s) (again to restart it, alarm(0) to stop it); after
 * s seconds one line "FAIL <test>: watchdog: no result after <s> s [in <context>]" and
 * _exit(1), so a hang fails the test instead of stalling the suite. watchdog_context, if
 * set, names what was running (a string that stays valid). write(2) only. */
static const char *volatile watchdog_context __attribute__((unused));
static unsigned watchdog_seconds __attribute__((unused));
static inline void watchdog_fire(int sig)
{
    char num[12];
    size_t i = sizeof num;
    unsigned v = watchdog_seconds;
    (void)sig;
    do { num[--i] = (char)('0' + v % 10); v /= 10; } while (v && i);
    const char *ctx = watchdog_context;
    const char *parts[] = { "FAIL ", test_name, ": watchdog: no result after ", NULL, " s",
                            ctx ? " in " : "", ctx ? ctx : "", "\n" };
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        const char *s = parts[k] ? parts[k] : num + i;
        size_t n = parts[k] ? strlen(s) : sizeof num - i;
        if (write(2, s, n) < 0) break;
    }
    _exit(1);
}
static inline void watchdog_arm(unsigned seconds)
{
    watchdog_seconds = seconds;
    signal(SIGALRM, watchdog_fire);
    alarm(seconds);
}
/* Remove a directory tree (the tests' scratch directories). */
static inline void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[4096];
            int n = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            if (n < 0 || (size_t)n >= sizeof sub) continue;
            struct stat st;
            if (!lstat(sub, &st) && S_ISDIR(st.st_mode)) remove_tree(sub);
            else unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}
/* CHECK(cond, printf-format, ...): fail() with the caller's line number unless cond holds. */
#define CHECK(cond, ...) do { if (!(cond)) fail(__LINE__, __VA_ARGS__); } while (0)

/* End of main: with test_failures == 0 print "PASS <test_name>" and return 0; otherwise
 * print "FAIL <test_name>: <n> <unit>(s) failed" on stderr and return 1. */
static inline int test_finish(const char *unit)
{
    if (test_failures) {
        fprintf(stderr, "FAIL %s: %d %s(s) failed\n", test_name, test_failures, unit);
        return 1;
    }
    printf("PASS %s\n", test_name);
    return 0;
}

/* For hakmem-only tests: unless argv[1] is "hakmem", print "skipped (...)" and
 * "PASS <test_name>" and exit 0 (the glibc build of the test passes by skipping). */
/* The start of a test that runs its cases in children of itself, spawned
 * with "--case NAME DIR MODE" and `child_env` set in their environment. A
 * child runs its case (`run` exits); a child that did not recognise its
 * arguments stops there, so that a wrong argument check can never make
 * children spawn children. Sets *hakmem_mode from MODE, or in the parent
 * from its first argument ("hakmem"). */
static inline void case_child_entry(int argc, char **argv, const char *child_env,
                                    void (*run)(const char *name, const char *dir), int *hakmem_mode)
{
    if (argc >= 5 && !strcmp(argv[1], "--case")) {
        *hakmem_mode = !strcmp(argv[4], "hakmem");
        run(argv[2], argv[3]);
    }
    if (getenv(child_env)) {
        fprintf(stderr, "FAIL %s: child started without \"--case NAME DIR MODE\"\n", test_name);
        exit(2);
    }
    *hakmem_mode = argc >= 2 && !strcmp(argv[1], "hakmem");
}

static inline void skip_unless_hakmem(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "hakmem") != 0) {
        printf("skipped (hakmem-specific; run with argument \"hakmem\")\n");
        exit(test_finish("check"));
    }
}

/* ---- keeping the optimiser honest ----------------------------------------------------- */

/* Hide a pointer from the optimiser, so it cannot reason about the memory behind it (GCC
 * knows calloc zeroes memory and may fold checks away) nor warn about deliberate misuse
 * (-Wfree-nonheap-object, -Wuse-after-free).  Returns p unchanged. */
static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}
/* Same for sizes, so huge constant requests are neither warned about nor folded. */
static inline size_t opaque_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

/* ---- alignment ------------------------------------------------------------------------ */

/* Minimum alignment a malloc'ed block of n bytes must have: 8 for n <= 8, else 16. */
static inline size_t min_align(size_t n) { return n <= 8 ? 8 : 16; }

/* Is p a multiple of a (a power of two)? */
static inline int is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ---- deterministic PRNG --------------------------------------------------------------- */

/* xorshift64; one state per thread.  Runs are reproducible: same seed, same sequence. */
typedef struct { uint64_t s; } rng_t;
/* Next value of r (never 0 once the state is non-zero). */
static inline uint64_t rnd(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return r->s = x;
}
/* A state derived from seed: non-zero, and stirred so nearby seeds give unrelated streams. */
static inline rng_t rng_seed(uint64_t seed)
{
    rng_t r = { seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull };
    if (!r.s) r.s = 1;
    for (int i = 0; i < 4; i++) rnd(&r);
    return r;
}

/* ---- content pattern: fill a block, verify it later ----------------------------------- */

/* Byte at offset i of a block filled with seed.  Position-dependent beyond 256 bytes, so
 * a block copied to a shifted offset or truncated is caught, and seed-dependent. */
static inline unsigned char pat(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131u + (i >> 8) * 7u + seed * 29u) ^ (seed >> 3));
}
/* Fill bytes [0, n) of p with the pattern of seed. */
static inline void fill(void *p, size_t n, unsigned seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = pat(i, seed);
}
/* First offset in [0, n) where p does not hold the pattern of seed, or n if all match. */
static inline size_t verify(const void *p, size_t n, unsigned seed)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(i, seed)) return i;
    return n;
}

/* ---- re-running this program and reading its output ----------------------------------- */

/* What spawn_self captured: stdout and stderr (NUL-terminated; output beyond the buffer is
 * read and dropped) and the waitpid status. */
typedef struct { char out[8192], err[65536]; size_t nout, nerr; int status; } child_result_t;

/* Does environment entry e start with one of the NULL-terminated prefixes? */
static inline int env_matches(const char *e, const char *const prefixes[])
{
    for (size_t i = 0; prefixes[i]; i++)
        if (!strncmp(e, prefixes[i], strlen(prefixes[i]))) return 1;
    return 0;
}

/* Run this same binary again ("/proc/self/exe": the directly linked build and an inherited
 * LD_PRELOAD both apply) with argv (NULL-terminated) and the current environment minus
 * every entry starting with one of drop[] plus the "VAR=value" entries of add[] (both
 * NULL-terminated).  The child gets no core files (RLIMIT_CORE 0: deliberate SIGABRTs) and
 * an alarm(20), which survives execve, so a hang ends as SIGALRM.  Waits for the child and
 * fills *res.  Exits 1 if pipe, fork or poll fail. */
static inline void spawn_self(char *const argv[], const char *const drop[], const char *const add[],
                              child_result_t *res)
{
    size_t ne = 0, na = 0;
    while (environ[ne]) ne++;
    while (add[na]) na++;
    char **env = calloc(ne + na + 1, sizeof *env);
    if (!env) { perror("calloc"); exit(1); }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (!env_matches(environ[i], drop)) env[k++] = environ[i];
    for (size_t i = 0; i < na; i++) env[k++] = (char *)add[i];
    env[k] = NULL;

    int po[2], pe[2];
    if (pipe(po) || pipe(pe)) { perror("pipe"); exit(1); }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]); close(po[1]); close(pe[0]); close(pe[1]);
        alarm(20); /* survives execve: a hang becomes SIGALRM */
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
            if (r < 0 && errno == EINTR) continue;
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

/* Line iteration over a NUL-terminated buffer: returns the start of the line at *cur (not
 * NUL-terminated; its length without the '\n' goes to *len) and advances *cur past it, or
 * returns NULL at the end of the buffer. */
static inline const char *next_line(const char **cur, size_t *len)
{
    const char *s = *cur;
    if (!*s) return NULL;
    const char *nl = strchr(s, '\n');
    *len = nl ? (size_t)(nl - s) : strlen(s);
    *cur = s + *len + (nl ? 1 : 0);
    return s;
}
/* Does the line (len bytes, not NUL-terminated) start with prefix? */
static inline int starts_with(const char *line, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && !strncmp(line, prefix, n);
}
/* Does the line (len bytes, not NUL-terminated) contain needle? */
static inline int line_has(const char *line, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(line + i, needle, n)) return 1;
    return 0;
}

#endif /* HAKMEM_TEST_COMMON_H */

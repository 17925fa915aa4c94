/*
 * test_stats.c — the statistics report (HAKMEM_STATS=1 / json, malloc_stats(),
 * HAKMEM_STATS_FILE) must count exactly what a program did.
 *
 * Why: the report is how users see into hakmem; a counter that drifts (a free
 * counted twice, a remote free never counted, a realloc forgotten) makes every
 * figure built on it wrong.  Reports are cumulative for the process, so each
 * check takes a report (malloc_stats()) before and after a known piece of work
 * and compares the deltas; between two reports the child only does the known
 * work and syscalls (rename, write, read, pthread_join), nothing that allocates.
 *
 * Each case runs in a child (spawn_self) with a controlled environment:
 * HAKMEM_STATS=json or 1, HAKMEM_STATS_FILE=<mkdtemp dir>/s.%p.json (the child
 * renames the file after each malloc_stats() so the next report does not
 * overwrite it), no HAKMEM_VERBOSE / HAKMEM_ABORT_ON_ERROR; the other HAKMEM_*
 * flags of the run (the flag matrix) are inherited, since counts must not depend
 * on them.
 *
 *   work-json, work-text  W1: N mallocs of each of three classes (tiny 65..80 B,
 *                 mid 2600..3000 B, mid 17000..19999 B) and of a fourth class whose
 *                 blocks another thread frees (remote frees), K large (1 MiB)
 *                 blocks allocated and freed, one more 1 MiB block (a large-cache
 *                 hit unless HAKMEM_LARGE_CACHE_MB=0), frees of a known subset.
 *                 Checked per class (allocs, frees, remote, in use, peak), totals
 *                 (allocs, frees, requested bytes, in use, peak), large tier
 *                 (allocs, frees, in use, bytes, peak, cache hits/misses), threads
 *                 (a heap created in the window has ended by the join), misuse.
 *                 W2/W3: a large block grown by realloc (600 KiB -> 4 MiB + 5000, above
 *                 the peaks so far), then freed.  W4: calloc, realloc that moves, aligned_alloc,
 *                 posix_memalign, each counted once in its class with its request.
 *                 The same work is read from the JSON report and from the text.
 *   fork          a forked grandchild's exit report goes to its own file (%p), holds
 *                 the grandchild's 7 allocations, the parent's report does not; the
 *                 file holds one report after two malloc_stats() in a row (truncated).
 *   atexit-*      a program that closes stderr in an atexit handler registered after
 *                 load (as coreutils does), and one that also reopens fd 2 on
 *                 /dev/null, still prints the exit report on the original stderr
 *                 (captured through the pipe), text and JSON.
 *   misuse        an invalid free and a double free in counting mode: misuse
 *                 invalid_pointer and double_free go up by exactly 1 each, one
 *                 "hakmem: " line each, and neither counts as a free.
 *
 * Usage: test_stats hakmem   run the cases and check the reports
 *        test_stats          (glibc) run the workloads only, to show they are sound;
 *                            the report checks are skipped.
 */
#define TEST_NAME "test_stats"
#include "test_common.h"
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef unsigned long long u64;

/* ------------------------------------------------------------------------- */
/* the workload, shared by the child (which does it) and the parent (which    */
/* computes what the report must say)                                        */

enum { NA = 300, NB = 60, NC = 12, NR = 40, K_LARGE = 3, ND = 7 };
/* Request sizes: each set stays inside one size class (a stride of 80, 3072,
 * 20480 and 512 bytes in hakmem's table; the test reads the stride back with
 * malloc_usable_size and finds the class row by that size). */
static size_t size_a(int i) { return 65 + (size_t)(i % 16); }              /* 65..80 */
static size_t size_b(int i) { return 2600 + (size_t)(i * 37 % 401); }      /* 2600..3000 */
static size_t size_c(int i) { return 17000 + (size_t)(i * 101 % 3000); }   /* 17000..19999 */
static size_t size_r(int i) { return 450 + (size_t)(i % 60); }             /* 450..509 */
#define SIZE_D ((size_t)1500)
/* Which blocks the child frees itself (the rest stay live until exit). */
static int freed_a(int i) { return i % 3 == 0; }
static int freed_b(int i) { return i < NB / 2; }
static int freed_c(int i) { return i % 2 == 1; }
#define LARGE_SZ MiB
#define GROW_FROM ((size_t)600 * KiB)
#define GROW_TO (4 * MiB + 5000) /* above K_LARGE MiB: W2 raises the peaks */
#define PAGE_ROUND(n) (((n) + 4095) & ~(size_t)4095)
/* W4 requests */
#define W4_MALLOC 72
#define W4_REALLOC 3000
#define W4_CALLOC_N 10
#define W4_CALLOC_SZ 30
#define W4_ALIGNED_AL 256
#define W4_ALIGNED_SZ 200
#define W4_PM_AL 64
#define W4_PM_SZ 100

static int hakmem_mode;

/* ------------------------------------------------------------------------- */
/* child side                                                                */

/* A child's failure before its reports are taken: one line on stderr, exit 1.
 * Uses only write(), so it may run between two reports. */
static void child_die(const char *msg)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "FAIL %s: child: %s\n", test_name, msg);
    if (write(2, buf, (size_t)n) < 0) {}
    _exit(1);
}
static void *xmalloc(size_t n)
{
    void *p = opaque(malloc(n)); /* opaque: GCC may not drop a malloc/free pair */
    if (!p) child_die("malloc failed");
    return p;
}

static char cur_path[512]; /* <dir>/s.<pid>.json: where malloc_stats() writes */
static char snap_dir[400];

/* malloc_stats() and move its file aside as <dir>/<name>.  No allocation: the
 * path is built in a stack buffer (snprintf with %s does not allocate). */
static void snap(const char *name)
{
    char to[512];
    snprintf(to, sizeof to, "%s/%s", snap_dir, name);
    malloc_stats();
    if (rename(cur_path, to) != 0 && hakmem_mode) child_die("malloc_stats() wrote no HAKMEM_STATS_FILE");
}

static void child_setup(const char *dir)
{
    snprintf(snap_dir, sizeof snap_dir, "%s", dir);
    snprintf(cur_path, sizeof cur_path, "%s/s.%d.json", dir, (int)getpid());
}

static void *remote_blocks[NR];
static int go_pipe[2];
/* Waits for the go, then frees the blocks the main thread allocated. */
static void *remote_thread(void *arg)
{
    (void)arg;
    char c;
    ssize_t r;
    do r = read(go_pipe[0], &c, 1); while (r < 0 && errno == EINTR);
    for (int i = 0; i < NR; i++) free(remote_blocks[i]);
    return NULL;
}

/* All blocks of one set have the same usable size (one class); returns it. */
static size_t set_stride(void **v, int n)
{
    size_t s = malloc_usable_size(v[0]);
    for (int i = 1; i < n && hakmem_mode; i++)
        if (malloc_usable_size(v[i]) != s) child_die("blocks of one request range got different usable sizes");
    return s;
}

static void case_work(const char *dir)
{
    static void *a[NA], *b[NB], *c[NC], *big[K_LARGE];
    child_setup(dir);
    /* The thread exists before the first report: its creation (glibc allocates
     * its TLS vector) is not part of the work. */
    pthread_t t;
    if (pipe(go_pipe) || pthread_create(&t, NULL, remote_thread, NULL)) child_die("pipe/pthread_create");

    /* ---- W1 ---- */
    snap("w0");
    for (int i = 0; i < NA; i++) a[i] = xmalloc(size_a(i));
    for (int i = 0; i < NB; i++) b[i] = xmalloc(size_b(i));
    for (int i = 0; i < NC; i++) c[i] = xmalloc(size_c(i));
    for (int i = 0; i < NR; i++) remote_blocks[i] = xmalloc(size_r(i));
    /* malloc_usable_size allocates nothing: allowed between two reports. */
    size_t sa = set_stride(a, NA), sb = set_stride(b, NB), sc = set_stride(c, NC), sr = set_stride(remote_blocks, NR);
    for (int k = 0; k < K_LARGE; k++) big[k] = xmalloc(LARGE_SZ);
    for (int k = 0; k < K_LARGE; k++) free(big[k]);
    void *again = xmalloc(LARGE_SZ); /* from the large cache unless it is off */
    free(again);
    for (int i = 0; i < NA; i++) if (freed_a(i)) free(a[i]);
    for (int i = 0; i < NB; i++) if (freed_b(i)) free(b[i]);
    for (int i = 0; i < NC; i++) if (freed_c(i)) free(c[i]);
    if (write(go_pipe[1], "g", 1) != 1) child_die("write to the pipe");
    if (pthread_join(t, NULL)) child_die("pthread_join");
    snap("w1");

    /* ---- W2: grow a large block; W3: free it ---- */
    void *g = xmalloc(GROW_FROM);
    void *g2 = opaque(realloc(g, GROW_TO));
    if (!g2) child_die("realloc of a large block failed");
    snap("w2");
    free(g2);
    snap("w3");

    /* ---- W4: the other allocation calls ---- */
    void *x = xmalloc(W4_MALLOC);
    void *x2 = opaque(realloc(x, W4_REALLOC));
    void *cz = opaque(calloc(W4_CALLOC_N, W4_CALLOC_SZ));
    void *al = opaque(aligned_alloc(W4_ALIGNED_AL, W4_ALIGNED_SZ));
    void *pm = NULL;
    if (!x2 || !cz || !al || posix_memalign(&pm, W4_PM_AL, W4_PM_SZ)) child_die("W4 allocation failed");
    size_t s_x2 = malloc_usable_size(x2), s_cz = malloc_usable_size(cz);
    size_t s_al = malloc_usable_size(al), s_pm = malloc_usable_size(pm);
    free(x2);
    free(cz);
    free(al);
    free(pm);
    snap("w4");

    /* Done with the reports: stdio is allowed now. */
    void *probe = xmalloc(W4_MALLOC);
    size_t s_x = malloc_usable_size(probe);
    free(probe);
    printf("pid %d\nsa %zu\nsb %zu\nsc %zu\nsr %zu\nsx %zu\nsx2 %zu\nscz %zu\nsal %zu\nspm %zu\n", (int)getpid(),
           sa, sb, sc, sr, s_x, s_x2, s_cz, s_al, s_pm);
    printf("done\n");
    exit(0); /* the exit report goes to <dir>/s.<pid>.json */
}

static void case_fork(const char *dir)
{
    child_setup(dir);
    snap("f0");
    pid_t gpid = fork();
    if (gpid < 0) child_die("fork");
    if (gpid == 0) {
        static void *d[ND];
        for (int i = 0; i < ND; i++) d[i] = xmalloc(SIZE_D);
        opaque(d);
        exit(0); /* its exit report: <dir>/s.<its pid>.json */
    }
    int st;
    while (waitpid(gpid, &st, 0) < 0 && errno == EINTR) {}
    snap("f1");
    /* Two reports in a row: the second must replace the first (truncation). */
    malloc_stats();
    malloc_stats();
    snap("f2");
    void *probe = xmalloc(SIZE_D);
    printf("pid %d\ngpid %d\ngstatus %d\nsd %zu\ndone\n", (int)getpid(), (int)gpid, st, malloc_usable_size(probe));
    free(probe);
    exit(0);
}

static int reopen_devnull;
static void close_stderr_at_exit(void)
{
    fflush(stdout);
    fclose(stderr); /* coreutils' close_stdout closes stderr too */
    if (reopen_devnull) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd != 2) { printf("reopen gave fd %d, not 2\n", fd); fflush(stdout); }
    }
}

static void case_atexit(int reopen)
{
    reopen_devnull = reopen;
    atexit(close_stderr_at_exit); /* registered after load: runs before hakmem's report */
    void *p = xmalloc(100);
    free(p);
    printf("pid %d\ndone\n", (int)getpid());
    fflush(stdout);
    exit(0);
}

static void case_misuse(const char *dir)
{
    child_setup(dir);
    char *p = xmalloc(64);
    void *q = xmalloc(64);
    void *alias = opaque(q); /* taken before the free: no -Wuse-after-free */
    snap("m0");
    free(opaque(p + 16)); /* invalid pointer */
    free(q);
    free(alias);          /* double free */
    snap("m1");
    size_t sq = malloc_usable_size(p);
    free(p);
    printf("sq %zu\ndone\n", sq);
    exit(0);
}

/* secure: a set-user-ID copy of this program: reports whether the loader put
 * it in secure mode, allocates, exits (and would write its report). */
static void case_secure(void)
{
    printf("secure %lu\n", getauxval(AT_SECURE));
    free(opaque(malloc(100)));
    printf("done\n");
    fflush(stdout);
    exit(0);
}

static void run_case(const char *name, const char *dir)
{
    if (!strcmp(name, "work")) case_work(dir);
    if (!strcmp(name, "fork")) case_fork(dir);
    if (!strcmp(name, "atexit-close")) case_atexit(0);
    if (!strcmp(name, "atexit-reopen")) case_atexit(1);
    if (!strcmp(name, "misuse")) case_misuse(dir);
    if (!strcmp(name, "secure")) case_secure();
    child_die("unknown case");
}

/* ------------------------------------------------------------------------- */
/* the report, parsed (text or JSON)                                         */

enum { MAXCLS = 64 };
typedef struct { int present; u64 size, allocs, frees, remote, slabs, in_use, peak; } cls_t;
typedef struct {
    long pid;
    int counting;
    u64 allocs, frees, requested, in_use, peak;
    cls_t cls[MAXCLS];
    u64 l_allocs, l_frees, l_in_use, l_bytes, l_peak, l_hits, l_misses, l_grown, l_moved;
    u64 heaps_created, heaps_live, threads_ended;
    u64 m_invalid, m_double, m_uaf, m_waf, m_size;
} report_t;

/* The row of the class whose block size is `size`; a class absent from the
 * report has all counts 0 (the report leaves out classes never used). */
static cls_t class_by_size(const report_t *r, u64 size)
{
    for (int c = 0; c < MAXCLS; c++)
        if (r->cls[c].present && r->cls[c].size == size) return r->cls[c];
    cls_t z = { 0, size, 0, 0, 0, 0, 0, 0 };
    return z;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* JSON: the number after "key": inside [obj, end). */
static int jnum(const char *obj, const char *end, const char *key, u64 *v)
{
    char pat[64];
    int n = snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = memmem(obj, (size_t)(end - obj), pat, (size_t)n);
    if (!at) return 0;
    char *e;
    errno = 0;
    *v = strtoull(at + n, &e, 10);
    return e != at + n && errno == 0;
}
/* JSON: the object following "name":{ (no nested objects in hakmem's sections). */
static int jsection(const char *s, const char *name, const char **obj, const char **end)
{
    char pat[64];
    int n = snprintf(pat, sizeof pat, "\"%s\":{", name);
    const char *at = strstr(s, pat);
    if (!at) return 0;
    *obj = at + n;
    *end = strchr(*obj, '}');
    return *end != NULL;
}

/* Parse a JSON report; on error returns 0 with a reason in why. */
static int parse_json(const char *s, report_t *r, char *why, size_t whylen)
{
    memset(r, 0, sizeof *r);
    const char *o, *e;
    u64 v;
    size_t len = strlen(s);
    if (strncmp(s, "{\"hakmem\":{", 11) != 0) { snprintf(why, whylen, "does not start with {\"hakmem\":{"); return 0; }
    if (len == 0 || s[len - 1] != '\n' || memchr(s, '\n', len - 1)) {
        snprintf(why, whylen, "not exactly one line ending in a newline (%zu bytes)", len);
        return 0;
    }
    if (!jsection(s, "hakmem", &o, &e) || !jnum(o, e, "pid", &v)) { snprintf(why, whylen, "no hakmem.pid"); return 0; }
    r->pid = (long)v;
    r->counting = memmem(o, (size_t)(e - o), "\"counting\":true", 15) != NULL;
#define NEED(sec, key, dst)                                                                          \
    do {                                                                                             \
        if (!jnum(o, e, key, &(dst))) { snprintf(why, whylen, "no %s.%s", sec, key); return 0; }   \
    } while (0)
    if (!jsection(s, "totals", &o, &e)) { snprintf(why, whylen, "no totals"); return 0; }
    NEED("totals", "allocs", r->allocs); NEED("totals", "frees", r->frees);
    NEED("totals", "requested_bytes", r->requested); NEED("totals", "in_use_bytes", r->in_use);
    NEED("totals", "peak_in_use_bytes", r->peak);
    if (!jsection(s, "large", &o, &e)) { snprintf(why, whylen, "no large"); return 0; }
    NEED("large", "allocs", r->l_allocs); NEED("large", "frees", r->l_frees); NEED("large", "in_use", r->l_in_use);
    NEED("large", "in_use_bytes", r->l_bytes); NEED("large", "peak_in_use_bytes", r->l_peak);
    NEED("large", "cache_hits", r->l_hits); NEED("large", "cache_misses", r->l_misses);
    NEED("large", "grown_in_place", r->l_grown); NEED("large", "moved", r->l_moved);
    if (!jsection(s, "threads", &o, &e)) { snprintf(why, whylen, "no threads"); return 0; }
    NEED("threads", "heaps_created", r->heaps_created); NEED("threads", "heaps_live", r->heaps_live);
    NEED("threads", "threads_ended", r->threads_ended);
    if (!jsection(s, "misuse", &o, &e)) { snprintf(why, whylen, "no misuse"); return 0; }
    NEED("misuse", "invalid_pointer", r->m_invalid); NEED("misuse", "double_free", r->m_double);
    NEED("misuse", "use_after_free", r->m_uaf); NEED("misuse", "write_after_free", r->m_waf);
    NEED("misuse", "size_mismatch", r->m_size);
    const char *cl = strstr(s, "\"classes\":[");
    const char *clend = cl ? strchr(cl, ']') : NULL;
    if (!cl || !clend) { snprintf(why, whylen, "no classes array"); return 0; }
    for (const char *p = cl; (p = memmem(p, (size_t)(clend - p), "{\"class\":", 9)) != NULL; p++) {
        o = p;
        e = strchr(p, '}');
        if (!e || e > clend) { snprintf(why, whylen, "class entry not closed"); return 0; }
        u64 c;
        NEED("classes[]", "class", c);
        if (c >= MAXCLS) { snprintf(why, whylen, "class %llu out of range", c); return 0; }
        cls_t *k = &r->cls[c];
        if (k->present) { snprintf(why, whylen, "class %llu listed twice", c); return 0; }
        k->present = 1;
        NEED("classes[]", "size", k->size); NEED("classes[]", "allocs", k->allocs);
        NEED("classes[]", "frees", k->frees); NEED("classes[]", "remote_frees", k->remote);
        NEED("classes[]", "slabs", k->slabs); NEED("classes[]", "in_use_bytes", k->in_use);
        NEED("classes[]", "peak_in_use_bytes", k->peak);
    }
#undef NEED
    return 1;
}

/* Parse a text report (lines "hakmem: ..."); on error returns 0 with a reason. */
static int parse_text(const char *s, report_t *r, char *why, size_t whylen)
{
    memset(r, 0, sizeof *r);
    int got_head = 0, got_calls = 0, got_inuse = 0, got_large = 0, got_threads = 0, got_misuse = 0;
    const char *cur = s, *l;
    size_t len;
    char line[1024];
    while ((l = next_line(&cur, &len))) {
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line - 1 ? len : sizeof line - 1), l);
        if (strncmp(line, "hakmem: ", 8) != 0) {
            snprintf(why, whylen, "a line does not start with \"hakmem: \": %.80s", line);
            return 0;
        }
        int n = 0;
        unsigned cls;
        u64 v[8];
        if (sscanf(line, "hakmem: statistics of pid %ld (%n", &r->pid, &n) == 1 && n) {
            got_head++;
        } else if (sscanf(line, "hakmem: calls: %llu allocations (%llu bytes requested), %llu frees%n", &r->allocs,
                          &r->requested, &r->frees, &n) == 3 && (size_t)n == strlen(line)) {
            got_calls++;
            r->counting = 1;
        } else if (sscanf(line, "hakmem: in use: %llu bytes (peak %llu)%n", &r->in_use, &r->peak, &n) == 2 &&
                   (size_t)n == strlen(line)) {
            got_inuse++;
        } else if (sscanf(line, "hakmem: large: %llu allocations, %llu frees, %llu in use (%llu bytes, peak %llu); "
                                "cache %llu hits, %llu misses; realloc %llu grown in place, %llu moved%n",
                          &r->l_allocs, &r->l_frees, &r->l_in_use, &r->l_bytes, &r->l_peak, &r->l_hits, &r->l_misses,
                          &r->l_grown, &r->l_moved, &n) == 9 && (size_t)n == strlen(line)) {
            got_large++;
        } else if (sscanf(line, "hakmem: threads: %llu heaps created, %llu live, %llu threads ended,%n",
                          &r->heaps_created, &r->heaps_live, &r->threads_ended, &n) == 3 && n) {
            got_threads++;
        } else if (sscanf(line, "hakmem: misuse: %llu invalid pointers, %llu double frees, %llu uses after free, "
                                "%llu writes after free, %llu size mismatches%n",
                          &r->m_invalid, &r->m_double, &r->m_uaf, &r->m_waf, &r->m_size, &n) == 5 &&
                   (size_t)n == strlen(line)) {
            got_misuse++;
        } else if (sscanf(line, "hakmem: %u %llu %llu %llu %llu %llu %llu %llu%n", &cls, &v[0], &v[1], &v[2], &v[3],
                          &v[4], &v[5], &v[6], &n) == 8 && (size_t)n == strlen(line)) {
            if (cls >= MAXCLS || r->cls[cls].present) {
                snprintf(why, whylen, "class row %u out of range or repeated", cls);
                return 0;
            }
            cls_t k = { 1, v[0], v[1], v[2], v[3], v[4], v[5], v[6] };
            r->cls[cls] = k;
        }
    }
    if (got_head != 1 || got_calls != 1 || got_inuse != 1 || got_large != 1 || got_threads != 1 || got_misuse != 1) {
        snprintf(why, whylen, "want each of the head, calls, in use, large, threads, misuse lines once; got %d %d %d %d %d %d",
                 got_head, got_calls, got_inuse, got_large, got_threads, got_misuse);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

static char top_dir[256];
static int case_no;
static const char *cur_case = "";

/* One failed check: message with the case's name; counted, not fatal. */
static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: %s: ", test_name, cur_case);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    test_failures++;
}
#define EXPECT_EQ(what, got, want)                                                                        \
    do {                                                                                                  \
        u64 g_ = (u64)(got), w_ = (u64)(want);                                                            \
        if (g_ != w_) bad("%s: got %llu, want %llu (%+lld)", what, g_, w_, (long long)(g_ - w_));          \
    } while (0)

static const char *const child_drop[] = { "HAKMEM_STATS=", "HAKMEM_STATS_FILE=", "HAKMEM_VERBOSE=",
                                          "HAKMEM_ABORT_ON_ERROR=", NULL };

/* Runs case `name` in a child with HAKMEM_STATS=<stats> (NULL: unset) and, if
 * with_file, HAKMEM_STATS_FILE=<dir>/s.%p.json; dir is a fresh directory. */
static void spawn_case(const char *name, const char *stats, int with_file, char *dir, size_t dirlen,
                       child_result_t *res)
{
    snprintf(dir, dirlen, "%s/%02d-%s", top_dir, ++case_no, name);
    if (mkdir(dir, 0700)) { perror("mkdir"); exit(1); }
    char env_stats[64], env_file[512];
    const char *add[4];
    int na = 0;
    add[na++] = "TEST_STATS_CHILD=1"; /* see main: a child never acts as the parent */
    if (stats) {
        snprintf(env_stats, sizeof env_stats, "HAKMEM_STATS=%s", stats);
        add[na++] = env_stats;
    }
    if (with_file) {
        snprintf(env_file, sizeof env_file, "HAKMEM_STATS_FILE=%s/s.%%p.json", dir);
        add[na++] = env_file;
    }
    add[na] = NULL;
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, dir,
                     (char *)(hakmem_mode ? "hakmem" : "system"), NULL };
    spawn_self(argv, child_drop, add, res);
}

/* The child exited 0 and printed "done"; otherwise reports it and returns 0. */
static int child_ok(const child_result_t *r)
{
    if (WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0 && strstr(r->out, "done\n")) return 1;
    char how[64];
    if (WIFSIGNALED(r->status))
        snprintf(how, sizeof how, "killed by signal %d%s", WTERMSIG(r->status),
                 WTERMSIG(r->status) == SIGALRM ? " (timed out)" : "");
    else
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(r->status));
    bad("child %s, want exit 0 with \"done\"\n  child stdout: %s\n  child stderr: %s", how,
        r->nout ? r->out : "(empty)", r->nerr ? r->err : "(empty)");
    return 0;
}

/* "key value" line of the child's stdout. */
static u64 out_val(const child_result_t *r, const char *key)
{
    const char *cur = r->out, *l;
    size_t len, kl = strlen(key);
    while ((l = next_line(&cur, &len)))
        if (len > kl && !strncmp(l, key, kl) && l[kl] == ' ') return strtoull(l + kl + 1, NULL, 0);
    bad("child printed no \"%s\" line", key);
    return 0;
}

/* Reads and parses <dir>/<name> as a JSON (json=1) or text report. */
static int load_report(const char *dir, const char *name, int json, report_t *r)
{
    char path[600], why[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = read_file(path, NULL);
    if (!s) { bad("report %s: cannot read (%s)", path, strerror(errno)); return 0; }
    int ok = json ? parse_json(s, r, why, sizeof why) : parse_text(s, r, why, sizeof why);
    if (!ok) bad("report %s: %s\n  content: %.600s", name, why, s);
    else if (!r->counting) bad("report %s does not say it is counting (HAKMEM_STATS was set)", name);
    free(s);
    return ok;
}

static u64 max_u64(u64 a, u64 b) { return a > b ? a : b; }

/* A set-user-ID program must not let whoever sets its environment create
 * files with its rights: HAKMEM_STATS_FILE is refused in secure mode. Root
 * only (it makes a copy of this program owned by nobody, mode 4755). */
static void check_secure(void)
{
    if (geteuid() != 0) { printf("secure: skipped (needs root to make a set-user-ID copy)\n"); return; }
    char dir[600], copy[700], cmd[4096], out[700], err[700];
    snprintf(dir, sizeof dir, "%s/%02d-secure", top_dir, ++case_no);
    /* nobody must be able to reach the directory and write in it */
    if (chmod(top_dir, 0711) || mkdir(dir, 0777) || chmod(dir, 0777)) {
        bad("secure: mkdir %s: %s", dir, strerror(errno));
        return;
    }
    snprintf(copy, sizeof copy, "%s/copy", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(err, sizeof err, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "cp /proc/%d/exe %s && chown 65534:65534 %s && chmod 4755 %s", (int)getpid(), copy, copy,
             copy);
    if (system(cmd) != 0) { printf("secure: skipped (cannot make a set-user-ID copy)\n"); return; }
    /* The copy runs as nobody: the directory is writable by it, so only the
     * refusal keeps the report file from appearing. */
    snprintf(cmd, sizeof cmd,
             "TEST_STATS_CHILD=1 HAKMEM_STATS=1 HAKMEM_STATS_FILE=%s/leak.%%p %s --case secure %s %s >%s 2>%s", dir,
             copy, dir, hakmem_mode ? "hakmem" : "system", out, err);
    int st = system(cmd);
    char *o = read_file(out, NULL), *e = read_file(err, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !o || !strstr(o, "done\n")) {
        bad("secure: the set-user-ID copy failed (status 0x%x)\n  stdout: %s\n  stderr: %s", st, o ? o : "",
            e ? e : "");
    } else if (!strstr(o, "secure 1")) {
        printf("secure: skipped (the copy did not run in secure mode: a nosuid mount?)\n");
    } else {
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (!strncmp(de->d_name, "leak.", 5)) bad("secure: %s/%s was created by a set-user-ID process", dir, de->d_name);
        if (d) closedir(d);
        /* Linked: hakmem says why it ignored the flag. Preloaded: the loader
         * ignores LD_PRELOAD in secure mode, so hakmem is not there at all. */
        const char *pre = getenv("LD_PRELOAD");
        int linked = hakmem_mode && !(pre && strstr(pre, "libhakmem"));
        if (linked && !(e && strstr(e, "hakmem: HAKMEM_STATS_FILE: ignored in a set-user-ID or set-group-ID process")))
            bad("secure: no \"HAKMEM_STATS_FILE: ignored in a set-user-ID...\" line\n  stderr: %s", e ? e : "");
    }
    free(o);
    free(e);
}

/* HAKMEM_LARGE_CACHE_MB of this run: 1 cache on (default 64 MiB, room for the
 * blocks here), 0 off, -1 some other value (only hits + misses are checked). */
static int large_cache_state(void)
{
    const char *v = getenv("HAKMEM_LARGE_CACHE_MB");
    if (!v) return 1;
    char *e;
    long n = strtol(v, &e, 10);
    if (*e || e == v) return -1;
    if (n == 0) return 0;
    return n >= 8 ? 1 : -1;
}

/* Class checks of one window: allocs, frees, remote frees, in-use bytes delta. */
static void check_class(const char *what, const report_t *r0, const report_t *r1, u64 stride, u64 allocs,
                        u64 frees, u64 remote)
{
    cls_t a = class_by_size(r0, stride), b = class_by_size(r1, stride);
    char w[128];
    snprintf(w, sizeof w, "class %llu B (%s): allocs delta", stride, what);
    EXPECT_EQ(w, b.allocs - a.allocs, allocs);
    snprintf(w, sizeof w, "class %llu B (%s): frees delta", stride, what);
    EXPECT_EQ(w, b.frees - a.frees, frees);
    snprintf(w, sizeof w, "class %llu B (%s): remote frees delta", stride, what);
    EXPECT_EQ(w, b.remote - a.remote, remote);
    snprintf(w, sizeof w, "class %llu B (%s): in-use bytes delta", stride, what);
    EXPECT_EQ(w, b.in_use - a.in_use, (allocs - frees) * stride);
    if (b.in_use > 0 && b.slabs == 0) bad("class %llu B (%s): %llu bytes in use in 0 slabs", stride, what, b.in_use);
}

/* The class's peak after a window whose highest point was `rise` bytes above
 * the in-use figure at its start: the old peak, or that highest point. */
static void check_class_peak(const char *what, const report_t *r0, const report_t *r1, u64 stride, u64 rise)
{
    cls_t a = class_by_size(r0, stride), b = class_by_size(r1, stride);
    char w[128];
    snprintf(w, sizeof w, "class %llu B (%s): peak (old peak %llu, in use at start %llu, rise %llu)", stride, what,
             a.peak, a.in_use, rise);
    EXPECT_EQ(w, b.peak, max_u64(a.peak, a.in_use + rise));
}

static void check_work(int json)
{
    static child_result_t res;
    char dir[400];
    cur_case = json ? "work (HAKMEM_STATS=json)" : "work (HAKMEM_STATS=1, text)";
    spawn_case("work", json ? "json" : "1", 1, dir, sizeof dir, &res);
    if (!child_ok(&res) || !hakmem_mode) return;
    u64 sa = out_val(&res, "sa"), sb = out_val(&res, "sb"), sc = out_val(&res, "sc"), sr = out_val(&res, "sr");
    u64 sx = out_val(&res, "sx"), sx2 = out_val(&res, "sx2"), scz = out_val(&res, "scz");
    u64 sal = out_val(&res, "sal"), spm = out_val(&res, "spm");
    long pid = (long)out_val(&res, "pid");
    if (sa == sb || sa == sc || sa == sr || sb == sc || sb == sr || sc == sr) {
        bad("the four request ranges share a class (strides %llu %llu %llu %llu)", sa, sb, sc, sr);
        return;
    }
    static report_t w[5];
    static const char *names[5] = { "w0", "w1", "w2", "w3", "w4" };
    for (int i = 0; i < 5; i++)
        if (!load_report(dir, names[i], json, &w[i])) return;
    for (int i = 0; i < 5; i++)
        if (w[i].pid != pid) bad("report %s: pid %ld, want the child's %ld", names[i], w[i].pid, pid);

    /* ---- W1 ---- */
    u64 fa = 0, fb = 0, fc = 0, req = 0;
    for (int i = 0; i < NA; i++) { fa += freed_a(i); req += size_a(i); }
    for (int i = 0; i < NB; i++) { fb += freed_b(i); req += size_b(i); }
    for (int i = 0; i < NC; i++) { fc += freed_c(i); req += size_c(i); }
    for (int i = 0; i < NR; i++) req += size_r(i);
    req += (K_LARGE + 1) * LARGE_SZ;
    const report_t *a = &w[0], *b = &w[1];
    cur_case = json ? "work W1 (json)" : "work W1 (text)";
    check_class("tiny", a, b, sa, NA, fa, 0);
    check_class("mid", a, b, sb, NB, fb, 0);
    check_class("mid 20 KiB", a, b, sc, NC, fc, 0);
    check_class("freed by another thread", a, b, sr, NR, NR, NR);
    /* Each set is allocated whole before any of it is freed. */
    check_class_peak("tiny", a, b, sa, NA * sa);
    check_class_peak("mid", a, b, sb, NB * sb);
    check_class_peak("mid 20 KiB", a, b, sc, NC * sc);
    check_class_peak("freed by another thread", a, b, sr, NR * sr);
    EXPECT_EQ("totals: allocs delta", b->allocs - a->allocs, NA + NB + NC + NR + K_LARGE + 1);
    EXPECT_EQ("totals: frees delta", b->frees - a->frees, fa + fb + fc + NR + K_LARGE + 1);
    EXPECT_EQ("totals: requested bytes delta (sum of the requests)", b->requested - a->requested, req);
    u64 small_live = (NA - fa) * sa + (NB - fb) * sb + (NC - fc) * sc;
    EXPECT_EQ("totals: in-use bytes delta", b->in_use - a->in_use, small_live);
    /* Highest point: every small block and the K large blocks live at once. */
    u64 top = NA * sa + NB * sb + NC * sc + NR * sr + K_LARGE * LARGE_SZ;
    char what[160];
    snprintf(what, sizeof what, "totals: peak (old peak %llu, in use at start %llu, rise %llu)", a->peak, a->in_use, top);
    EXPECT_EQ(what, b->peak, max_u64(a->peak, a->in_use + top));
    EXPECT_EQ("large: allocs delta", b->l_allocs - a->l_allocs, K_LARGE + 1);
    EXPECT_EQ("large: frees delta", b->l_frees - a->l_frees, K_LARGE + 1);
    EXPECT_EQ("large: blocks in use delta", b->l_in_use - a->l_in_use, 0);
    EXPECT_EQ("large: bytes in use delta", b->l_bytes - a->l_bytes, 0);
    snprintf(what, sizeof what, "large: peak (old peak %llu, in use at start %llu)", a->l_peak, a->l_bytes);
    EXPECT_EQ(what, b->l_peak, max_u64(a->l_peak, a->l_bytes + K_LARGE * LARGE_SZ));
    EXPECT_EQ("large: cache hits + misses delta (one per large allocation)",
              (b->l_hits - a->l_hits) + (b->l_misses - a->l_misses), K_LARGE + 1);
    int cache = large_cache_state();
    if (cache >= 0) {
        /* K blocks with nothing cached miss; the (K+1)th 1 MiB block reuses a
         * cached one unless the cache is off. */
        EXPECT_EQ("large: cache hits delta", b->l_hits - a->l_hits, cache ? 1 : 0);
        EXPECT_EQ("large: cache misses delta", b->l_misses - a->l_misses, cache ? K_LARGE : K_LARGE + 1);
    }
    EXPECT_EQ("large: realloc growths delta", (b->l_grown - a->l_grown) + (b->l_moved - a->l_moved), 0);
    /* The thread that freed the remote blocks has ended: a heap it made (if any)
     * is gone by the join. */
    u64 created = b->heaps_created - a->heaps_created;
    if (created > 1) bad("threads: %llu heaps created in W1, want at most 1 (one thread freed)", created);
    EXPECT_EQ("threads: threads ended delta (= heaps created by the thread that exited)",
              b->threads_ended - a->threads_ended, created);
    EXPECT_EQ("threads: live heaps delta", b->heaps_live - a->heaps_live, 0);
    EXPECT_EQ("misuse: invalid pointers delta", b->m_invalid - a->m_invalid, 0);
    EXPECT_EQ("misuse: double frees delta", b->m_double - a->m_double, 0);
    EXPECT_EQ("misuse: size mismatches delta", b->m_size - a->m_size, 0);

    /* ---- W2: malloc(600 KiB) grown to 4 MiB + 5000 by realloc, still live
     * (more than the K MiB of W1: the peaks rise) ---- */
    a = &w[1]; b = &w[2];
    cur_case = json ? "work W2, large realloc (json)" : "work W2, large realloc (text)";
    u64 grown = PAGE_ROUND(GROW_TO);
    EXPECT_EQ("large: allocs delta", b->l_allocs - a->l_allocs, 1);
    EXPECT_EQ("large: frees delta (a realloc in place or by moving pages frees nothing)", b->l_frees - a->l_frees, 0);
    EXPECT_EQ("large: blocks in use delta", b->l_in_use - a->l_in_use, 1);
    EXPECT_EQ("large: bytes in use delta (4 MiB + 5000, pages rounded)", b->l_bytes - a->l_bytes, grown);
    EXPECT_EQ("large: grown in place + moved delta", (b->l_grown - a->l_grown) + (b->l_moved - a->l_moved), 1);
    EXPECT_EQ("large: cache hits + misses delta", (b->l_hits - a->l_hits) + (b->l_misses - a->l_misses), 1);
    snprintf(what, sizeof what, "large: peak (old peak %llu, in use at start %llu)", a->l_peak, a->l_bytes);
    EXPECT_EQ(what, b->l_peak, max_u64(a->l_peak, a->l_bytes + grown));
    EXPECT_EQ("totals: allocs delta", b->allocs - a->allocs, 1);
    EXPECT_EQ("totals: frees delta", b->frees - a->frees, 0);
    EXPECT_EQ("totals: in-use bytes delta", b->in_use - a->in_use, grown);
    snprintf(what, sizeof what, "totals: peak (old peak %llu, in use at start %llu)", a->peak, a->in_use);
    EXPECT_EQ(what, b->peak, max_u64(a->peak, a->in_use + grown));
    /* Whether a realloc growth adds its new size to the requested bytes is not
     * pinned (see the report); it adds the malloc's, and at most the new size. */
    u64 dreq = b->requested - a->requested;
    if (dreq != GROW_FROM && dreq != GROW_FROM + GROW_TO)
        bad("totals: requested bytes delta %llu, want %zu (the malloc) or %zu (malloc + realloc)", dreq, GROW_FROM,
            GROW_FROM + GROW_TO);

    /* ---- W3: free it ---- */
    a = &w[2]; b = &w[3];
    cur_case = json ? "work W3, large free (json)" : "work W3, large free (text)";
    EXPECT_EQ("large: frees delta", b->l_frees - a->l_frees, 1);
    EXPECT_EQ("large: allocs delta", b->l_allocs - a->l_allocs, 0);
    EXPECT_EQ("large: blocks in use delta", b->l_in_use - a->l_in_use, (u64)-1);
    EXPECT_EQ("large: bytes in use delta", b->l_bytes - a->l_bytes, (u64)0 - grown);
    EXPECT_EQ("totals: frees delta", b->frees - a->frees, 1);
    EXPECT_EQ("totals: allocs delta", b->allocs - a->allocs, 0);
    EXPECT_EQ("totals: requested bytes delta", b->requested - a->requested, 0);
    EXPECT_EQ("totals: in-use bytes delta", b->in_use - a->in_use, (u64)0 - grown);
    EXPECT_EQ("totals: peak unchanged", b->peak, a->peak);

    /* ---- W4: malloc, realloc (moves to another class), calloc, aligned_alloc,
     * posix_memalign, then free everything ---- */
    a = &w[3]; b = &w[4];
    cur_case = json ? "work W4, other calls (json)" : "work W4, other calls (text)";
    u64 st[5] = { sx, sx2, scz, sal, spm };
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < i; j++)
            if (st[i] == st[j]) { bad("W4 blocks share a class (strides %llu %llu %llu %llu %llu)", sx, sx2, scz, sal, spm); return; }
    check_class("malloc, then realloc'ed away", a, b, sx, 1, 1, 0);
    check_class("realloc target", a, b, sx2, 1, 1, 0);
    check_class("calloc", a, b, scz, 1, 1, 0);
    check_class("aligned_alloc", a, b, sal, 1, 1, 0);
    check_class("posix_memalign", a, b, spm, 1, 1, 0);
    EXPECT_EQ("totals: allocs delta", b->allocs - a->allocs, 5);
    EXPECT_EQ("totals: frees delta", b->frees - a->frees, 5);
    EXPECT_EQ("totals: requested bytes delta (72 + 3000 + 10*30 + 200 + 100)", b->requested - a->requested,
              W4_MALLOC + W4_REALLOC + W4_CALLOC_N * W4_CALLOC_SZ + W4_ALIGNED_SZ + W4_PM_SZ);
    EXPECT_EQ("totals: in-use bytes delta", b->in_use - a->in_use, 0);

    /* ---- the exit report ---- */
    cur_case = json ? "work, exit report (json)" : "work, exit report (text)";
    char name[64];
    snprintf(name, sizeof name, "s.%ld.json", pid);
    report_t x;
    if (load_report(dir, name, json, &x)) {
        if (x.pid != pid) bad("exit report: pid %ld, want %ld", x.pid, pid);
        /* Live at exit: the blocks of W1 not freed (W2-W4 gave everything back). */
        cls_t xa = class_by_size(&x, sa), a4 = class_by_size(&w[4], sa);
        if (xa.allocs < a4.allocs + 1)
            bad("exit report: tiny class allocs %llu, want at least %llu (the W4 report's + the probe after it): "
                "not taken at exit?", xa.allocs, a4.allocs + 1);
    }
}

/* Files in dir named s.<pid>.json: their pids into pids[] (up to n). */
static int list_reports(const char *dir, long *pids, int n)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long p;
        int len = 0;
        if (sscanf(e->d_name, "s.%ld.json%n", &p, &len) == 1 && e->d_name[len] == 0 && k < n) pids[k++] = p;
    }
    closedir(d);
    return k;
}

static void check_fork(void)
{
    static child_result_t res;
    char dir[400];
    cur_case = "fork (json)";
    spawn_case("fork", "json", 1, dir, sizeof dir, &res);
    if (!child_ok(&res) || !hakmem_mode) return;
    long pid = (long)out_val(&res, "pid"), gpid = (long)out_val(&res, "gpid");
    u64 sd = out_val(&res, "sd");
    int gst = (int)out_val(&res, "gstatus");
    if (!WIFEXITED(gst) || WEXITSTATUS(gst) != 0) bad("the grandchild did not exit 0 (status 0x%x)", gst);
    report_t f0, f1, f2, g, p;
    if (!load_report(dir, "f0", 1, &f0) || !load_report(dir, "f1", 1, &f1) || !load_report(dir, "f2", 1, &f2)) return;
    long pids[8];
    int n = list_reports(dir, pids, 8);
    int have_p = 0, have_g = 0;
    for (int i = 0; i < n; i++) {
        have_p |= pids[i] == pid;
        have_g |= pids[i] == gpid;
    }
    if (n != 2 || !have_p || !have_g) {
        bad("want exactly two exit reports, s.%ld.json (child) and s.%ld.json (grandchild); found %d report file(s)%s%s",
            pid, gpid, n, have_p ? "" : ", not the child's", have_g ? "" : ", not the grandchild's");
    }
    char name[64];
    if (have_g) {
        snprintf(name, sizeof name, "s.%ld.json", gpid);
        if (load_report(dir, name, 1, &g)) {
            if (g.pid != gpid) bad("grandchild's report: pid %ld, want %ld", g.pid, gpid);
            cls_t d0 = class_by_size(&f0, sd), dg = class_by_size(&g, sd);
            EXPECT_EQ("grandchild's report: its class's allocs over the child's at the fork", dg.allocs - d0.allocs, ND);
            EXPECT_EQ("grandchild's report: in-use bytes of its class over the child's at the fork",
                      dg.in_use - d0.in_use, ND * sd);
            EXPECT_EQ("grandchild's report: total allocs over the child's at the fork", g.allocs - f0.allocs, ND);
            EXPECT_EQ("grandchild's report: total frees over the child's at the fork", g.frees - f0.frees, 0);
        }
    }
    cls_t d0 = class_by_size(&f0, sd), d1 = class_by_size(&f1, sd);
    EXPECT_EQ("child's report after the grandchild's work: allocs delta of that class", d1.allocs - d0.allocs, 0);
    EXPECT_EQ("child's report after the grandchild's work: total allocs delta", f1.allocs - f0.allocs, 0);
    if (f2.pid != pid) bad("report f2: pid %ld, want %ld", f2.pid, pid);
    if (have_p) {
        snprintf(name, sizeof name, "s.%ld.json", pid);
        if (load_report(dir, name, 1, &p) && p.pid != pid) bad("child's exit report: pid %ld, want %ld", p.pid, pid);
    }
}

static void check_atexit(int reopen, int json)
{
    static child_result_t res;
    char dir[400], label[96];
    snprintf(label, sizeof label, "atexit closes stderr%s (%s)", reopen ? ", reopens fd 2 on /dev/null" : "",
             json ? "json" : "text");
    cur_case = label;
    spawn_case(reopen ? "atexit-reopen" : "atexit-close", json ? "json" : "1", 0, dir, sizeof dir, &res);
    if (!child_ok(&res) || !hakmem_mode) return;
    long pid = (long)out_val(&res, "pid");
    if (strstr(res.out, "reopen gave fd")) bad("setup: %s", res.out);
    report_t r;
    char why[200];
    int ok = json ? parse_json(res.err, &r, why, sizeof why) : parse_text(res.err, &r, why, sizeof why);
    if (!ok) {
        bad("no complete exit report on the original stderr: %s\n  child stderr: %s", why,
            res.nerr ? res.err : "(empty)");
        return;
    }
    if (r.pid != pid) bad("exit report: pid %ld, want %ld", r.pid, pid);
}

static void check_misuse(void)
{
    static child_result_t res;
    char dir[400];
    cur_case = "misuse counted (json)";
    spawn_case("misuse", "json", 1, dir, sizeof dir, &res);
    if (!child_ok(&res) || !hakmem_mode) return;
    u64 sq = out_val(&res, "sq");
    report_t m0, m1;
    if (!load_report(dir, "m0", 1, &m0) || !load_report(dir, "m1", 1, &m1)) return;
    EXPECT_EQ("misuse: invalid pointers delta", m1.m_invalid - m0.m_invalid, 1);
    EXPECT_EQ("misuse: double frees delta", m1.m_double - m0.m_double, 1);
    EXPECT_EQ("misuse: uses after free delta", m1.m_uaf - m0.m_uaf, 0);
    EXPECT_EQ("misuse: writes after free delta", m1.m_waf - m0.m_waf, 0);
    /* Only free(q) freed anything: the refused calls are not frees. */
    cls_t c0 = class_by_size(&m0, sq), c1 = class_by_size(&m1, sq);
    EXPECT_EQ("class of the 64 B blocks: frees delta (the refused frees are not counted)", c1.frees - c0.frees, 1);
    EXPECT_EQ("class of the 64 B blocks: in-use bytes delta", c1.in_use - c0.in_use, (u64)0 - sq);
    EXPECT_EQ("totals: frees delta", m1.frees - m0.frees, 1);
    int n_invalid = 0, n_double = 0, n_other = 0;
    const char *cur = res.err, *l;
    size_t len;
    while ((l = next_line(&cur, &len))) {
        if (!starts_with(l, len, "hakmem: ")) continue;
        if (starts_with(l, len, "hakmem: free(): invalid pointer 0x")) n_invalid++;
        else if (starts_with(l, len, "hakmem: free(): double free of 0x")) n_double++;
        else n_other++;
    }
    if (n_invalid != 1 || n_double != 1 || n_other != 0)
        bad("want one \"hakmem: free(): invalid pointer\" and one \"hakmem: free(): double free of\" line on stderr, "
            "got %d, %d and %d other \"hakmem: \" line(s)\n  child stderr: %s",
            n_invalid, n_double, n_other, res.err);
}

int main(int argc, char **argv)
{
    case_child_entry(argc, argv, "TEST_STATS_CHILD", run_case, &hakmem_mode);
    watchdog_arm(30);
    const char *tmp = getenv("TMPDIR");
    snprintf(top_dir, sizeof top_dir, "%s/test_stats.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(top_dir)) { perror("mkdtemp"); return 1; }
    check_work(1);
    check_work(0);
    check_fork();
    if (hakmem_mode) {
        /* glibc has no exit report to look for, and aborts on the misuse. */
        check_atexit(0, 0);
        check_atexit(1, 0);
        check_atexit(1, 1);
        check_misuse();
        check_secure();
    } else {
        printf("glibc: workloads only; report checks skipped (run with argument \"hakmem\")\n");
    }
    if (!test_failures) remove_tree(top_dir);
    else fprintf(stderr, "(reports kept in %s)\n", top_dir);
    return test_finish("check");
}

/*
 * test_flags.c — HAKMEM_* environment flags (hakmem only).
 *
 * Each check runs this program again ("/proc/self/exe noop": the same binary,
 * so both the directly linked build and LD_PRELOAD, which is inherited, work)
 * with a clean HAKMEM_* environment plus the flag under test, and inspects its
 * stderr and exit status:
 *   - a bad value (HAKMEM_TCACHE_TINY=abc, =-1, =99999999, HAKMEM_VERBOSE=2,
 *     HAKMEM_STATS=yes, ...) gives exactly one line
 *       "hakmem: HAKMEM_X=VALUE: <reason>; using default N"
 *     with N the documented default, and exit status 0;
 *   - valid values (including the range limits) print nothing;
 *   - HAKMEM_VERBOSE=1 prints "hakmem: " lines at start naming every flag (and
 *     showing a non-default value that was set);
 *   - HAKMEM_STATS=1 prints at least one "hakmem: " line at exit;
 *   - HAKMEM_THP_MB: a large block of at least that many MiB (default 32) is
 *     advised for transparent huge pages ("hg" in its mapping's VmFlags in
 *     /proc/self/smaps), whether mapped at that size or grown past it by
 *     realloc; with 0 none is.  A block of 4 MiB up to that size is advised
 *     once freed blocks of that range were seen mostly touched: in a fresh
 *     process it is not; after 8 MiB blocks touched whole it is, after 8 MiB
 *     blocks of which one page was touched it is not, a cached block
 *     included.  Below 4 MiB none is.  Skipped where the kernel
 *     has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage).
 *
 * Usage: test_flags hakmem             run the checks (the runner passes "hakmem")
 *        test_flags noop               the child: allocate a little, exit 0
 *        test_flags thp MIB [GROW_MIB] the child: malloc MIB MiB (then realloc to
 *                                      GROW_MIB), print "advised=0|1" on stdout
 *        test_flags thp-learn whole|page  the child: malloc, touch (whole or one
 *                                      page) and free four 8 MiB blocks, then
 *                                      malloc one more and print "advised=0|1"
 *        test_flags                    print "skipped"
 */
#define TEST_NAME "test_flags"
#include "test_common.h"
#include <fcntl.h>
#include <pthread.h>

#define END_MARKER TEST_NAME ": noop end"

/* ------------------------------------------------------------------------- */
/* child: do a little allocation work so a lazily initialising allocator     */
/* reads its flags, then mark the end of main on stderr.                     */

static void *noop_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++) free(malloc((size_t)i * 100 + 1));
    return malloc(50); /* freed by main: a cross-thread free */
}

static int noop(void)
{
    void *p[64];
    for (int i = 0; i < 64; i++) p[i] = malloc((size_t)1 << (i % 23));
    for (int i = 0; i < 64; i++) free(p[i]);
    pthread_t t;
    void *r = NULL;
    if (pthread_create(&t, NULL, noop_thread, NULL) == 0) pthread_join(t, &r);
    free(r);
    fprintf(stderr, "%s\n", END_MARKER);
    return 0;
}

/* Is the mapping holding p advised for huge pages (VmFlags "hg")?  -1: not found.
 * /proc/self/smaps is read with open/read: stdio would allocate. */
static int advised_huge(const void *p)
{
    static char buf[1 << 20];
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    close(fd);
    buf[n] = 0;
    int inside = 0;
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && !strncmp(line, "VmFlags:", 8))
            return strstr(line, " hg") != NULL;
        line = next;
    }
    return -1;
}

static int thp_child(int argc, char **argv)
{
    size_t mib = strtoul(argv[2], NULL, 10), grow = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
    char *p = malloc(mib << 20);
    if (!p) return 3;
    memset(p, 1, 4096);
    if (grow) {
        p = realloc(p, grow << 20);
        if (!p) return 3;
        memset(p + (grow << 20) - 4096, 2, 4096);
    }
    printf("advised=%d\n", advised_huge(p));
    fflush(stdout);
    free(p);
    fprintf(stderr, "%s\n", END_MARKER);
    return 0;
}

static int thp_learn_child(const char *how)
{
    const size_t n = (size_t)8 << 20;
    for (int i = 0; i < 4; i++) {
        char *p = malloc(n);
        if (!p) return 3;
        /* Volatile: a memset before free would be a dead store to the compiler. */
        size_t len = strcmp(how, "whole") ? 4096 : n;
        for (size_t off = 0; off < len; off += 4096) ((volatile char *)p)[off] = 1;
        free(p);
    }
    char *p = malloc(n);
    if (!p) return 3;
    printf("advised=%d\n", advised_huge(p));
    fflush(stdout);
    free(p);
    fprintf(stderr, "%s\n", END_MARKER);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* parent                                                                    */

/* Runs "/proc/self/exe noop" with every HAKMEM_* variable removed from the
 * environment and the assignments in set[] (NULL-terminated) added. */
static void spawn_noop(const char *const *set, child_result_t *res)
{
    static const char *const drop[] = { "HAKMEM_", NULL };
    char *argv[] = { (char *)test_name, (char *)"noop", NULL };
    spawn_self(argv, drop, set, res);
}

static void report(const char *what, const char *const *set, const child_result_t *r)
{
    fprintf(stderr, "FAIL %s: env", test_name);
    for (int i = 0; set[i]; i++) fprintf(stderr, " %s", set[i]);
    fprintf(stderr, ": %s; status 0x%x\n  child stderr: %s\n", what, r->status, r->nerr ? r->err : "(empty)");
    test_failures++;
}
static int exited_ok(const child_result_t *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0 && strstr(r->err, END_MARKER);
}

/* A bad value: one diagnostic "hakmem: VAR=VALUE: ...; using default DEF". */
static void check_bad(const char *var, const char *value, const char *def)
{
    static child_result_t r;
    char assign[256], prefix[300], tail[64];
    snprintf(assign, sizeof assign, "%s=%s", var, value);
    snprintf(prefix, sizeof prefix, "hakmem: %s=%s: ", var, value);
    snprintf(tail, sizeof tail, "; using default %s", def);
    const char *set[] = { assign, NULL };
    spawn_noop(set, &r);
    if (!exited_ok(&r)) { report("want exit status 0 (and the program to run)", set, &r); return; }
    const char *cur = r.err, *line;
    size_t len;
    int hak = 0, good = 0;
    while ((line = next_line(&cur, &len))) {
        if (!starts_with(line, len, "hakmem: ")) continue;
        hak++;
        if (starts_with(line, len, prefix) && line_has(line, len, tail)) {
            /* the default must end the line, or be followed by a non-digit */
            const char *d = line + len;
            for (size_t i = 0; i + strlen(tail) <= len; i++)
                if (!memcmp(line + i, tail, strlen(tail))) d = line + i + strlen(tail);
            if (d == line + len || !(*d >= '0' && *d <= '9')) good++;
        }
    }
    if (!good) {
        char msg[512];
        snprintf(msg, sizeof msg, "no line \"%s<reason>%s\"", prefix, tail);
        report(msg, set, &r);
    } else if (hak != 1) {
        report("want exactly one \"hakmem: \" line", set, &r);
    }
}

/* Valid values: silent. */
static void check_good(const char *assign)
{
    static child_result_t r;
    const char *set[] = { assign, NULL };
    spawn_noop(set, &r);
    if (!exited_ok(&r)) { report("want exit status 0", set, &r); return; }
    if (strstr(r.err, "hakmem: ")) report("valid value printed a \"hakmem: \" line", set, &r);
}

static void check_verbose(void)
{
    static child_result_t r;
    const char *set[] = { "HAKMEM_VERBOSE=1", "HAKMEM_TCACHE_TINY=77", NULL };
    static const char *flags[] = { "HAKMEM_TCACHE_TINY", "HAKMEM_TCACHE_MID", "HAKMEM_LARGE_CACHE_MB",
                                   "HAKMEM_PURGE_KB", "HAKMEM_PURGE_DELAY_MS", "HAKMEM_STATS", "HAKMEM_VERBOSE",
                                   "HAKMEM_ABORT_ON_ERROR", "HAKMEM_CHECK", "HAKMEM_STATS_FILE",
                                   "HAKMEM_CRASH_REPORT", "HAKMEM_THP_MB" };
    spawn_noop(set, &r);
    if (!exited_ok(&r)) { report("want exit status 0", set, &r); return; }
    const char *marker = strstr(r.err, END_MARKER);
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        const char *cur = r.err, *line;
        size_t len;
        int found = 0;
        while ((line = next_line(&cur, &len)) && line < marker) {
            if (!starts_with(line, len, "hakmem: ") || !line_has(line, len, flags[f])) continue;
            /* the table shows the value we set */
            if (!strcmp(flags[f], "HAKMEM_TCACHE_TINY") && !line_has(line, len, "77")) continue;
            found = 1;
        }
        if (!found) {
            char msg[200];
            snprintf(msg, sizeof msg, "no \"hakmem: \" line naming %s%s before main ended", flags[f],
                     strcmp(flags[f], "HAKMEM_TCACHE_TINY") ? "" : " with value 77");
            report(msg, set, &r);
        }
    }
    /* every line but our marker is the allocator's, with its prefix */
    const char *cur = r.err, *line;
    size_t len;
    while ((line = next_line(&cur, &len)))
        if (len && !starts_with(line, len, "hakmem: ") && !starts_with(line, len, END_MARKER)) {
            report("a verbose line lacks the \"hakmem: \" prefix", set, &r);
            break;
        }
}

static void check_stats(void)
{
    static child_result_t r;
    const char *set[] = { "HAKMEM_STATS=1", NULL };
    spawn_noop(set, &r);
    if (!exited_ok(&r)) { report("want exit status 0", set, &r); return; }
    const char *after = strstr(r.err, END_MARKER) + strlen(END_MARKER);
    if (!strstr(after, "hakmem: ")) report("no \"hakmem: \" statistics line at exit", set, &r);
}

/* A block of `mib` MiB (realloc'ed to `grow` MiB unless 0) under HAKMEM_THP_MB=`thp`
 * (NULL: unset) is advised for huge pages or not, as `want` says. */
static void check_thp(const char *thp, const char *mib, const char *grow, int want)
{
    static child_result_t r;
    char assign[64];
    snprintf(assign, sizeof assign, "HAKMEM_THP_MB=%s", thp ? thp : "");
    const char *set[] = { thp ? assign : NULL, NULL };
    char *argv[] = { (char *)test_name, (char *)"thp", (char *)mib, (char *)grow, NULL };
    static const char *const drop[] = { "HAKMEM_", NULL };
    spawn_self(argv, drop, set, &r);
    char what[160], line[32];
    snprintf(line, sizeof line, "advised=%d", want);
    snprintf(what, sizeof what, "a %s MiB block%s%s%s: want \"%s\" on stdout, got \"%.40s\"", mib,
             grow ? " realloc'ed to " : "", grow ? grow : "", grow ? " MiB" : "", line, r.out);
    if (!exited_ok(&r) || !strstr(r.out, line)) report(what, set, &r);
}

/* thp-learn child under HAKMEM_THP_MB=`thp` (NULL: unset): advised or not as `want`. */
static void check_thp_learn(const char *thp, const char *how, int want)
{
    static child_result_t r;
    char assign[64];
    snprintf(assign, sizeof assign, "HAKMEM_THP_MB=%s", thp ? thp : "");
    const char *set[] = { thp ? assign : NULL, NULL };
    char *argv[] = { (char *)test_name, (char *)"thp-learn", (char *)how, NULL };
    static const char *const drop[] = { "HAKMEM_", NULL };
    spawn_self(argv, drop, set, &r);
    char what[160], line[32];
    snprintf(line, sizeof line, "advised=%d", want);
    snprintf(what, sizeof what, "an 8 MiB block after four touched %s: want \"%s\" on stdout, got \"%.40s\"",
             !strcmp(how, "whole") ? "whole" : "on one page", line, r.out);
    if (!exited_ok(&r) || !strstr(r.out, line)) report(what, set, &r);
}

static void check_thp_all(void)
{
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0) {
        printf("%s: no transparent huge pages in this kernel: HAKMEM_THP_MB checks skipped\n", test_name);
        return;
    }
    check_thp(NULL, "40", NULL, 1);   /* default 32 MiB: at or above */
    check_thp(NULL, "32", NULL, 1);
    check_thp(NULL, "8", NULL, 0);    /* below, nothing learnt yet */
    check_thp(NULL, "2", NULL, 0);    /* below 4 MiB */
    check_thp(NULL, "2", "40", 1);    /* grown past it */
    check_thp("0", "40", NULL, 0);    /* never */
    check_thp("0", "2", "40", 0);
    check_thp("4", "8", NULL, 1);     /* a lower threshold */
    check_thp("64", "40", NULL, 0);   /* a higher one: learning up to it */
    check_thp_learn(NULL, "whole", 1); /* learning: blocks touched whole */
    check_thp_learn(NULL, "page", 0);  /* a page of each */
    check_thp_learn("0", "whole", 0);
    check_thp_learn("8", "page", 1);   /* at the threshold: always */
    check_thp_learn("64", "page", 0);  /* learning up to a higher one */
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "noop")) return noop();
    if (argc >= 3 && !strcmp(argv[1], "thp")) return thp_child(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "thp-learn")) return thp_learn_child(argv[2]);
    skip_unless_hakmem(argc, argv);
    /* bad values and the default each falls back to (docs: Flags) */
    check_bad("HAKMEM_TCACHE_TINY", "abc", "128");
    check_bad("HAKMEM_TCACHE_TINY", "-1", "128");
    check_bad("HAKMEM_TCACHE_TINY", "99999999", "128");
    check_bad("HAKMEM_TCACHE_TINY", "65536", "128");
    check_bad("HAKMEM_TCACHE_TINY", "12abc", "128");
    check_bad("HAKMEM_TCACHE_MID", "many", "64");
    check_bad("HAKMEM_TCACHE_MID", "65536", "64");
    check_bad("HAKMEM_LARGE_CACHE_MB", "65537", "64");
    check_bad("HAKMEM_LARGE_CACHE_MB", "1e3", "64");
    check_bad("HAKMEM_PURGE_KB", "-5", "32768");
    check_bad("HAKMEM_PURGE_KB", "1048577", "32768");
    check_bad("HAKMEM_PURGE_DELAY_MS", "10ms", "100");
    check_bad("HAKMEM_PURGE_DELAY_MS", "60001", "100");
    check_bad("HAKMEM_VERBOSE", "2", "0");
    check_bad("HAKMEM_STATS", "yes", "0");
    check_bad("HAKMEM_STATS", "2", "0");
    check_bad("HAKMEM_STATS", "JSON", "0");
    check_bad("HAKMEM_ABORT_ON_ERROR", "on", "0");
    check_bad("HAKMEM_THP_MB", "2M", "32");
    check_bad("HAKMEM_THP_MB", "1048577", "32");

    check_good("HAKMEM_TCACHE_TINY=0");
    check_good("HAKMEM_TCACHE_TINY=65535");
    check_good("HAKMEM_TCACHE_MID=0");
    check_good("HAKMEM_TCACHE_MID=65535");
    check_good("HAKMEM_LARGE_CACHE_MB=0");
    check_good("HAKMEM_LARGE_CACHE_MB=65536");
    check_good("HAKMEM_PURGE_KB=0");
    check_good("HAKMEM_PURGE_KB=1048576");
    check_good("HAKMEM_PURGE_DELAY_MS=0");
    check_good("HAKMEM_PURGE_DELAY_MS=60000");
    check_good("HAKMEM_VERBOSE=0");
    check_good("HAKMEM_STATS=0");
    check_good("HAKMEM_STATS=json");
    check_good("HAKMEM_ABORT_ON_ERROR=1");
    check_good("HAKMEM_THP_MB=0");
    check_good("HAKMEM_THP_MB=1048576");

    check_verbose();
    check_stats();
    check_thp_all();

    return test_finish("check");
}

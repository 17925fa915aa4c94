/*
 * test_fork_edge.c — fork() in the places where an allocator's fork handling breaks:
 * malloc inside other pthread_atfork handlers, fork from a signal handler that
 * interrupted malloc, MADV_DONTFORK memory handed out again, fork racing a thread's
 * first malloc.
 *
 * Each case runs in a child (this program re-executed with "--case NAME [ARG]", see
 * spawn_self in tests/test_common.h), so a crash is observed, not fatal.  The case child
 * makes itself a process-group leader and arms an 8 s alarm (a passing case takes well
 * under 1 s); on expiry it prints "watchdog", SIGTERMs its whole group (forked children
 * stuck in a deadlock, signal senders) and dies of SIGALRM, which the parent reports as
 * "hung (SIGALRM)".
 *
 *   atfork-early     lib_atfork_early.so (tests/lib_atfork_early.c, linked below) registers
 *                    pthread_atfork handlers that malloc/free 24 B, 5000 B and 300 KiB,
 *                    before hakmem registers its own (its constructor runs first, preloaded
 *                    or linked); so its prepare handler runs after hakmem's and its parent /
 *                    child handlers before hakmem's.  With 2 threads churning malloc/free,
 *                    the main thread forks 50 times; each child mallocs/frees and checks the
 *                    handler counters; the parent checks status and counters.
 *                    An allocator that holds its locks across fork deadlocks here.
 *   sigfork-single   glibc's tst-mallocfork2: a SIGUSR1 handler forks (the child _exits,
 *                    the parent waits); 3 sender PROCESSES send SIGUSR1 in a loop while the
 *                    (single-threaded) process does random malloc/free of 0..70000 B (and
 *                    now and then 300 KiB .. 1 MiB) over 1000 slots and forks now and then
 *                    itself.  The handler's fork must not wait for a lock that the malloc it
 *                    interrupted holds.  POSIX allows fork in a signal handler (it was
 *                    async-signal-safe up to POSIX.1-2017) and glibc passes this.
 *   sigfork-threads  the same with one more thread churning malloc/free, the signals all
 *                    aimed at the main thread (hakmem only: glibc deadlocks here, its fork
 *                    handler waits for the arena lock the interrupted malloc holds).
 *   dontfork-reuse   malloc(N), madvise(MADV_DONTFORK) over its pages, free; malloc(N)
 *                    again (it may get the same mapping back), fill, fork: the child must
 *                    see the block (a reused DONTFORK mapping is absent in the child:
 *                    SIGSEGV).  N = 300 KiB, 1 MiB, 8 MiB, 20 MiB, each in a fresh process
 *                    (glibc's mmap threshold moves with frees); and "dontfork-realloc":
 *                    blocks grown by realloc out of a DONTFORK'd block, freed, and allocated
 *                    again.
 *   fork-config      20 fresh processes in which a thread does its very first malloc at the
 *                    moment the main thread forks; the child mallocs/frees, starts a thread
 *                    that allocates (a new heap) and exits 0.
 *
 * Usage: test_fork_edge [hakmem]   ("hakmem" adds the hakmem-only case sigfork-threads)
 *        test_fork_edge --case NAME [ARG]   (one case, used internally)
 */
// link: lib_atfork_early
#define TEST_NAME "test_fork_edge"
#include "test_common.h"
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>

/* From lib_atfork_early.so. */
extern int atfork_early_active;
extern int atfork_early_prepare_calls;
extern int atfork_early_parent_calls;
extern int atfork_early_child_calls;
extern int atfork_early_errors;
extern int atfork_early_registered;

enum { CASE_WATCHDOG_S = 8, SUBCASE_WATCHDOG_S = 3 };

/* ------------------------------------------------------------------------- */
/* case-child plumbing                                                       */

static const char *case_name = "?";

static void put(const char *s)
{
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

/* Watchdog of a case child (installed with SA_RESETHAND | SA_NODEFER): say so, kill
 * every process of the case's group but this one, then die of SIGALRM. */
static void on_watchdog(int sig)
{
    put("FAIL " TEST_NAME ": case ");
    put(case_name);
    put(": watchdog expired (deadlock?)\n");
    if (getpgrp() == getpid()) { /* never the runner's group */
        signal(SIGTERM, SIG_IGN);
        kill(0, SIGTERM);
    }
    raise(sig); /* default action now: terminate */
}

static void case_setup(const char *name, unsigned watchdog_s)
{
    case_name = name;
    test_who = name;
    setpgid(0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_watchdog;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigaction(SIGALRM, &sa, NULL);
    alarm(watchdog_s);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "exited N" / "killed by signal S (name)" / "hung (SIGALRM)". */
static void describe_status(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        snprintf(buf, n, "hung (SIGALRM)");
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "status 0x%x", st);
}

static int wait_status(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) fail(__LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
    return st;
}

/* Check that a forked child exited 0. */
#define CHECK_CHILD_OK(st, ...)                                                      \
    do {                                                                             \
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {                              \
            char how_[96];                                                           \
            describe_status(st, how_, sizeof how_);                                  \
            fprintf(stderr, "FAIL %s: %s line %d: forked child %s: ", test_name,     \
                    case_name, __LINE__, how_);                                      \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* In a forked child: print and _exit(1) (no atexit handlers, no flushing of the parent's
 * stdio buffers). */
static void child_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void child_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: %s: forked child: ", test_name, case_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

/* A little malloc/free in a forked child: tiny, mid and large blocks, written and checked. */
static void child_alloc_some(unsigned seed)
{
    static const size_t sizes[] = { 1, 24, 200, 1000, 5000, 40000, 100000, 300 * KiB, 2 * MiB };
    void *b[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        b[i] = malloc(sizes[i]);
        if (!b[i]) child_fail("malloc(%zu) failed", sizes[i]);
        fill(b[i], sizes[i] < 4096 ? sizes[i] : 4096, seed + (unsigned)i);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i] < 4096 ? sizes[i] : 4096;
        size_t bad = verify(b[i], n, seed + (unsigned)i);
        if (bad != n) child_fail("block of %zu B damaged at byte %zu", sizes[i], bad);
        free(b[i]);
    }
}

/* ------------------------------------------------------------------------- */
/* churn threads                                                             */

static atomic_int stop_churn;
static atomic_long churn_ops;
static atomic_int churn_started;

/* Mostly 16 B .. 64 KiB, 1 in 64 large (300 KiB .. 1 MiB): every allocator path and its
 * locks (large blocks take the large-block structures every time). */
static size_t churn_size(rng_t *r)
{
    uint64_t x = rnd(r);
    if (x % 64 == 0) return 300 * KiB + (x >> 8) % (724 * KiB);
    if (x % 4 == 0) return 1024 + (x >> 8) % (63 * KiB);
    return 16 + (x >> 8) % 1009;
}

static void *churn_thread(void *arg)
{
    rng_t r = rng_seed(1000 + (uint64_t)(uintptr_t)arg);
    enum { SET = 128 };
    void *set[SET] = { 0 };
    long ops = 0;
    atomic_fetch_add(&churn_started, 1);
    while (!atomic_load_explicit(&stop_churn, memory_order_relaxed)) {
        int i = (int)(rnd(&r) % SET);
        free(set[i]);
        size_t n = churn_size(&r);
        set[i] = malloc(n);
        CHECK(set[i] != NULL, "churn: malloc(%zu) failed", n);
        ((unsigned char *)set[i])[0] = (unsigned char)i;
        ((unsigned char *)set[i])[n - 1] = (unsigned char)i;
        ops++;
    }
    for (int i = 0; i < SET; i++) free(set[i]);
    atomic_fetch_add(&churn_ops, ops);
    return NULL;
}

static void start_churn(pthread_t *t, int n)
{
    for (int i = 0; i < n; i++)
        CHECK(pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)i) == 0, "pthread_create");
    while (atomic_load(&churn_started) < n) sched_yield();
}

static void stop_churn_threads(pthread_t *t, int n)
{
    atomic_store(&stop_churn, 1);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

/* ------------------------------------------------------------------------- */
/* atfork-early                                                              */

static void case_atfork_early(void)
{
    enum { WORKERS = 2, FORKS = 50 };
    CHECK(atfork_early_registered == 1, "lib_atfork_early did not register its handlers");
    pthread_t w[WORKERS];
    start_churn(w, WORKERS);
    atfork_early_active = 1;
    for (int i = 0; i < FORKS; i++) {
        usleep(1000); /* let the workers run (and take locks) again */
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork #%d: %s", i, strerror(errno));
        if (pid == 0) {
            /* counters: prepare ran i+1 times in the parent before this fork, the parent
             * handler i times (not for this fork), the child handler once (only here) */
            if (atfork_early_child_calls != 1 || atfork_early_prepare_calls != i + 1 ||
                atfork_early_parent_calls != i)
                child_fail("fork #%d: handler calls prepare %d parent %d child %d, want %d %d 1", i,
                           atfork_early_prepare_calls, atfork_early_parent_calls,
                           atfork_early_child_calls, i + 1, i);
            if (atfork_early_errors)
                child_fail("fork #%d: %d handler blocks were NULL or damaged", i, atfork_early_errors);
            child_alloc_some((unsigned)i);
            _exit(0);
        }
        int st = wait_status(pid);
        CHECK_CHILD_OK(st, "fork #%d", i);
        CHECK(atfork_early_prepare_calls == i + 1 && atfork_early_parent_calls == i + 1 &&
                  atfork_early_child_calls == 0,
              "after fork #%d: handler calls prepare %d parent %d child %d, want %d %d 0", i,
              atfork_early_prepare_calls, atfork_early_parent_calls, atfork_early_child_calls, i + 1,
              i + 1);
        CHECK(atfork_early_errors == 0, "after fork #%d: %d handler blocks were NULL or damaged", i,
              atfork_early_errors);
    }
    atfork_early_active = 0;
    stop_churn_threads(w, WORKERS);
    printf("info: %d forks, worker ops %ld\n", FORKS, atomic_load(&churn_ops));
}

/* ------------------------------------------------------------------------- */
/* sigfork-single / sigfork-threads                                          */

static volatile sig_atomic_t sig_handled, sig_fork_failed, sig_bad_children, sig_bad_status;

/* SIGUSR1: fork; the child exits at once; the parent waits for it.  Only async-signal-safe
 * calls (fork, _exit, waitpid). */
static void on_usr1(int sig)
{
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0) {
        sig_fork_failed++;
    } else {
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            sig_bad_children++;
            sig_bad_status = st;
        }
    }
    sig_handled++;
    errno = saved;
}

/* A process that sends SIGUSR1 to target, pausing a random 0 .. max_pause_us between
 * signals, until target is gone (or it is killed).  Spaced, because a signal that arrives
 * while the handler runs is only delivered after it, at no random point of malloc, and a
 * flood of them starves the main loop (each handled signal costs a fork and a wait). */
static pid_t start_sender(pid_t target, unsigned max_pause_us, uint64_t seed)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork of a sender: %s", strerror(errno));
    if (pid) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    rng_t r = rng_seed(seed);
    /* never signal another process (we may run as root): stop once target is not our parent */
    while (getppid() == target) {
        if (kill(target, SIGUSR1) != 0) break;
        usleep((useconds_t)(rnd(&r) % (max_pause_us + 1)));
    }
    _exit(0);
}

static void case_sigfork(int threads)
{
    enum { SLOTS = 1000, SLOT_OPS = 64, LARGE_PAIRS = 1024, SENDERS = 3, SENDER_PAUSE_US = 3000 };
    const double duration = 0.6; /* seconds of malloc/free under signals */
    pid_t self = getpid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    /* SIGUSR1 blocked while the churn thread starts (it inherits the mask, so every signal
     * interrupts the main thread) and while the senders are forked: the loop below is the
     * test */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    pthread_t t[1];
    if (threads) start_churn(t, 1);
    pid_t senders[SENDERS];
    for (int k = 0; k < SENDERS; k++) senders[k] = start_sender(self, SENDER_PAUSE_US, 300 + (uint64_t)k);
    sigprocmask(SIG_SETMASK, &old, NULL);

    static void *slot[SLOTS];
    static size_t slot_n[SLOTS];
    rng_t r = rng_seed(threads ? 77 : 55);
    long iters = 0, pairs = 0, rounds = 0, own_forks = 0;
    double t0 = now_s();
    while (now_s() - t0 < duration) {
        /* random malloc/free over the slots: 0 .. 70000 B, 1 in 128 large */
        for (int k = 0; k < SLOT_OPS; k++, iters++) {
            int i = (int)(rnd(&r) % SLOTS);
            if (slot[i]) {
                unsigned char *b = slot[i];
                size_t n = slot_n[i];
                CHECK(b[0] == (unsigned char)i && b[n - 1] == (unsigned char)i,
                      "slot %d (%zu B) damaged", i, n);
                free(b);
                slot[i] = NULL;
            }
            uint64_t x = rnd(&r);
            size_t n = x % 128 == 0 ? 300 * KiB + (x >> 8) % (724 * KiB) : (size_t)((x >> 8) % 70001);
            unsigned char *b = malloc(n);
            CHECK(b != NULL || n == 0, "malloc(%zu) failed", n);
            if (b && n) {
                b[0] = (unsigned char)i;
                b[n - 1] = (unsigned char)i;
                slot[i] = b;
                slot_n[i] = n;
            } else {
                free(b);
            }
        }
        /* a burst of large malloc/free pairs: most of their time is spent in the
         * allocator's shared large-block structures (a lock in the baseline), so a signal
         * lands there often; with only the slot loop above a hang took seconds */
        for (int k = 0; k < LARGE_PAIRS; k++, pairs++) {
            void *p = malloc(opaque_size(400 * KiB));
            CHECK(p != NULL, "malloc(400 KiB) failed");
            free(opaque(p));
        }
        /* now and then fork ourselves too -- single-threaded only: in a multi-threaded
         * process glibc's fork holds its own atfork lock while the handlers run, and a
         * signal handler that forks inside that window deadlocks in glibc itself, whatever
         * the allocator */
        if (++rounds % 8 == 0 && !threads) {
            pid_t pid = fork();
            CHECK(pid >= 0, "fork: %s", strerror(errno));
            if (pid == 0) _exit(0);
            int st = wait_status(pid);
            CHECK_CHILD_OK(st, "own fork after %ld rounds", rounds);
            own_forks++;
        }
    }
    signal(SIGUSR1, SIG_IGN);
    for (int k = 0; k < SENDERS; k++) kill(senders[k], SIGKILL);
    for (int k = 0; k < SENDERS; k++) wait_status(senders[k]);
    if (threads) stop_churn_threads(t, 1);
    for (int i = 0; i < SLOTS; i++) free(slot[i]);

    CHECK(sig_fork_failed == 0, "fork in the signal handler failed %d times", (int)sig_fork_failed);
    if (sig_bad_children) {
        char how[96];
        describe_status(sig_bad_status, how, sizeof how);
        fail(__LINE__, "%d children forked in the signal handler did not exit 0 (last: %s)",
             (int)sig_bad_children, how);
    }
    /* with senders running for the whole loop, no signal at all means nothing was tested */
    CHECK(sig_handled > 0, "no SIGUSR1 arrived in %.1f s", duration);
    printf("info: %ld slot malloc/free, %ld large pairs, %d signals handled (each a fork), %ld own forks%s\n",
           iters, pairs, (int)sig_handled, own_forks, threads ? ", 1 churn thread" : "");
}

/* ------------------------------------------------------------------------- */
/* dontfork-reuse / dontfork-realloc                                         */

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* MADV_DONTFORK over the whole pages inside [p, p+n). */
static void dontfork(void *p, size_t n)
{
    size_t pg = page_size();
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    CHECK(e > a, "block %p of %zu B holds no whole page", p, n);
    CHECK(madvise((void *)a, e - a, MADV_DONTFORK) == 0, "madvise(%p, %zu, MADV_DONTFORK): %s", (void *)a,
          (size_t)(e - a), strerror(errno));
}

/* Fork; the child reads every page of the block (which must hold byte val), writes the
 * first and last byte and reads them back.  A block whose memory is not inherited (a
 * DONTFORK mapping) makes the child die of SIGSEGV. */
static void fork_and_touch(unsigned char *blk, size_t n, unsigned char val, const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        volatile unsigned char *q = blk;
        size_t pg = page_size();
        for (size_t off = 0; off < n; off += pg)
            if (q[off] != val) child_fail("%s: byte %zu is %u, want %u", what, off, q[off], val);
        if (q[n - 1] != val) child_fail("%s: last byte is %u, want %u", what, q[n - 1], val);
        q[0] = 0xA5;
        q[n - 1] = 0x5A;
        if (q[0] != 0xA5 || q[n - 1] != 0x5A) child_fail("%s: write not read back", what);
        _exit(0);
    }
    int st = wait_status(pid);
    CHECK_CHILD_OK(st, "%s (SIGSEGV: the block is not inherited, i.e. memory madvise'd MADV_DONTFORK "
                       "by its previous owner was handed out again)", what);
    CHECK(blk[0] == val && blk[n - 1] == val, "%s: the parent's block changed in the child", what);
}

static void case_dontfork_reuse(size_t n)
{
    unsigned char *p = malloc(n);
    CHECK(p != NULL, "malloc(%zu) failed", n);
    memset(p, 7, n);
    dontfork(p, n);
    free(p);
    unsigned char *q = malloc(n);
    CHECK(q != NULL, "malloc(%zu) failed", n);
    int same = q == p; /* only compared, never dereferenced */
    memset(q, 1, n);
    printf("info: %zu B: the second malloc returned %s block\n", n, same ? "the same" : "a different");
    char what[128];
    snprintf(what, sizeof what, "malloc(%zu) after free of a DONTFORK'd block (%s block)", n,
             same ? "the same" : "a different");
    fork_and_touch(q, n, 1, what);
    free(q);
}

/* A DONTFORK'd block grown by realloc (twice), freed; then fresh blocks of the three sizes
 * involved: none may be DONTFORK memory. */
static void case_dontfork_realloc(void)
{
    size_t n0 = 300 * KiB, n1 = 1 * MiB, n2 = 8 * MiB;
    unsigned char *p = malloc(n0);
    CHECK(p != NULL, "malloc(%zu) failed", n0);
    memset(p, 3, n0);
    dontfork(p, n0);
    unsigned char *p1 = realloc(p, n1);
    CHECK(p1 != NULL, "realloc(%zu) failed", n1);
    CHECK(p1[0] == 3 && p1[n0 - 1] == 3, "realloc lost the content");
    /* the user's own block may legitimately stay DONTFORK; mark what was added too */
    dontfork(p1, n1);
    unsigned char *p2 = realloc(p1, n2);
    CHECK(p2 != NULL, "realloc(%zu) failed", n2);
    CHECK(p2[0] == 3 && p2[n0 - 1] == 3, "realloc lost the content");
    dontfork(p2, n2);
    free(p2);

    unsigned char *b[3];
    size_t len[3] = { n0, n1, n2 };
    unsigned char val[3] = { 11, 12, 13 };
    for (int k = 0; k < 3; k++) {
        b[k] = malloc(len[k]);
        CHECK(b[k] != NULL, "malloc(%zu) failed", len[k]);
        memset(b[k], val[k], len[k]);
    }
    /* one fork per block, so a failure names the size */
    for (int k = 0; k < 3; k++) {
        char what[160];
        snprintf(what, sizeof what,
                 "malloc(%zu) after a DONTFORK'd block grew by realloc 300 KiB -> 1 MiB -> 8 MiB and was freed",
                 len[k]);
        fork_and_touch(b[k], len[k], val[k], what);
    }
    for (int k = 0; k < 3; k++) free(b[k]);
}

/* ------------------------------------------------------------------------- */
/* fork-config                                                               */

static atomic_int race_go;

/* The thread's first malloc happens right when the main thread forks. */
static void *first_malloc_thread(void *arg)
{
    while (!atomic_load_explicit(&race_go, memory_order_acquire)) {}
    static const size_t sizes[] = { 24, 5000, 300 * KiB };
    for (int i = 0; i < 3; i++) {
        void *p = malloc(sizes[i]);
        CHECK(p != NULL, "malloc(%zu) failed", sizes[i]);
        memset(p, 1, sizes[i]);
        free(p);
    }
    return arg;
}

static void *child_thread(void *arg)
{
    child_alloc_some(99);
    return malloc(48); /* freed by the child's main thread */
}

/* One fresh process: race a thread's first malloc against fork. */
static void case_fork_config_one(void)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, first_malloc_thread, NULL) == 0, "pthread_create");
    usleep(200); /* let the thread reach its spin loop */
    fflush(NULL);
    atomic_store_explicit(&race_go, 1, memory_order_release);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_alloc_some(5);
        pthread_t ct;
        if (pthread_create(&ct, NULL, child_thread, NULL) != 0) child_fail("pthread_create in the child");
        void *b = NULL;
        pthread_join(ct, &b);
        if (!b) child_fail("malloc in the child's thread failed");
        free(b);
        _exit(0);
    }
    int st = wait_status(pid);
    CHECK_CHILD_OK(st, "forked while a thread did its first malloc");
    pthread_join(t, NULL);
}

static void spawn_case(const char *name, const char *arg, child_result_t *res);

static void case_fork_config(void)
{
    enum { RUNS = 20 };
    static child_result_t r;
    for (int i = 0; i < RUNS; i++) {
        spawn_case("fork-config-one", NULL, &r);
        if (!(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0)) {
            char how[96];
            describe_status(r.status, how, sizeof how);
            fail(__LINE__, "run %d of %d: fork-config-one %s\n  its stderr: %s", i + 1, RUNS, how,
                 r.nerr ? r.err : "(empty)");
        }
    }
    printf("info: %d fresh processes, each forked during a thread's first malloc\n", RUNS);
}

/* ------------------------------------------------------------------------- */

static void run_case(const char *name, const char *arg)
{
    int sub = !strcmp(name, "fork-config-one");
    case_setup(name, sub ? SUBCASE_WATCHDOG_S : CASE_WATCHDOG_S);
    if (!strcmp(name, "atfork-early")) case_atfork_early();
    else if (!strcmp(name, "sigfork-single")) case_sigfork(0);
    else if (!strcmp(name, "sigfork-threads")) case_sigfork(1);
    else if (!strcmp(name, "dontfork-reuse") && arg) case_dontfork_reuse((size_t)strtoull(arg, NULL, 10) * KiB);
    else if (!strcmp(name, "dontfork-realloc")) case_dontfork_realloc();
    else if (!strcmp(name, "fork-config")) case_fork_config();
    else if (sub) case_fork_config_one();
    else fail(__LINE__, "unknown case %s", name);
    printf("ok\n");
    fflush(stdout);
    exit(0);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

static void spawn_case(const char *name, const char *arg, child_result_t *res)
{
    static const char *const drop[] = { "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    static const char *const add[] = { NULL };
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, (char *)arg, NULL };
    spawn_self(argv, drop, add, res);
}

static void check_case(const char *name, const char *arg)
{
    static child_result_t r;
    double t0 = now_s();
    spawn_case(name, arg, &r);
    double dt = now_s() - t0;
    char label[64];
    snprintf(label, sizeof label, "%s%s%s", name, arg ? " " : "", arg ? arg : "");
    int ok = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && strstr(r.out, "ok\n");
    const char *cur = r.out, *line;
    size_t len;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "info: ")) printf("  %s: %.*s\n", label, (int)(len - 6), line + 6);
    if (ok) {
        printf("  %s: ok (%.2f s)\n", label, dt);
        return;
    }
    char how[96];
    describe_status(r.status, how, sizeof how);
    fprintf(stderr, "FAIL %s: case %s %s after %.2f s\n  child stdout: %s\n  child stderr: %s\n", test_name,
            label, how, dt, r.nout ? r.out : "(empty)", r.nerr ? r.err : "(empty)");
    test_failures++;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--case")) run_case(argv[2], argc >= 4 ? argv[3] : NULL);
    int hakmem = argc >= 2 && !strcmp(argv[1], "hakmem");
    alarm(60); /* the cases have their own watchdogs; this is a last resort */

    check_case("atfork-early", NULL);
    check_case("sigfork-single", NULL);
    if (hakmem) check_case("sigfork-threads", NULL);
    else printf("  sigfork-threads: skipped (hakmem only)\n");
    static const char *const dontfork_kib[] = { "300", "1024", "8192", "20480" };
    for (size_t i = 0; i < sizeof dontfork_kib / sizeof dontfork_kib[0]; i++)
        check_case("dontfork-reuse", dontfork_kib[i]);
    check_case("dontfork-realloc", NULL);
    check_case("fork-config", NULL);
    return test_finish("case");
}

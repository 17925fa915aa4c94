/*
 * soak.c — long-running soak test: while the live data is bounded, RSS must not keep rising.
 *
 * Not a test_* program, so scripts/test-c.sh does not run it; scripts/soak.sh (make soak)
 * builds it as out/release/soak_system and runs it under LD_PRELOAD of libhakmem.so.
 *
 * For DURATION seconds:
 *   - T worker threads (default 4), each with a bounded live set: 2048 "small" slots
 *     (16 B .. 64 KiB, 1% up to 256 KiB) and 4 "big" slots (256 KiB .. 8 MiB, log-uniform).
 *     An operation picks a slot and allocates into it (malloc, calloc, posix_memalign,
 *     realloc(NULL, n)), frees it, reallocs it to a new size, checks it, or passes the block
 *     to another thread: lock-free exchange slots (atomic_exchange of a descriptor); whoever
 *     displaces or takes a block frees it, so a large share of frees cross threads.
 *   - Thread churn: a worker lives 1..10 s, then exits and hands its live blocks over (a
 *     batch on a mutex-protected list) to a surviving worker, which adopts half of them into
 *     its slots and frees the rest, or (one batch in three) to the main thread, which frees
 *     them; main starts a replacement (one in three detached).  A churn thread starts
 *     short-lived threads all the time (half detached, at most 16 of those at once): some
 *     malloc one block, pass it on and exit at once; some free one block of another thread
 *     and exit; the rest do 50..400 operations and leave up to 4 blocks live in the
 *     exchange slots when they exit (so segments of dead threads keep live blocks that
 *     other threads free later).
 *   - Every ~2 s a worker forks.  The child verifies and frees up to 32 of the worker's live
 *     blocks and its big ones, takes and frees blocks from the exchange slots (allocated by
 *     other threads of the parent), runs a malloc/free/realloc loop, starts a thread whose
 *     last block it frees, and _exit(0)s; the parent checks the status.
 *   - Main calls malloc_trim(0) every 30 s and samples RSS (/proc/self/statm) every second:
 *         t=<s> rss_kb=<n> live_kb=<n> ops=<n> forks=<n> threads=<n> alive=<n>
 *     live_kb: bytes the program holds (requested sizes of its blocks, plus its exchange
 *     descriptors and hand-over batches; tracked with atomics, batched per thread to 1 MiB);
 *     ops: allocator calls so far; threads: threads started so far (workers and short-lived);
 *     alive: threads running now.
 *
 * Every block carries a pattern derived from a random per-block tag: every word up to
 * 64 KiB; above, the first and last 256 bytes and one word per 4 KiB (which also makes every
 * page resident, as a real program would).  It is checked before every free and realloc, and
 * after realloc (the preserved prefix); calloc memory is checked to be zero.
 *
 * Verdict.  The live set is bounded by construction (fixed slot counts per worker, fixed
 * exchange slots, an exiting worker's blocks are freed or displace blocks of the adopter, a
 * new worker starts empty), so after warm-up the memory the program needs is flat, and an
 * allocator that reuses or returns freed memory has flat RSS.  The first third of the samples
 * is warm-up.  The run FAILS
 *   - if the median RSS of the last third > 1.25 x the median of the middle third + 16 MiB.
 *     (Medians ignore the swings of single samples; 25% + 16 MiB absorbs the steady-state
 *     wobble: the live set moves by tens of MiB as workers die and restart empty and as 8 MiB
 *     blocks come and go.  A leak of ~100 KiB/s over a 600 s run exceeds it.)
 *   - if any sample exceeds the RSS cap (default 2048 MiB); the run stops there;
 *   - on a content mismatch, NULL from the allocator, misalignment, malloc_usable_size below
 *     the request, or a fork child that does not exit 0;
 *   - if the program's own accounting is off at the end (bytes still counted live after
 *     everything was freed) or the live set itself grew like the rule above (the run would
 *     prove nothing: a bug of this test);
 *   - on a hang: a watchdog thread aborts with a message when the main thread, a worker or
 *     the churn thread makes no progress for 30 s (fork children: SIGALRM after 20 s; the
 *     whole run: SIGALRM at DURATION + 120 s).
 * Prints "PASS soak" (stdout, last line; exit 0) or "FAIL soak: <why>" (stderr; exit 1, or
 * SIGABRT from the watchdog).  Before the verdict: a "summary key=value ..." line
 * (scripts/soak.sh reads it).
 *
 * Usage: soak [hakmem] [DURATION_S [RSS_CAP_MB [THREADS]]]
 *   ("hakmem" is accepted and ignored, like the test_* programs.)
 * Environment, defaults for the arguments and more: SOAK_SECONDS (600), SOAK_RSS_CAP_MB
 * (2048), SOAK_THREADS (4, at most 64), SOAK_SEED (1), SOAK_WATCHDOG_S (30), SOAK_TRIM_S
 * (30; 0 = never call malloc_trim).
 */
#define TEST_NAME "soak"
#include "test_common.h"
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#define MAX_WORKERS 64
#define NSMALL 2048             /* small slots per worker */
#define NBIG 4                  /* big slots per worker */
#define NXSMALL 256             /* exchange slots for blocks <= 64 KiB (<= 16 MiB in flight) */
#define NXBIG 8                 /* exchange slots for larger blocks (<= 64 MiB in flight) */
#define FULL_LIMIT (64 * KiB)   /* blocks up to this size are patterned in every word */
#define SMALL_MAX (256 * KiB)   /* largest "small" size; above goes to the big slots */
#define DETACHED_MAX 16         /* detached short-lived threads running at once */
#define WAVE_THREADS 48         /* threads started at once by a wave */
#define WAVE_BLOCKS 64          /* blocks each wave thread allocates and hands over */
#define NONE ((size_t)-1)

/* ---- configuration and shared state ---------------------------------------------------- */

static int g_duration = 600, g_nworkers = 4, g_watchdog_s = 30, g_trim_s = 30;
static long g_cap_kb = 2048 * 1024;
static uint64_t g_seed = 1;
static pid_t g_main_pid;
static uint64_t g_t0;                  /* start, ms on CLOCK_MONOTONIC */

static atomic_int g_stop;
static _Atomic long long g_live;       /* bytes held live by the program */
static _Atomic unsigned long long g_ops;
static atomic_uint g_forks, g_started;
static atomic_int g_alive, g_detached_alive;
static _Atomic uint64_t g_next_fork;   /* ms: the first worker past it forks */
static _Atomic uint64_t g_main_beat, g_churn_beat;
static atomic_int g_churn_running;
static const char *_Atomic g_main_phase = "starting";

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
static double elapsed_s(void) { return (double)(now_ms() - g_t0) / 1000.0; }
static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}
static void write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (size_t)w;
    }
}

/* Failure: "FAIL soak: t=<s>: <why>" (or "FAIL soak: fork child <pid>: <why>") on stderr,
 * then _exit(1) (a child: _exit(3)), which ends every thread at once. */
static void soak_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void soak_fail(const char *fmt, ...)
{
    char buf[2048];
    int child = getpid() != g_main_pid;
    int n = child ? snprintf(buf, sizeof buf, "FAIL soak: fork child %d: ", (int)getpid())
                  : snprintf(buf, sizeof buf, "FAIL soak: t=%.1f s: ", elapsed_s());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    if (!child) fflush(stdout);
    write_all(2, buf, (size_t)n);
    _exit(child ? 3 : 1);
}

/* ---- per-thread counters, flushed in batches to the shared atomics ---------------------- */

static __thread long long t_live;
static __thread unsigned long long t_ops;
static void live_flush(void)
{
    if (t_live) atomic_fetch_add(&g_live, t_live);
    if (t_ops) atomic_fetch_add(&g_ops, t_ops);
    t_live = 0;
    t_ops = 0;
}
static inline void live_add(long long d)
{
    t_live += d;
    t_ops++;
    if (t_live > (1 << 20) || t_live < -(1 << 20)) live_flush();
}

/* ---- blocks and their content pattern ---------------------------------------------------- */

typedef struct { unsigned char *p; size_t n; uint64_t tag; } blk_t;

static inline uint64_t pw(uint64_t tag, size_t k)
{
    uint64_t x = (tag ^ ((uint64_t)k * 0x9E3779B97F4A7C15ull)) * 0xD6E8FEB86659FD93ull;
    return x ^ (x >> 31);
}
enum { M_FILL, M_CHECK, M_ZERO };
/* Words [k0, k1) of p: write the pattern, or find the first word that differs from the
 * pattern (M_CHECK) or from 0 (M_ZERO).  Returns that word's offset or NONE. */
static size_t words_op(unsigned char *p, size_t k0, size_t k1, uint64_t tag, int mode)
{
    if (mode == M_FILL) {
        for (size_t k = k0; k < k1; k++) {
            uint64_t w = pw(tag, k);
            memcpy(p + 8 * k, &w, 8);
        }
        return NONE;
    }
    for (size_t k = k0; k < k1; k++) {
        uint64_t got, want = mode == M_ZERO ? 0 : pw(tag, k);
        memcpy(&got, p + 8 * k, 8);
        if (got != want) return 8 * k;
    }
    return NONE;
}
/* Apply mode to the patterned positions of the n-byte block p that lie below limit (every
 * word for n <= 64 KiB; else the first and last 32 words and one word per 4 KiB; then the
 * bytes after the last whole word).  Returns the first offset that mismatches, or NONE. */
static size_t walk(unsigned char *p, size_t n, uint64_t tag, size_t limit, int mode)
{
    size_t words = n / 8, lw = limit / 8, r;
#define RANGE(a, b)                                                                         \
    do {                                                                                    \
        size_t a_ = (a), b_ = (b) < lw ? (b) : lw;                                          \
        if (a_ < b_ && (r = words_op(p, a_, b_, tag, mode)) != NONE) return r;              \
    } while (0)
    if (n <= FULL_LIMIT) {
        RANGE(0, words);
    } else {
        RANGE(0, 32);
        for (size_t k = 512; k + 32 < words; k += 512) RANGE(k, k + 1);
        RANGE(words - 32, words);
    }
#undef RANGE
    for (size_t i = words * 8; i < n && i < limit; i++) {
        unsigned char want = mode == M_ZERO ? 0 : (unsigned char)pw(tag, i);
        if (mode == M_FILL) p[i] = want;
        else if (p[i] != want) return i;
    }
    return NONE;
}
/* Report a mismatch at offset off of b (found by walk in mode) during `what`. */
static void corrupt(const blk_t *b, size_t off, int mode, const char *what) __attribute__((noreturn));
static void corrupt(const blk_t *b, size_t off, int mode, const char *what)
{
    const char *kind = mode == M_ZERO ? "calloc memory not zero" : "content mismatch";
    if (off < (b->n / 8) * 8) {
        uint64_t got, want = mode == M_ZERO ? 0 : pw(b->tag, off / 8);
        memcpy(&got, b->p + off, 8);
        soak_fail("%s (%s): block %p of %zu bytes: the word at offset %zu is %#018llx, "
                  "expected %#018llx", kind, what, (void *)b->p, b->n, off,
                  (unsigned long long)got, (unsigned long long)want);
    }
    soak_fail("%s (%s): block %p of %zu bytes: the byte at offset %zu is %#04x, expected %#04x",
              kind, what, (void *)b->p, b->n, off, b->p[off],
              mode == M_ZERO ? 0 : (unsigned char)pw(b->tag, off));
}
static void check_blk(const blk_t *b, const char *what)
{
    size_t off = walk(b->p, b->n, b->tag, b->n, M_CHECK);
    if (off != NONE) corrupt(b, off, M_CHECK, what);
}

/* A fresh block of the allocator: not NULL, aligned, usable size >= request. */
static void check_new(void *p, size_t n, size_t align, const char *api)
{
    if (!p) soak_fail("%s(%zu) returned NULL (errno %d: %s)", api, n, errno, strerror(errno));
    if (!is_aligned(p, align)) soak_fail("%s(%zu) = %p is not %zu-byte aligned", api, n, p, align);
    size_t us = malloc_usable_size(p);
    if (us < n) soak_fail("malloc_usable_size(%p) = %zu < %zu requested (%s)", p, us, n, api);
}

/* A new n-byte block from a random allocation call, filled with a fresh pattern. */
static blk_t alloc_blk(rng_t *r, size_t n, int big)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 100);
    x >>= 8;
    void *p = NULL;
    size_t align = 16;
    const char *api;
    int zeroed = 0;
    if (pick < 55) {
        api = "malloc";
        p = malloc(n);
    } else if (pick < 72) {
        api = "calloc";
        zeroed = 1;
        p = (n % 16 == 0 && (x & 1)) ? calloc(n / 16, 16) : calloc(1, n);
    } else if (pick < 90) {
        api = "posix_memalign";
        if (big) align = x % 3 == 0 ? 2 * MiB : x % 3 == 1 ? 64 * KiB : 4096;
        else align = x % 64 == 0 ? 64 * KiB : (size_t)16 << (x % 9); /* 16 .. 4096 */
        int rc = posix_memalign(&p, align, n);
        if (rc) {
            errno = rc;
            p = NULL;
        }
    } else {
        api = "realloc(NULL)";
        p = realloc(NULL, n);
    }
    check_new(p, n, align, api);
    blk_t b = { p, n, rnd(r) | 1 };
    if (zeroed) {
        size_t off = walk(b.p, n, 0, n, M_ZERO);
        if (off != NONE) corrupt(&b, off, M_ZERO, "fresh calloc block");
    }
    walk(b.p, n, b.tag, n, M_FILL);
    live_add((long long)n);
    return b;
}

static void free_blk(blk_t *b, const char *what)
{
    check_blk(b, what);
    free(b->p);
    live_add(-(long long)b->n);
    b->p = NULL;
}

/* realloc b to m bytes: check it before, check the preserved prefix after, new pattern. */
static void realloc_blk(rng_t *r, blk_t *b, size_t m)
{
    check_blk(b, "before realloc");
    uintptr_t old = (uintptr_t)b->p;
    unsigned char *q = realloc(b->p, m);
    if (!q) soak_fail("realloc(%#lx, %zu -> %zu) returned NULL", (unsigned long)old, b->n, m);
    check_new(q, m, 16, "realloc");
    blk_t moved = { q, b->n, b->tag };
    size_t keep = b->n < m ? b->n : m;
    size_t off = walk(q, b->n, b->tag, keep, M_CHECK);
    if (off != NONE) {
        char what[128];
        snprintf(what, sizeof what, "after realloc(%#lx, %zu -> %zu) = %p, within the kept %zu bytes",
                 (unsigned long)old, b->n, m, (void *)q, keep);
        corrupt(&moved, off, M_CHECK, what);
    }
    live_add((long long)m - (long long)b->n);
    b->p = q;
    b->n = m;
    b->tag = rnd(r) | 1;
    walk(q, m, b->tag, m, M_FILL);
}

static size_t small_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 1000);
    x >>= 10;
    if (pick < 550) return 16 + x % 241;                   /* 16 B .. 256 B: 55% */
    if (pick < 850) return 257 + x % (4096 - 256);         /* .. 4 KiB: 30% */
    if (pick < 990) return 4097 + x % (60 * KiB);          /* .. 64 KiB: 14% */
    return 64 * KiB + 1 + x % (SMALL_MAX - 64 * KiB);      /* .. 256 KiB: 1% */
}
static size_t big_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned sh = 18 + (unsigned)(x % 5);
    x >>= 8;
    return ((size_t)1 << sh) + 1 + x % ((size_t)1 << sh); /* 256 KiB .. 8 MiB, log-uniform */
}

/* ---- lock-free exchange slots ------------------------------------------------------------ */

typedef struct { blk_t b; uint64_t check; } xfer_t;
static xfer_t *_Atomic g_xsmall[NXSMALL];
static xfer_t *_Atomic g_xbig[NXBIG];

static uint64_t xcheck(const blk_t *b)
{
    return ((uint64_t)(uintptr_t)b->p * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)b->n * 0xA0761D6478BD642Full) ^
           b->tag ^ 0x534F414Bull;
}
static void xfer_verify(const xfer_t *x)
{
    if (x->check != xcheck(&x->b))
        soak_fail("exchange descriptor %p corrupted: {p=%p, n=%zu, tag=%#llx} check %#llx, expected %#llx",
                  (const void *)x, (void *)x->b.p, x->b.n, (unsigned long long)x->b.tag,
                  (unsigned long long)x->check, (unsigned long long)xcheck(&x->b));
}
/* Give b away: into a random exchange slot; the block displaced from it (if any) is freed
 * here.  b becomes empty. */
static void xfer_send(rng_t *r, blk_t *b)
{
    xfer_t *x = malloc(sizeof *x);
    check_new(x, sizeof *x, 16, "malloc");
    live_add((long long)sizeof *x);
    x->b = *b;
    x->check = xcheck(b);
    b->p = NULL;
    xfer_t *_Atomic *slot = b->n > FULL_LIMIT ? &g_xbig[rnd(r) % NXBIG] : &g_xsmall[rnd(r) % NXSMALL];
    xfer_t *old = atomic_exchange(slot, x);
    if (old) {
        xfer_verify(old);
        free_blk(&old->b, "free of a block displaced from an exchange slot");
        free(old);
        live_add(-(long long)sizeof *old);
    }
}
/* Take the block of exchange slot *slot into the empty *b; returns 0 if the slot was empty. */
static int xfer_take_slot(xfer_t *_Atomic *slot, blk_t *b)
{
    xfer_t *x = atomic_exchange(slot, NULL);
    if (!x) return 0;
    xfer_verify(x);
    *b = x->b;
    check_blk(b, "block taken from an exchange slot");
    free(x);
    live_add(-(long long)sizeof *x);
    return 1;
}
static int xfer_take(rng_t *r, blk_t *b, int big)
{
    return xfer_take_slot(big ? &g_xbig[rnd(r) % NXBIG] : &g_xsmall[rnd(r) % NXSMALL], b);
}

/* ---- workers and the hand-over of an exiting worker's blocks ----------------------------- */

enum { W_IDLE, W_RUNNING, W_FINISHED };
typedef struct {
    atomic_int state;
    _Atomic uint64_t beat;    /* ms of the last progress */
    int idx, detached;
    unsigned gen;
    uint64_t life_ms;
    pthread_t tid;
    blk_t small[NSMALL], big[NBIG];
} worker_t;
static worker_t g_w[MAX_WORKERS];

typedef struct hbatch {
    struct hbatch *next;
    uint64_t t;               /* when it was handed over */
    size_t n, bytes;
    blk_t b[];
} hbatch_t;
static pthread_mutex_t g_hmu = PTHREAD_MUTEX_INITIALIZER;
static hbatch_t *g_hand_w, *g_hand_main;  /* for a surviving worker; for main */
static atomic_int g_hand_w_n;

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg, int detached)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (detached) pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    atomic_fetch_add(&g_alive, 1);
    atomic_fetch_add(&g_started, 1);
    int rc = pthread_create(t, &a, fn, arg);
    if (rc) soak_fail("pthread_create: %s (alive threads: %d)", strerror(rc), atomic_load(&g_alive));
    pthread_attr_destroy(&a);
}

/* Free every block of a hand-over batch (main, or a worker for the half it does not adopt). */
static void batch_free(hbatch_t *h, const char *what)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->b[i].p) free_blk(&h->b[i], what);
    long long bytes = (long long)h->bytes;
    free(h);
    live_add(-bytes);
}

/* Exiting worker: put all its live blocks in a batch for a survivor or for main. */
static void worker_handoff(worker_t *w, rng_t *r)
{
    size_t cnt = 0;
    for (int i = 0; i < NSMALL; i++) cnt += w->small[i].p != NULL;
    for (int i = 0; i < NBIG; i++) cnt += w->big[i].p != NULL;
    size_t bytes = sizeof(hbatch_t) + cnt * sizeof(blk_t);
    hbatch_t *h = malloc(bytes);
    check_new(h, bytes, 16, "malloc");
    live_add((long long)bytes);
    h->n = 0;
    h->bytes = bytes;
    for (int i = 0; i < NSMALL; i++)
        if (w->small[i].p) { h->b[h->n++] = w->small[i]; w->small[i].p = NULL; }
    for (int i = 0; i < NBIG; i++)
        if (w->big[i].p) { h->b[h->n++] = w->big[i]; w->big[i].p = NULL; }
    h->t = now_ms();
    int to_main = rnd(r) % 3 == 0;
    pthread_mutex_lock(&g_hmu);
    if (to_main) {
        h->next = g_hand_main;
        g_hand_main = h;
    } else {
        h->next = g_hand_w;
        g_hand_w = h;
        atomic_fetch_add(&g_hand_w_n, 1);
    }
    pthread_mutex_unlock(&g_hmu);
}

/* Surviving worker: take one batch; adopt half of its blocks into random slots (freeing
 * what they displace), free the other half. */
static void worker_adopt(worker_t *w, rng_t *r)
{
    pthread_mutex_lock(&g_hmu);
    hbatch_t *h = g_hand_w;
    if (h) {
        g_hand_w = h->next;
        atomic_fetch_sub(&g_hand_w_n, 1);
    }
    pthread_mutex_unlock(&g_hmu);
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) {
        if (rnd(r) & 1) continue; /* freed below */
        blk_t *s = h->b[i].n > SMALL_MAX ? &w->big[rnd(r) % NBIG] : &w->small[rnd(r) % NSMALL];
        if (s->p) free_blk(s, "free of a block displaced by one inherited from an exited worker");
        check_blk(&h->b[i], "block inherited from an exited worker");
        *s = h->b[i];
        h->b[i].p = NULL;
    }
    batch_free(h, "free of a block inherited from an exited worker");
}

/* ---- fork ----------------------------------------------------------------------------- */

typedef struct { uint64_t seed; blk_t give; } child_thread_arg;

/* A thread in the fork child: some malloc/free/realloc, one block left for the child's main
 * thread to free. */
static void *child_thread(void *v)
{
    child_thread_arg *a = v;
    rng_t r = rng_seed(a->seed);
    blk_t loc[16] = { { 0 } };
    for (int k = 0; k < 500; k++) {
        blk_t *b = &loc[rnd(&r) % 16];
        if (!b->p) *b = alloc_blk(&r, small_size(&r), 0);
        else if (rnd(&r) & 1) free_blk(b, "free in a fork child's thread");
        else realloc_blk(&r, b, small_size(&r));
    }
    a->give = alloc_blk(&r, small_size(&r), 0);
    for (int i = 0; i < 16; i++)
        if (loc[i].p) free_blk(&loc[i], "free in a fork child's thread");
    return NULL;
}

static void child_main(worker_t *w, rng_t *r)
{
    signal(SIGALRM, SIG_DFL);     /* not the parent's handler: SIGALRM kills the child, */
    alarm(g_watchdog_s * 2 / 3);  /* the parent reports it, before its own watchdog fires */

    /* blocks this worker allocated or adopted before the fork: check, free some, realloc one */
    int seen = 0;
    size_t start = rnd(r) % NSMALL;
    for (size_t k = 0; k < NSMALL && seen < 32; k++) {
        blk_t *b = &w->small[(start + k) % NSMALL];
        if (!b->p) continue;
        seen++;
        if (seen & 1) free_blk(b, "fork child: free of an inherited block");
        else if (seen == 2) realloc_blk(r, b, small_size(r));
        else check_blk(b, "fork child: inherited block");
    }
    for (int i = 0; i < NBIG; i++)
        if (w->big[i].p) free_blk(&w->big[i], "fork child: free of an inherited big block");
    /* blocks in flight between the parent's threads at the moment of the fork */
    for (int i = 0; i < 8; i++) {
        blk_t b;
        if (xfer_take_slot(&g_xsmall[rnd(r) % NXSMALL], &b))
            free_blk(&b, "fork child: free of a block from an exchange slot");
    }
    for (int i = 0; i < 2; i++) {
        blk_t b;
        if (xfer_take_slot(&g_xbig[rnd(r) % NXBIG], &b))
            free_blk(&b, "fork child: free of a big block from an exchange slot");
    }
    /* the child's own churn */
    blk_t loc[64] = { { 0 } };
    for (int k = 0; k < 3000; k++) {
        uint64_t x = rnd(r);
        blk_t *b = &loc[x % 64];
        if (!b->p) *b = alloc_blk(r, (x >> 8) % 50 == 0 ? big_size(r) : small_size(r), 0);
        else if ((x >> 16) % 3) free_blk(b, "fork child: free");
        else realloc_blk(r, b, small_size(r));
    }
    for (int i = 0; i < 64; i++)
        if (loc[i].p) free_blk(&loc[i], "fork child: free");
    /* a thread in the child */
    child_thread_arg a = { rnd(r), { 0 } };
    pthread_t t;
    int rc = pthread_create(&t, NULL, child_thread, &a);
    if (rc) soak_fail("pthread_create: %s", strerror(rc));
    pthread_join(t, NULL);
    free_blk(&a.give, "fork child: free of a block of the child's thread");
    _exit(0);
}

static void do_fork(worker_t *w, rng_t *r)
{
    pid_t pid = fork();
    if (pid < 0) soak_fail("fork: %s", strerror(errno));
    if (pid == 0) child_main(w, r);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) soak_fail("waitpid(%d): %s", (int)pid, strerror(errno));
    if (WIFSIGNALED(st))
        soak_fail("fork child %d killed by signal %d (%s)%s", (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)),
                  WTERMSIG(st) == SIGALRM ? ": it hung" : "");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        soak_fail("fork child %d exited with status %d, expected 0", (int)pid, WEXITSTATUS(st));
    atomic_fetch_add(&g_forks, 1);
}

/* ---- worker loop ------------------------------------------------------------------------ */

static void big_op(worker_t *w, rng_t *r, uint64_t x)
{
    blk_t *b = &w->big[x % NBIG];
    unsigned pick = (unsigned)((x >> 8) % 100);
    if (!b->p) {
        if (pick < 10 && xfer_take(r, b, 1)) return;
        *b = alloc_blk(r, big_size(r), 1);
    } else if (pick < 45) {
        free_blk(b, "free");
    } else if (pick < 80) {
        realloc_blk(r, b, pick < 77 ? big_size(r) : small_size(r)); /* sometimes big -> small */
    } else {
        xfer_send(r, b);
    }
}

static void one_op(worker_t *w, rng_t *r)
{
    uint64_t x = rnd(r);
    if ((x & 63) == 0) {
        big_op(w, r, x >> 6);
        return;
    }
    blk_t *b = &w->small[(x >> 6) % NSMALL];
    unsigned pick = (unsigned)((x >> 24) % 100);
    if (!b->p) {
        if (pick < 10 && xfer_take(r, b, 0)) return;
        *b = alloc_blk(r, small_size(r), 0);
    } else if (pick < 50) {
        free_blk(b, "free");
    } else if (pick < 72) {
        realloc_blk(r, b, small_size(r));
    } else if (pick < 90) {
        xfer_send(r, b);
    } else {
        check_blk(b, "live block");
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    rng_t r = rng_seed(g_seed * 1000003u + (uint64_t)w->idx * 7919u + (uint64_t)w->gen * 104729u);
    uint64_t end = now_ms() + w->life_ms;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        for (int i = 0; i < 256; i++) one_op(w, &r);
        live_flush();
        uint64_t now = now_ms();
        atomic_store(&w->beat, now);
        if (now >= end) break;
        if (atomic_load_explicit(&g_hand_w_n, memory_order_relaxed) > 0) worker_adopt(w, &r);
        uint64_t nf = atomic_load(&g_next_fork);
        if (now >= nf && atomic_compare_exchange_strong(&g_next_fork, &nf, now + 2000)) {
            do_fork(w, &r);
            atomic_store(&w->beat, now_ms());
        }
    }
    worker_handoff(w, &r);
    live_flush();
    atomic_fetch_sub(&g_alive, 1);
    atomic_store(&w->state, W_FINISHED); /* the last touch of *w: main may reuse it now */
    return NULL;
}

static void start_worker(int i, rng_t *r)
{
    worker_t *w = &g_w[i];
    w->idx = i;
    w->gen++;
    w->detached = rnd(r) % 3 == 0;
    w->life_ms = 1000 + rnd(r) % 9001;
    atomic_store(&w->beat, now_ms());
    atomic_store(&w->state, W_RUNNING);
    start_thread(&w->tid, worker_main, w, w->detached);
}

/* ---- short-lived threads ---------------------------------------------------------------- */

static void *short_main(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    int detached = (int)(id & 1);
    unsigned kind = (unsigned)((id >> 1) % 8);
    rng_t r = rng_seed(g_seed * 0x51ED27ull + id);
    if (kind == 0) {        /* allocate one block, hand it on, exit at once */
        blk_t b = alloc_blk(&r, small_size(&r), 0);
        xfer_send(&r, &b);
    } else if (kind == 1) { /* free one block of another thread, exit at once */
        blk_t b;
        if (xfer_take(&r, &b, 0)) free_blk(&b, "free in a short-lived thread");
    } else {                /* some work; leave up to 4 blocks live in the exchange slots */
        blk_t loc[32] = { { 0 } };
        int nops = 50 + (int)(rnd(&r) % 351);
        for (int k = 0; k < nops; k++) {
            uint64_t x = rnd(&r);
            blk_t *b = &loc[x % 32];
            unsigned pick = (unsigned)((x >> 8) % 10);
            if (!b->p) {
                if (pick == 0 && xfer_take(&r, b, 0)) continue;
                *b = alloc_blk(&r, small_size(&r), 0);
            } else if (pick < 6) {
                free_blk(b, "free in a short-lived thread");
            } else {
                realloc_blk(&r, b, small_size(&r));
            }
        }
        if (kind == 7) {    /* a big block, passed on */
            blk_t b = alloc_blk(&r, big_size(&r), 1);
            xfer_send(&r, &b);
        }
        int give = (int)(rnd(&r) % 5);
        for (int i = 0; i < 32; i++) {
            if (!loc[i].p) continue;
            if (give > 0) { xfer_send(&r, &loc[i]); give--; }
            else free_blk(&loc[i], "free in a short-lived thread");
        }
    }
    live_flush();
    if (detached) atomic_fetch_sub(&g_detached_alive, 1);
    atomic_fetch_sub(&g_alive, 1);
    return NULL;
}

/* A thread of a wave: allocates WAVE_BLOCKS blocks (16 B .. 32 KiB, log-uniform), returns
 * them as a hand-over batch and exits; another thread frees them after the join. */
static void *wave_main(void *arg)
{
    rng_t r = rng_seed(g_seed * 0x3C6EF372ull + (uint64_t)(uintptr_t)arg);
    size_t bytes = sizeof(hbatch_t) + WAVE_BLOCKS * sizeof(blk_t);
    hbatch_t *h = malloc(bytes);
    check_new(h, bytes, 16, "malloc");
    live_add((long long)bytes);
    h->bytes = bytes;
    h->n = WAVE_BLOCKS;
    for (int i = 0; i < WAVE_BLOCKS; i++) {
        uint64_t x = rnd(&r);
        unsigned sh = 4 + (unsigned)(x % 11);
        h->b[i] = alloc_blk(&r, ((size_t)1 << sh) + (x >> 8) % ((size_t)1 << sh), 0);
    }
    live_flush();
    atomic_fetch_sub(&g_alive, 1);
    return h;
}

/* Starts bursts of 1..8 short-lived threads (half detached) every 2..10 ms, and every
 * ~0.5 s a wave of WAVE_THREADS threads at once whose blocks are freed after they exited:
 * by this thread (odd waves) or by main (even waves, through the hand-over list). */
static void *churn_main(void *arg)
{
    rng_t r = rng_seed(g_seed * 31 + 7);
    uint64_t id = 0, next_wave = now_ms() + 500;
    unsigned wave = 0;
    while (!atomic_load(&g_stop)) {
        if (now_ms() >= next_wave) {
            pthread_t tw[WAVE_THREADS];
            for (int k = 0; k < WAVE_THREADS; k++)
                start_thread(&tw[k], wave_main, (void *)(uintptr_t)(wave * WAVE_THREADS + (unsigned)k), 0);
            for (int k = 0; k < WAVE_THREADS; k++) {
                void *ret;
                pthread_join(tw[k], &ret);
                hbatch_t *h = ret;
                if (wave & 1) {
                    batch_free(h, "free of a block of an exited wave thread");
                } else {
                    h->t = now_ms();
                    pthread_mutex_lock(&g_hmu);
                    h->next = g_hand_main;
                    g_hand_main = h;
                    pthread_mutex_unlock(&g_hmu);
                }
            }
            live_flush();
            wave++;
            next_wave = now_ms() + 500;
        }
        pthread_t tj[8];
        int nj = 0, burst = 1 + (int)(rnd(&r) % 8);
        for (int k = 0; k < burst; k++) {
            int det = (int)(rnd(&r) & 1);
            if (det && atomic_load(&g_detached_alive) >= DETACHED_MAX) det = 0;
            uint64_t a = (id++ << 4) | ((rnd(&r) % 8) << 1) | (uint64_t)det;
            if (det) {
                pthread_t t;
                atomic_fetch_add(&g_detached_alive, 1);
                start_thread(&t, short_main, (void *)(uintptr_t)a, 1);
            } else {
                start_thread(&tj[nj++], short_main, (void *)(uintptr_t)a, 0);
            }
        }
        for (int k = 0; k < nj; k++) pthread_join(tj[k], NULL);
        atomic_store(&g_churn_beat, now_ms());
        sleep_ms(2 + (unsigned)(rnd(&r) % 9));
    }
    return NULL;
}

/* ---- watchdog ---------------------------------------------------------------------------- */

static void wd_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void wd_die(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "FAIL soak: t=%.1f s: watchdog: ", elapsed_s());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    write_all(2, buf, (size_t)n);
    abort();
}
static int stale(uint64_t now, uint64_t beat) { return (int64_t)(now - beat) > (int64_t)g_watchdog_s * 1000; }

static void *watchdog_main(void *arg)
{
    for (;;) {
        sleep_ms(500);
        uint64_t now = now_ms();
        if (stale(now, atomic_load(&g_main_beat)))
            wd_die("the main thread made no progress for %d s (phase: %s); ops=%llu", g_watchdog_s,
                   atomic_load(&g_main_phase), (unsigned long long)atomic_load(&g_ops));
        for (int i = 0; i < g_nworkers; i++)
            if (atomic_load(&g_w[i].state) == W_RUNNING && stale(now, atomic_load(&g_w[i].beat)))
                wd_die("worker %d (generation %u) made no progress for %d s; ops=%llu", i, g_w[i].gen,
                       g_watchdog_s, (unsigned long long)atomic_load(&g_ops));
        if (atomic_load(&g_churn_running) && stale(now, atomic_load(&g_churn_beat)))
            wd_die("the churn thread made no progress for %d s (a short-lived thread does not finish?); "
                   "alive threads %d", g_watchdog_s, atomic_load(&g_alive));
    }
    return NULL;
}

static void on_alarm(int sig)
{
    char buf[200];
    int n = snprintf(buf, sizeof buf, "FAIL soak: alarm: the run did not finish within %d s "
                     "(duration %d s + margin): hung\n", g_duration + 120, g_duration);
    write_all(2, buf, (size_t)n);
    abort();
}

/* ---- main: samples, churn of workers, verdict ------------------------------------------- */

static long rss_kb(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) soak_fail("open /proc/self/statm: %s", strerror(errno));
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) soak_fail("read /proc/self/statm failed");
    buf[k] = 0;
    unsigned long size, res;
    if (sscanf(buf, "%lu %lu", &size, &res) != 2) soak_fail("cannot parse /proc/self/statm: %s", buf);
    return (long)(res * ((unsigned long)sysconf(_SC_PAGESIZE) / 1024));
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}
/* Median of v[a..b) (b > a). */
static long median(const long *v, int a, int b)
{
    int n = b - a;
    long *c = malloc((size_t)n * sizeof *c);
    if (!c) soak_fail("malloc for the median failed");
    memcpy(c, v + a, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_long);
    long m = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
    free(c);
    return m;
}
/* Least-squares slope of v[a..b) against the sample index (one per second), per minute. */
static double slope_per_min(const long *v, int a, int b)
{
    double n = b - a, sx = 0, sy = 0, sxx = 0, sxy = 0;
    if (b - a < 2) return 0;
    for (int i = a; i < b; i++) {
        sx += i;
        sy += (double)v[i];
        sxx += (double)i * i;
        sxy += (double)i * (double)v[i];
    }
    double d = n * sxx - sx * sx;
    return d == 0 ? 0 : 60.0 * (n * sxy - sx * sy) / d;
}

/* Main's share of the hand-over: every batch for main, and batches for survivors older than
 * 1 s (no survivor took them); all of them when `all`. */
static void main_drain(int all)
{
    uint64_t cutoff = now_ms() - 1000;
    hbatch_t *mine = NULL;
    pthread_mutex_lock(&g_hmu);
    mine = g_hand_main;
    g_hand_main = NULL;
    for (hbatch_t **pp = &g_hand_w; *pp;) {
        hbatch_t *h = *pp;
        if (all || h->t < cutoff) {
            *pp = h->next;
            atomic_fetch_sub(&g_hand_w_n, 1);
            h->next = mine;
            mine = h;
        } else {
            pp = &h->next;
        }
    }
    pthread_mutex_unlock(&g_hmu);
    while (mine) {
        hbatch_t *next = mine->next;
        batch_free(mine, "main: free of a block handed over by an exited worker");
        mine = next;
    }
}

static long env_long(const char *name, long def)
{
    const char *s = getenv(name);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end) soak_fail("%s=%s: not a number", name, s);
    return v;
}
static long arg_long(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end) soak_fail("%s '%s': not a number (usage: soak [hakmem] [DURATION_S [RSS_CAP_MB [THREADS]]])", what, s);
    return v;
}

int main(int argc, char **argv)
{
    g_main_pid = getpid();
    g_t0 = now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);

    long dur = env_long("SOAK_SECONDS", 600), cap_mb = env_long("SOAK_RSS_CAP_MB", 2048);
    long thr = env_long("SOAK_THREADS", 4);
    int ai = 1;
    if (ai < argc && !strcmp(argv[ai], "hakmem")) ai++;
    if (ai < argc) dur = arg_long(argv[ai++], "DURATION_S");
    if (ai < argc) cap_mb = arg_long(argv[ai++], "RSS_CAP_MB");
    if (ai < argc) thr = arg_long(argv[ai++], "THREADS");
    if (ai < argc) soak_fail("too many arguments (usage: soak [hakmem] [DURATION_S [RSS_CAP_MB [THREADS]]])");
    g_seed = (uint64_t)env_long("SOAK_SEED", 1);
    g_watchdog_s = (int)env_long("SOAK_WATCHDOG_S", 30);
    g_trim_s = (int)env_long("SOAK_TRIM_S", 30);
    if (dur < 1 || dur > 7 * 24 * 3600) soak_fail("duration %ld s out of range (1 .. 604800)", dur);
    if (cap_mb < 64) soak_fail("RSS cap %ld MiB too small (at least 64)", cap_mb);
    if (thr < 1 || thr > MAX_WORKERS) soak_fail("threads %ld out of range (1 .. %d)", thr, MAX_WORKERS);
    if (g_watchdog_s < 5) soak_fail("SOAK_WATCHDOG_S=%d too small (at least 5)", g_watchdog_s);
    g_duration = (int)dur;
    g_cap_kb = cap_mb * 1024;
    g_nworkers = (int)thr;

    const char *pre = getenv("LD_PRELOAD");
    printf("soak: duration %d s, %d workers, RSS cap %ld MiB, seed %llu, malloc_trim every %d s, "
           "watchdog %d s, LD_PRELOAD=%s\n", g_duration, g_nworkers, cap_mb, (unsigned long long)g_seed,
           g_trim_s, g_watchdog_s, pre && *pre ? pre : "(none)");

    signal(SIGALRM, on_alarm);
    alarm((unsigned)g_duration + 120);

    long *rss = calloc((size_t)g_duration + 1, sizeof *rss);
    long *live = calloc((size_t)g_duration + 1, sizeof *live);
    if (!rss || !live) soak_fail("calloc for the samples failed");

    rng_t r = rng_seed(g_seed * 17 + 3);
    atomic_store(&g_next_fork, g_t0 + 2000);
    atomic_store(&g_main_beat, g_t0);
    atomic_store(&g_churn_beat, g_t0);
    pthread_t wd, churn;
    if (pthread_create(&wd, NULL, watchdog_main, NULL)) soak_fail("pthread_create (watchdog) failed");
    pthread_detach(wd);
    for (int i = 0; i < g_nworkers; i++) start_worker(i, &r);
    atomic_store(&g_churn_running, 1);
    start_thread(&churn, churn_main, NULL, 0);

    uint64_t next_sample = g_t0 + 1000, next_trim = g_t0 + (uint64_t)g_trim_s * 1000;
    int n = 0, trims = 0;
    long cap_hit = 0;
    atomic_store(&g_main_phase, "sampling");
    while (n < g_duration) {
        sleep_ms(50);
        uint64_t now = now_ms();
        atomic_store(&g_main_beat, now);
        for (int i = 0; i < g_nworkers; i++) {
            if (atomic_load(&g_w[i].state) != W_FINISHED) continue;
            if (!g_w[i].detached) {
                atomic_store(&g_main_phase, "joining an exited worker");
                pthread_join(g_w[i].tid, NULL);
            }
            start_worker(i, &r);
        }
        atomic_store(&g_main_phase, "freeing hand-over batches");
        main_drain(0);
        if (g_trim_s > 0 && now >= next_trim) {
            atomic_store(&g_main_phase, "malloc_trim(0)");
            malloc_trim(0);
            trims++;
            next_trim += (uint64_t)g_trim_s * 1000;
        }
        atomic_store(&g_main_phase, "sampling");
        if (now >= next_sample) {
            live_flush();
            rss[n] = rss_kb();
            live[n] = (long)(atomic_load(&g_live) / 1024);
            n++;
            printf("t=%d rss_kb=%ld live_kb=%ld ops=%llu forks=%u threads=%u alive=%d\n", n, rss[n - 1],
                   live[n - 1], (unsigned long long)atomic_load(&g_ops), atomic_load(&g_forks),
                   atomic_load(&g_started), atomic_load(&g_alive));
            if (rss[n - 1] > g_cap_kb) {
                cap_hit = rss[n - 1];
                break;
            }
            next_sample += 1000;
        }
    }

    /* stop everything, free everything */
    atomic_store(&g_stop, 1);
    atomic_store(&g_main_phase, "waiting for the workers to exit");
    for (int i = 0; i < g_nworkers; i++) {
        while (atomic_load(&g_w[i].state) == W_RUNNING) sleep_ms(10);
        if (!g_w[i].detached) pthread_join(g_w[i].tid, NULL);
        atomic_store(&g_w[i].state, W_IDLE);
    }
    atomic_store(&g_main_phase, "joining the churn thread");
    pthread_join(churn, NULL);
    atomic_store(&g_churn_running, 0);
    atomic_store(&g_main_phase, "waiting for the detached short-lived threads");
    while (atomic_load(&g_detached_alive) > 0) sleep_ms(10);
    atomic_store(&g_main_beat, now_ms());
    atomic_store(&g_main_phase, "freeing what is left");
    main_drain(1);
    for (int i = 0; i < NXSMALL; i++) {
        blk_t b;
        if (xfer_take_slot(&g_xsmall[i], &b)) free_blk(&b, "main: free of a block from an exchange slot");
    }
    for (int i = 0; i < NXBIG; i++) {
        blk_t b;
        if (xfer_take_slot(&g_xbig[i], &b)) free_blk(&b, "main: free of a block from an exchange slot");
    }
    live_flush();
    long long left = atomic_load(&g_live);
    long rss_end = rss_kb();
    malloc_trim(0);
    long rss_trim = rss_kb();
    atomic_store(&g_main_phase, "verdict");
    atomic_store(&g_main_beat, now_ms());

    /* verdict */
    long rss_max = 0, live_max = 0;
    for (int i = 0; i < n; i++) {
        if (rss[i] > rss_max) rss_max = rss[i];
        if (live[i] > live_max) live_max = live[i];
    }
    int a = n / 3, b = 2 * n / 3;
    long mid = n >= 6 ? median(rss, a, b) : 0, last = n >= 6 ? median(rss, b, n) : 0;
    long lmid = n >= 6 ? median(live, a, b) : 0, llast = n >= 6 ? median(live, b, n) : 0;
    long limit = mid + mid / 4 + 16384, llimit = lmid + lmid / 4 + 16384;
    double slope = slope_per_min(rss, a, n);
    printf("summary samples=%d rss_mid_median_kb=%ld rss_last_median_kb=%ld rss_limit_kb=%ld rss_max_kb=%ld "
           "rss_final_kb=%ld rss_freed_kb=%ld rss_trimmed_kb=%ld live_mid_median_kb=%ld live_last_median_kb=%ld "
           "live_max_kb=%ld rss_slope_kb_per_min=%.0f ops=%llu forks=%u threads=%u trims=%d\n",
           n, mid, last, limit, rss_max, n ? rss[n - 1] : 0, rss_end, rss_trim, lmid, llast, live_max, slope,
           (unsigned long long)atomic_load(&g_ops), atomic_load(&g_forks), atomic_load(&g_started), trims);
    if (n >= 6)
        printf("RSS median: middle third (t=%d..%d) %ld kB, last third (t=%d..%d) %ld kB, limit 1.25 x middle + "
               "16 MiB = %ld kB; slope over the last two thirds %+.0f kB/min; live median %ld -> %ld kB\n",
               a + 1, b, mid, b + 1, n, last, limit, slope, lmid, llast);
    else
        printf("only %d samples: RSS trend not judged (needs at least 6)\n", n);

    if (cap_hit)
        soak_fail("RSS %ld kB at t=%d s exceeds the cap of %ld kB (live data %ld kB)", cap_hit, n, g_cap_kb,
                  live[n - 1]);
    if (left != 0)
        soak_fail("test accounting: %lld bytes still counted live after everything was freed (a bug of soak.c)",
                  left);
    if (n >= 6 && llast > llimit)
        soak_fail("the live set itself grew: median %ld kB (middle third) -> %ld kB (last third), limit %ld kB "
                  "(a bug of soak.c: the run proves nothing)", lmid, llast, llimit);
    if (n >= 6 && last > limit)
        soak_fail("RSS keeps rising: median of the last third %ld kB > 1.25 x median of the middle third "
                  "(%ld kB) + 16 MiB = %ld kB, while the live data stayed at %ld -> %ld kB "
                  "(slope %+.0f kB/min; max %ld kB)", last, mid, limit, lmid, llast, slope, rss_max);
    printf("PASS soak\n");
    return 0;
}

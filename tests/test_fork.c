/*
 * test_fork.c — fork() from a multi-threaded process that allocates hard.
 *
 * Worker threads allocate, free, realloc and exchange blocks (lock-free slots,
 * so frees cross threads) without pause.  The main thread forks ~50 times
 * meanwhile.  Each child:
 *   - verifies and frees blocks the parent's main thread allocated before the
 *     fork, blocks the worker threads allocated before the fork, and the blocks
 *     sitting in the exchange slots at the moment of the fork;
 *   - runs its own malloc/free loop, creates threads that allocate and whose
 *     blocks it frees (and vice versa);
 *   - forks a grandchild that allocates, creates a thread and exits 0;
 *   - exits 0.
 * The parent checks every status.  alarm() watchdogs turn a deadlock (e.g. an
 * allocator lock held by a worker at fork time) into a failure, not a hang.
 *
 * Usage: test_fork [hakmem] (argument ignored).
 */
#define TEST_NAME "test_fork"
#include "test_common.h"
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

/* 16 B .. 64 KiB mostly, sometimes large (300 KiB .. 2 MiB). */
static size_t rand_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 200);
    x >>= 8;
    if (pick < 140) return 16 + x % 1009;
    if (pick < 195) return 1024 + x % (63 * KiB);
    if (pick < 199) return 64 * KiB + x % (200 * KiB);
    return 300 * KiB + x % (1748 * KiB);
}

/* Blocks carry their size in the first word; the rest is a pattern derived
 * from address and size.  Only the first and last 256 bytes are patterned to
 * keep the large blocks cheap. */
static inline unsigned char addr_pat(const void *p, size_t n, size_t i)
{
    uint64_t h = ((uint64_t)(uintptr_t)p ^ n * 0x9E3779B97F4A7C15ull) + i * 0xA0761D6478BD642Full;
    return (unsigned char)(h >> 56 ^ h >> 13);
}
static void *new_block(size_t n)
{
    unsigned char *p = malloc(n);
    CHECK(p != NULL, "malloc(%zu) failed", n);
    CHECK(is_aligned(p, 16), "malloc(%zu) = %p misaligned", n, (void *)p);
    memcpy(p, &n, sizeof n);
    for (size_t i = 8; i < n && i < 256; i++) p[i] = addr_pat(p, n, i);
    for (size_t i = n >= 512 ? n - 256 : 256; i < n; i++) p[i] = addr_pat(p, n, i);
    return p;
}
static void free_block(void *v)
{
    unsigned char *p = v;
    size_t n;
    memcpy(&n, p, sizeof n);
    CHECK(n >= 16 && n < 8 * 1024 * KiB, "block %p has bad size header %zu", v, n);
    for (size_t i = 8; i < n && i < 256; i++)
        CHECK(p[i] == addr_pat(p, n, i), "block %p (%zu) corrupted at %zu", v, n, i);
    for (size_t i = n >= 512 ? n - 256 : 256; i < n; i++)
        CHECK(p[i] == addr_pat(p, n, i), "block %p (%zu) corrupted at %zu", v, n, i);
    free(p);
}

/* ------------------------------------------------------------------------- */
/* worker threads of the parent                                              */

enum { WORKERS = 2, WSET = 256, WPRE = 64, XSLOTS = 64, FORKS = 50, PARENT_PRE = 300 };
static atomic_int stop_workers;
static atomic_int workers_ready;
static _Atomic(void *) xslot[XSLOTS];     /* exchange slots: cross-thread frees */
static void *worker_pre[WORKERS][WPRE];  /* allocated by workers before any fork */
static void *parent_pre[PARENT_PRE];     /* allocated by main before any fork */
static atomic_long worker_ops;

static void *worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    rng_t r = rng_seed(100 + id);
    for (int i = 0; i < WPRE; i++) worker_pre[id][i] = new_block(rand_size(&r));
    atomic_fetch_add(&workers_ready, 1);

    void *set[WSET] = { 0 };
    long ops = 0;
    while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
        int i = (int)(rnd(&r) % WSET);
        uint64_t act = rnd(&r) % 16;
        if (act == 0 && set[i]) {
            /* swap into an exchange slot; free what was there (another thread's block) */
            void *old = atomic_exchange(&xslot[rnd(&r) % XSLOTS], set[i]);
            set[i] = NULL;
            if (old) free_block(old);
        } else if (act == 1 && set[i]) {
            /* realloc: keep the header/pattern valid by re-creating it */
            size_t n = rand_size(&r);
            void *q = realloc(set[i], n);
            CHECK(q != NULL, "realloc to %zu failed", n);
            free(q);
            set[i] = new_block(rand_size(&r));
        } else {
            if (set[i]) free_block(set[i]);
            set[i] = new_block(rand_size(&r));
        }
        ops++;
    }
    for (int i = 0; i < WSET; i++)
        if (set[i]) free_block(set[i]);
    atomic_fetch_add(&worker_ops, ops);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* child / grandchild work                                                   */

static void churn(uint64_t seed, int ops)
{
    rng_t r = rng_seed(seed);
    enum { S = 64 };
    void *set[S] = { 0 };
    for (int k = 0; k < ops; k++) {
        int i = (int)(rnd(&r) % S);
        if (set[i]) free_block(set[i]);
        set[i] = new_block(rand_size(&r));
    }
    for (int i = 0; i < S; i++)
        if (set[i]) free_block(set[i]);
}

enum { CT_BLOCKS = 500 };
typedef struct { uint64_t seed; void *give[CT_BLOCKS]; void **take; } child_thread_arg;

/* Thread in the child: frees blocks handed to it by the child's main thread,
 * churns, and allocates blocks the child's main thread frees after join. */
static void *child_thread(void *v)
{
    child_thread_arg *a = v;
    for (int i = 0; i < CT_BLOCKS; i++)
        if (a->take[i]) free_block(a->take[i]);
    churn(a->seed, 1000);
    rng_t r = rng_seed(a->seed + 1);
    for (int i = 0; i < CT_BLOCKS; i++) a->give[i] = new_block(rand_size(&r) % 4096 + 16);
    return NULL;
}

static void *grandchild_thread(void *v)
{
    churn((uint64_t)(uintptr_t)v, 1000);
    return new_block(1000); /* freed by the grandchild's main thread */
}

static void grandchild(int iter)
{
    test_who = "grandchild";
    alarm(20); /* SIGALRM disposition already reset by child() */
    churn(9000 + (uint64_t)iter, 2000);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, grandchild_thread, (void *)(uintptr_t)iter) == 0, "pthread_create");
    void *b;
    pthread_join(t, &b);
    free_block(b);
    exit(0);
}

static void child(int iter, void **fresh, int nfresh)
{
    test_who = "child";
    signal(SIGALRM, SIG_DFL); /* not the parent's handler: SIGALRM kills us, */
    alarm(20);                /* and the parent reports the signal            */

    /* free what the parent's main thread and worker threads allocated pre-fork */
    for (int i = 0; i < PARENT_PRE; i++) free_block(parent_pre[i]);
    for (int w = 0; w < WORKERS; w++)
        for (int i = 0; i < WPRE; i++) free_block(worker_pre[w][i]);
    for (int i = 0; i < nfresh; i++) free_block(fresh[i]);
    /* blocks that were in flight between workers at the moment of the fork */
    for (int i = 0; i < XSLOTS; i++) {
        void *b = atomic_exchange(&xslot[i], NULL);
        if (b) free_block(b);
    }

    churn(5000 + (uint64_t)iter, 2000);

    /* threads in the child, with frees in both directions */
    enum { CT = 2 };
    static child_thread_arg args[CT];
    static void *take[CT][CT_BLOCKS];
    pthread_t t[CT];
    rng_t r = rng_seed(7000 + (uint64_t)iter);
    for (int k = 0; k < CT; k++) {
        for (int i = 0; i < CT_BLOCKS; i++) take[k][i] = new_block(rand_size(&r));
        args[k].seed = 8000 + (uint64_t)iter * 10 + (uint64_t)k;
        args[k].take = take[k];
        CHECK(pthread_create(&t[k], NULL, child_thread, &args[k]) == 0, "pthread_create in child");
    }
    for (int k = 0; k < CT; k++) {
        pthread_join(t[k], NULL);
        for (int i = 0; i < CT_BLOCKS; i++) free_block(args[k].give[i]);
    }

    /* fork again from the (now multi-threaded-history) child */
    fflush(NULL);
    pid_t g = fork();
    CHECK(g >= 0, "fork of grandchild failed");
    if (g == 0) grandchild(iter);
    int st;
    CHECK(waitpid(g, &st, 0) == g, "waitpid(grandchild)");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "grandchild status 0x%x (signal %d)", st,
          WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    exit(0);
}

int main(void)
{
    test_who = "parent"; /* "child" / "grandchild" in forked processes */
    watchdog_arm(90);

    rng_t r = rng_seed(1);
    for (int i = 0; i < PARENT_PRE; i++) parent_pre[i] = new_block(rand_size(&r));

    pthread_t w[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&w[i], NULL, worker, (void *)i) == 0, "pthread_create");
    while (atomic_load(&workers_ready) < WORKERS) usleep(1000);

    for (int iter = 0; iter < FORKS; iter++) {
        enum { FRESH = 20 };
        void *fresh[FRESH];
        for (int i = 0; i < FRESH; i++) fresh[i] = new_block(rand_size(&r));
        usleep(2000); /* let the workers get going again */
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed");
        if (pid == 0) child(iter, fresh, FRESH);
        int st;
        CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
        if (WIFSIGNALED(st))
            fail(__LINE__, "fork #%d: child killed by signal %d%s", iter, WTERMSIG(st),
                 WTERMSIG(st) == SIGALRM ? " (watchdog: deadlock in child)" : "");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork #%d: child exit status %d", iter, WEXITSTATUS(st));
        for (int i = 0; i < FRESH; i++) free_block(fresh[i]);
    }

    atomic_store(&stop_workers, 1);
    for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
    for (int i = 0; i < XSLOTS; i++) {
        void *b = atomic_exchange(&xslot[i], NULL);
        if (b) free_block(b);
    }
    for (int i = 0; i < PARENT_PRE; i++) free_block(parent_pre[i]);
    for (int k = 0; k < WORKERS; k++)
        for (int i = 0; i < WPRE; i++) free_block(worker_pre[k][i]);
    CHECK(atomic_load(&worker_ops) > 0, "workers did no work");
    return test_finish("check");
}

/*
 * test_threads.c — multi-threaded allocation, cross-thread frees, thread exit.
 *
 *   A. producer/consumer: producer threads allocate blocks of random sizes
 *      (8 B .. 64 KiB), fill them with a pattern derived from address and size,
 *      and pass them through a mutex-protected queue to consumer threads which
 *      verify the pattern and free them.  Every thread also allocates and frees
 *      locally.
 *   B. thousands of short-lived threads (some detached, some joined), each doing
 *      a few hundred malloc/free and handing some blocks to the main thread,
 *      which frees them after the thread has exited.
 *   C. orphaned blocks: threads allocate, free half, exit; other threads (and
 *      main) free the rest afterwards while new threads allocate.
 *   D. thread teardown: pthread_key, C11 tss and __thread (via
 *      __cxa_thread_atexit_impl, as C++ thread_local uses) destructors that call
 *      malloc/free, re-arm keys for further destructor rounds, and hand blocks to
 *      other threads; a thread whose first malloc happens inside a destructor.
 *
 * Fixed seeds; bounded work.  Usage: test_threads [hakmem] (argument ignored).
 */
#define TEST_NAME "test_threads"
#include "test_common.h"
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <threads.h>

/* Random size in 8 B .. 64 KiB, skewed towards small blocks. */
static size_t rand_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 100);
    x >>= 8;
    if (pick < 70) return 8 + x % (1024 - 8 + 1);
    if (pick < 95) return 1024 + x % (16 * KiB - 1024 + 1);
    return 16 * KiB + x % (48 * KiB + 1);
}

/* Pattern: 64-bit words derived from the block address and size, so a block
 * that is handed out twice, overlaps another, or is corrupted is detected. */
static inline uint64_t pat_word(const void *p, size_t n, size_t k)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0xD6E8FEB86659FD93ull ^ (uint64_t)n * 0x9E3779B97F4A7C15ull;
    return h + (uint64_t)k * 0xA0761D6478BD642Full;
}
static void addr_fill(void *p, size_t n)
{
    unsigned char *b = p;
    size_t words = n / 8;
    for (size_t k = 0; k < words; k++) {
        uint64_t w = pat_word(p, n, k);
        memcpy(b + 8 * k, &w, 8);
    }
    for (size_t i = words * 8; i < n; i++) b[i] = (unsigned char)(pat_word(p, n, i) >> 56);
}
/* Returns 1 if the block holds the pattern addr_fill() wrote. */
static int addr_check(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t words = n / 8;
    for (size_t k = 0; k < words; k++) {
        uint64_t w;
        memcpy(&w, b + 8 * k, 8);
        if (w != pat_word(p, n, k)) return 0;
    }
    for (size_t i = words * 8; i < n; i++)
        if (b[i] != (unsigned char)(pat_word(p, n, i) >> 56)) return 0;
    return 1;
}
/* Allocate, check alignment and size, fill. */
static void *alloc_fill(size_t n)
{
    void *p = malloc(n);
    CHECK(p != NULL, "malloc(%zu) failed", n);
    CHECK(is_aligned(p, min_align(n)), "malloc(%zu) = %p misaligned", n, p);
    CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(%p) < %zu", p, n);
    addr_fill(p, n);
    return p;
}
static void check_free(void *p, size_t n)
{
    CHECK(addr_check(p, n), "block %p (%zu bytes) corrupted", p, n);
    free(p);
}

/* A small per-thread working set: random replace, exercising local free. */
enum { LOCAL = 64 };
typedef struct { void *p[LOCAL]; size_t n[LOCAL]; } local_t;
static void local_step(local_t *l, rng_t *r)
{
    int i = (int)(rnd(r) % LOCAL);
    if (l->p[i]) check_free(l->p[i], l->n[i]);
    l->n[i] = rand_size(r);
    l->p[i] = alloc_fill(l->n[i]);
}
static void local_clear(local_t *l)
{
    for (int i = 0; i < LOCAL; i++)
        if (l->p[i]) { check_free(l->p[i], l->n[i]); l->p[i] = NULL; }
}

/* ------------------------------------------------------------------------- */
/* A. producer / consumer                                                    */

enum { NPROD = 3, NCONS = 3, PER_PROD = 25000, QCAP = 4096, BATCH = 32 };
typedef struct { void *p; size_t n; } item_t;
static struct {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    item_t ring[QCAP];
    size_t head, count;
    int producers_left;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, { { 0, 0 } }, 0, 0, NPROD };
static atomic_long consumed;

static void q_push(const item_t *it, int k)
{
    pthread_mutex_lock(&q.mu);
    while (q.count + (size_t)k > QCAP) pthread_cond_wait(&q.not_full, &q.mu);
    for (int i = 0; i < k; i++) q.ring[(q.head + q.count++) % QCAP] = it[i];
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.mu);
}
/* Pops up to BATCH items; returns 0 when the queue is drained and closed. */
static int q_pop(item_t *out)
{
    pthread_mutex_lock(&q.mu);
    while (q.count == 0 && q.producers_left > 0) pthread_cond_wait(&q.not_empty, &q.mu);
    int k = 0;
    while (q.count > 0 && k < BATCH) {
        out[k++] = q.ring[q.head];
        q.head = (q.head + 1) % QCAP;
        q.count--;
    }
    pthread_cond_broadcast(&q.not_full);
    pthread_mutex_unlock(&q.mu);
    return k;
}

static void *producer(void *arg)
{
    rng_t r = rng_seed(1000 + (uintptr_t)arg);
    local_t l = { { 0 }, { 0 } };
    item_t batch[BATCH];
    int k = 0;
    for (int i = 0; i < PER_PROD; i++) {
        batch[k].n = rand_size(&r);
        batch[k].p = alloc_fill(batch[k].n);
        if (++k == BATCH) { q_push(batch, k); k = 0; }
        if ((i & 3) == 0) local_step(&l, &r);
    }
    if (k) q_push(batch, k);
    local_clear(&l);
    pthread_mutex_lock(&q.mu);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

static void *consumer(void *arg)
{
    rng_t r = rng_seed(2000 + (uintptr_t)arg);
    local_t l = { { 0 }, { 0 } };
    item_t batch[BATCH];
    int k;
    long n = 0;
    while ((k = q_pop(batch)) > 0) {
        for (int i = 0; i < k; i++) {
            check_free(batch[i].p, batch[i].n);
            if ((++n & 3) == 0) local_step(&l, &r);
        }
    }
    local_clear(&l);
    atomic_fetch_add(&consumed, n);
    return NULL;
}

static void test_producer_consumer(void)
{
    pthread_t t[NPROD + NCONS];
    for (uintptr_t i = 0; i < NCONS; i++)
        CHECK(pthread_create(&t[i], NULL, consumer, (void *)i) == 0, "pthread_create");
    for (uintptr_t i = 0; i < NPROD; i++)
        CHECK(pthread_create(&t[NCONS + i], NULL, producer, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < NPROD + NCONS; i++) pthread_join(t[i], NULL);
    CHECK(atomic_load(&consumed) == (long)NPROD * PER_PROD, "consumed %ld blocks, want %ld",
          atomic_load(&consumed), (long)NPROD * PER_PROD);
}

/* ------------------------------------------------------------------------- */
/* Hand-off list: blocks given to the main thread (or anyone) to free later. */

typedef struct { pthread_mutex_t mu; item_t *v; size_t len, cap; } handoff_t;
static handoff_t handoff = { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 };

static void handoff_put(void *p, size_t n)
{
    pthread_mutex_lock(&handoff.mu);
    if (handoff.len == handoff.cap) {
        size_t cap = handoff.cap ? handoff.cap * 2 : 1024;
        item_t *v = realloc(handoff.v, cap * sizeof *v);
        CHECK(v != NULL, "realloc of hand-off list failed");
        handoff.v = v;
        handoff.cap = cap;
    }
    handoff.v[handoff.len].p = p;
    handoff.v[handoff.len].n = n;
    handoff.len++;
    pthread_mutex_unlock(&handoff.mu);
}
/* Verifies and frees every handed-off block; returns how many. */
static size_t handoff_drain(void)
{
    pthread_mutex_lock(&handoff.mu);
    size_t n = handoff.len;
    for (size_t i = 0; i < n; i++) check_free(handoff.v[i].p, handoff.v[i].n);
    handoff.len = 0;
    pthread_mutex_unlock(&handoff.mu);
    return n;
}

/* ------------------------------------------------------------------------- */
/* B. many short-lived threads                                               */

enum { SHORT_THREADS = 4000, WAVE = 8, SHORT_OPS = 300, SHORT_HANDOFF = 3 };
static pthread_mutex_t wave_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wave_cv = PTHREAD_COND_INITIALIZER;
static int wave_running;

static void *short_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    rng_t r = rng_seed(30000 + id);
    enum { S = 16 };
    void *p[S] = { 0 };
    size_t n[S] = { 0 };
    for (int op = 0; op < SHORT_OPS; op++) {
        int i = (int)(rnd(&r) % S);
        if (p[i]) check_free(p[i], n[i]);
        uint64_t x = rnd(&r);
        n[i] = (x & 31) == 0 ? rand_size(&r) : 8 + (x >> 8) % 512;
        p[i] = alloc_fill(n[i]);
    }
    /* Keep SHORT_HANDOFF blocks alive past our exit: main frees them. */
    for (int i = 0; i < S; i++) {
        if (!p[i]) continue;
        if (i < SHORT_HANDOFF) handoff_put(p[i], n[i]);
        else check_free(p[i], n[i]);
    }
    pthread_mutex_lock(&wave_mu);
    wave_running--;
    pthread_cond_broadcast(&wave_cv);
    pthread_mutex_unlock(&wave_mu);
    return NULL;
}

static void test_short_lived(void)
{
    pthread_attr_t detached;
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
    size_t freed = 0;
    for (int base = 0; base < SHORT_THREADS; base += WAVE) {
        pthread_t t[WAVE];
        int joinable[WAVE];
        pthread_mutex_lock(&wave_mu);
        wave_running += WAVE;
        pthread_mutex_unlock(&wave_mu);
        for (int i = 0; i < WAVE; i++) {
            uintptr_t id = (uintptr_t)(base + i);
            joinable[i] = (id % 3) != 0; /* every third thread is detached */
            int rc = pthread_create(&t[i], joinable[i] ? NULL : &detached, short_thread, (void *)id);
            CHECK(rc == 0, "pthread_create #%lu: %d", (unsigned long)id, rc);
        }
        for (int i = 0; i < WAVE; i++)
            if (joinable[i]) pthread_join(t[i], NULL);
        /* wait for the detached ones to finish their work */
        pthread_mutex_lock(&wave_mu);
        while (wave_running > 0) pthread_cond_wait(&wave_cv, &wave_mu);
        pthread_mutex_unlock(&wave_mu);
        /* free the blocks the (now exited or exiting) threads left behind,
         * but only every few waves so blocks outlive their owners a while */
        if ((base / WAVE) % 4 == 3) freed += handoff_drain();
    }
    freed += handoff_drain();
    pthread_attr_destroy(&detached);
    CHECK(freed == (size_t)SHORT_THREADS * SHORT_HANDOFF, "freed %zu handed-off blocks, want %zu",
          freed, (size_t)SHORT_THREADS * SHORT_HANDOFF);
}

/* ------------------------------------------------------------------------- */
/* C. blocks freed by other threads after their owner exited                 */

enum { OWNERS = 4, OWNED = 3000, FREERS = 3 };
static item_t orphans[OWNERS][OWNED];

static void *owner_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    rng_t r = rng_seed(40000 + id);
    for (int i = 0; i < OWNED; i++) {
        uint64_t x = rnd(&r);
        /* mostly small/mid, a few large (300 KiB .. 1.3 MiB) blocks */
        size_t n = (x % 97) == 0 ? 300 * KiB + (x >> 16) % (1024 * KiB) : rand_size(&r);
        orphans[id][i].n = n;
        orphans[id][i].p = alloc_fill(n);
    }
    /* free every other block locally, leave the rest to other threads */
    for (int i = 0; i < OWNED; i += 2) {
        check_free(orphans[id][i].p, orphans[id][i].n);
        orphans[id][i].p = NULL;
    }
    return NULL;
}

static void *freer_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    rng_t r = rng_seed(50000 + id);
    local_t l = { { 0 }, { 0 } };
    /* freer k frees blocks i with i/2 % (FREERS+1) == k from every owner;
     * the share with k == FREERS is left for the main thread */
    for (int i = 1; i < OWNED; i += 2) {
        for (int o = 0; o < OWNERS; o++) {
            if ((uintptr_t)((i / 2) % (FREERS + 1)) != id) continue;
            check_free(orphans[o][i].p, orphans[o][i].n);
            orphans[o][i].p = NULL;
            local_step(&l, &r); /* allocate while freeing: reuse orphaned space */
        }
    }
    local_clear(&l);
    return NULL;
}

static void *reuse_thread(void *arg)
{
    rng_t r = rng_seed(60000 + (uintptr_t)arg);
    local_t l = { { 0 }, { 0 } };
    for (int i = 0; i < 5000; i++) local_step(&l, &r);
    local_clear(&l);
    return NULL;
}

static void test_orphans(void)
{
    pthread_t t[OWNERS > FREERS ? OWNERS : FREERS];
    for (uintptr_t i = 0; i < OWNERS; i++)
        CHECK(pthread_create(&t[i], NULL, owner_thread, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < OWNERS; i++) pthread_join(t[i], NULL);
    /* all owners have exited now */
    for (uintptr_t i = 0; i < FREERS; i++)
        CHECK(pthread_create(&t[i], NULL, freer_thread, (void *)i) == 0, "pthread_create");
    for (int i = 1; i < OWNED; i += 2) /* main's share, concurrently with the freers */
        for (int o = 0; o < OWNERS; o++)
            if ((i / 2) % (FREERS + 1) == FREERS) {
                check_free(orphans[o][i].p, orphans[o][i].n);
                orphans[o][i].p = NULL;
            }
    for (int i = 0; i < FREERS; i++) pthread_join(t[i], NULL);
    for (int o = 0; o < OWNERS; o++)
        for (int i = 0; i < OWNED; i++)
            CHECK(orphans[o][i].p == NULL, "orphan %d/%d not freed", o, i);
    /* fresh threads reuse the memory the orphans occupied */
    for (uintptr_t i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, reuse_thread, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
}

/* ------------------------------------------------------------------------- */
/* D. destructors at thread exit that allocate and free                       */

extern int __cxa_thread_atexit_impl(void (*func)(void *), void *obj, void *dso_symbol);
extern void *__dso_handle;

enum { DTOR_THREADS = 300, KEY_ROUNDS = 3 };
static pthread_key_t key_a, key_b;
static tss_t tss_c;
static atomic_int key_a_runs, key_b_runs, tss_runs, tls_runs, late_init_runs;
static __thread void *tls_block;   /* freed by a __cxa_thread_atexit destructor */
static __thread size_t tls_len;
static __thread int key_a_round;

/* Churn a little inside a destructor. */
static void dtor_churn(uint64_t seed, int handoff_one)
{
    rng_t r = rng_seed(seed);
    void *p[8];
    size_t n[8];
    for (int i = 0; i < 8; i++) { n[i] = rand_size(&r); p[i] = alloc_fill(n[i]); }
    for (int i = 0; i < 8; i++) {
        if (handoff_one && i == 0) handoff_put(p[i], n[i]); /* freed by main later */
        else check_free(p[i], n[i]);
    }
}

/* value layout: first word = length, rest pattern-filled */
static void *make_value(size_t n)
{
    size_t *v = alloc_fill(n);
    v[0] = n;
    return v;
}
static void free_value(void *p)
{
    size_t n = ((size_t *)p)[0];
    ((size_t *)p)[0] = (size_t)pat_word(p, n, 0); /* restore word 0 of the pattern */
    check_free(p, n);
}

static void key_a_dtor(void *v)
{
    atomic_fetch_add(&key_a_runs, 1);
    free_value(v);
    dtor_churn((uint64_t)(uintptr_t)v, 1);
    /* re-arm: glibc runs destructors again (up to PTHREAD_DESTRUCTOR_ITERATIONS) */
    if (++key_a_round < KEY_ROUNDS) pthread_setspecific(key_a, make_value(64 + 100 * (size_t)key_a_round));
}
static void key_b_dtor(void *v)
{
    atomic_fetch_add(&key_b_runs, 1);
    free_value(v);
    void *big = alloc_fill(200 * KiB); /* a mid/large allocation during teardown */
    check_free(big, 200 * KiB);
}
static void tss_dtor(void *v)
{
    atomic_fetch_add(&tss_runs, 1);
    free_value(v);
    dtor_churn((uint64_t)(uintptr_t)v ^ 77, 0);
}
static void tls_dtor(void *unused)
{
    (void)unused;
    atomic_fetch_add(&tls_runs, 1);
    check_free(tls_block, tls_len);
    tls_block = NULL;
    dtor_churn((uint64_t)(uintptr_t)&tls_block, 1);
}

static void *dtor_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    /* register the TLS destructor first, before any malloc of ours */
    __cxa_thread_atexit_impl(tls_dtor, NULL, &__dso_handle);
    tls_len = 24 + id % 5000;
    tls_block = alloc_fill(tls_len);
    pthread_setspecific(key_a, make_value(32 + id % 300));
    pthread_setspecific(key_b, make_value(16 + id % 3000));
    CHECK(tss_set(tss_c, make_value(100 + id % 70000)) == thrd_success, "tss_set");
    rng_t r = rng_seed(70000 + id);
    local_t l = { { 0 }, { 0 } };
    for (int i = 0; i < 50; i++) local_step(&l, &r);
    local_clear(&l);
    return NULL;
}

/* A thread that never calls malloc itself: the first allocation of this
 * thread happens inside its key destructor, during thread teardown. */
static pthread_key_t key_late;
static int late_marker;
static void key_late_dtor(void *v)
{
    atomic_fetch_add(&late_init_runs, 1);
    dtor_churn((uint64_t)(uintptr_t)v, 1);
}
static void *late_thread(void *arg)
{
    (void)arg;
    pthread_setspecific(key_late, &late_marker);
    return NULL;
}

static void main_tls_dtor(void *unused)
{
    (void)unused;
    /* runs during exit() of the main thread */
    void *p = alloc_fill(1000);
    check_free(p, 1000);
}

static void test_destructors(void)
{
    CHECK(pthread_key_create(&key_a, key_a_dtor) == 0, "pthread_key_create");
    CHECK(pthread_key_create(&key_b, key_b_dtor) == 0, "pthread_key_create");
    CHECK(pthread_key_create(&key_late, key_late_dtor) == 0, "pthread_key_create");
    CHECK(tss_create(&tss_c, tss_dtor) == thrd_success, "tss_create");
    enum { PAR = 6 };
    for (int base = 0; base < DTOR_THREADS; base += PAR) {
        pthread_t t[PAR], u;
        for (int i = 0; i < PAR; i++)
            CHECK(pthread_create(&t[i], NULL, dtor_thread, (void *)(uintptr_t)(base + i)) == 0, "pthread_create");
        CHECK(pthread_create(&u, NULL, late_thread, NULL) == 0, "pthread_create");
        for (int i = 0; i < PAR; i++) pthread_join(t[i], NULL);
        pthread_join(u, NULL);
        handoff_drain();
    }
    int n = DTOR_THREADS / PAR * PAR;
    CHECK(atomic_load(&tls_runs) == n, "TLS destructor ran %d times, want %d", atomic_load(&tls_runs), n);
    CHECK(atomic_load(&key_a_runs) == n * KEY_ROUNDS, "key_a destructor ran %d times, want %d",
          atomic_load(&key_a_runs), n * KEY_ROUNDS);
    CHECK(atomic_load(&key_b_runs) == n, "key_b destructor ran %d times", atomic_load(&key_b_runs));
    CHECK(atomic_load(&tss_runs) == n, "tss destructor ran %d times", atomic_load(&tss_runs));
    CHECK(atomic_load(&late_init_runs) == DTOR_THREADS / PAR, "late destructor ran %d times",
          atomic_load(&late_init_runs));
    __cxa_thread_atexit_impl(main_tls_dtor, NULL, &__dso_handle);
}

int main(void)
{
    test_producer_consumer();
    test_short_lived();
    test_orphans();
    test_destructors();
    handoff_drain();
    free(handoff.v);
    return test_finish("check");
}

/* mstress: many threads passing blocks around, with thread churn (in the spirit of
 * mimalloc's stress test).
 *
 * A shared table of threads*SLICE slots holds pointers to live blocks; thread slot i
 * "keeps" slice i of it.  Each step of a thread allocates a new block, with a skewed size
 * (90% 16..255 B, 9.9% 256 B..64 KiB, both log-uniform; 0.1% 512 KiB..1 MiB), and:
 *   - 1 step in RETAIN_ONE_IN: puts it in the thread slot's private retained set (RETAIN
 *     entries), freeing the block it replaces; retained blocks live for tens of thousands
 *     of steps and are inherited by the next thread of the slot;
 *   - otherwise: atomically exchanges it into a table slot (3 times in 4 one of its own
 *     slice, else any slot of the table) and frees the block it got back, which may have
 *     been allocated by another thread, maybe one that has already exited.
 * Blocks are self-describing (size and key in a checked 16-byte header, the rest stamped),
 * so whichever thread frees one can verify it first.
 * The run has `rounds` rounds; in each, every thread slot does `scale` steps.  A thread
 * lives 1..3 rounds (drawn from the seed); when it exits, a new thread takes over its slot
 * at the next round (thread churn: at the default, about half the slots get a new thread
 * every round).  At the end the main thread checks and frees everything still live.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads  concurrent threads (table slices), 1..1024
 *   scale    steps per thread per round
 *   rounds   rounds
 *   seed     PRNG seed
 * Defaults: 2 150000 30 1.
 *
 * Metric: ops_per_sec = steps (one malloc + at most one free each) per second, all
 * threads, over all rounds including thread creation/exit; the final cleanup is untimed. */
#include "bench_common.h"
#include <pthread.h>

#define SLICE 1024u       /* table slots per thread slot */
#define RETAIN 256u       /* retained blocks per thread slot */
#define RETAIN_ONE_IN 256u

typedef struct {
    _Alignas(64) uint64_t rng;  /* carried from one thread of the slot to the next */
    void *retained[RETAIN];
    uint64_t steps;
    uint32_t id;
    uint32_t first_round;       /* first and last round of the slot's current thread */
    uint32_t last_round;
    pthread_t tid;
} tslot_t;

static _Atomic(void *) *g_table;
static uint32_t g_nslots; /* threads */
static uint64_t g_scale;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_go = PTHREAD_COND_INITIALIZER, g_done = PTHREAD_COND_INITIALIZER;
static uint32_t g_round;  /* round released by main (1-based), protected by g_mu */
static uint32_t g_ndone;  /* slots done with g_round, protected by g_mu */

/* ---- self-describing blocks: header {size<<32|key, mix(header^addr)}, then stamped ---- */

static inline void *sd_new(uint32_t n, uint32_t key)
{
    unsigned char *p = xmalloc(n);
    uint64_t meta = ((uint64_t)n << 32) | key;
    uint64_t chk = mix64(meta ^ (uint64_t)(uintptr_t)p);
    memcpy(p, &meta, 8);
    memcpy(p + 8, &chk, 8);
    if (n > 16)
        stamp(p + 16, n - 16, key);
    return p;
}

static inline void sd_free(void *q, const char *where)
{
    unsigned char *p = q;
    uint64_t meta, chk;
    if ((uintptr_t)p & 15)
        fail("misaligned block %p (%s)", q, where);
    memcpy(&meta, p, 8);
    memcpy(&chk, p + 8, 8);
    if (chk != mix64(meta ^ (uint64_t)(uintptr_t)p))
        fail("corrupted header of block %p (%s)", q, where);
    uint32_t n = (uint32_t)(meta >> 32);
    if (n > 16)
        check(p + 16, n - 16, (uint32_t)meta, where);
    free(p);
}

/* skewed size: 90% 16..255, 9.9% 256..65535 (log-uniform), 0.1% 512 KiB..1 MiB */
static inline uint32_t draw_size(uint64_t *rng)
{
    uint32_t p = rng_below(rng, 1000);
    if (p == 0)
        return (512u << 10) + rng_below(rng, (512u << 10) + 1);
    unsigned s = p < 100 ? 8 + rng_below(rng, 8) : 4 + rng_below(rng, 4);
    return (1u << s) + rng_below(rng, 1u << s);
}

static void *worker(void *arg)
{
    tslot_t *ts = arg;
    uint64_t rng = ts->rng;
    const uint32_t total = g_nslots * SLICE;
    _Atomic(void *) *mine = g_table + (size_t)ts->id * SLICE;
    for (uint32_t round = ts->first_round;; round++) {
        pthread_mutex_lock(&g_mu);
        while (g_round < round)
            pthread_cond_wait(&g_go, &g_mu);
        pthread_mutex_unlock(&g_mu);
        for (uint64_t i = 0; i < g_scale; i++) {
            uint64_t r = rng_next(&rng);
            void *nb = sd_new(draw_size(&rng), (uint32_t)r);
            void *old;
            if ((r >> 32) % RETAIN_ONE_IN == 0) {
                uint32_t j = rng_below(&rng, RETAIN);
                old = ts->retained[j];
                ts->retained[j] = nb;
            } else if ((r & 0x300) != 0) {
                old = atomic_exchange_explicit(&mine[rng_below(&rng, SLICE)], nb, memory_order_acq_rel);
            } else {
                old = atomic_exchange_explicit(&g_table[rng_below(&rng, total)], nb, memory_order_acq_rel);
            }
            if (old)
                sd_free(old, "replaced");
        }
        ts->steps += g_scale;
        ts->rng = rng; /* read by the slot's next thread after join */
        pthread_mutex_lock(&g_mu);
        g_ndone++;
        pthread_cond_signal(&g_done);
        pthread_mutex_unlock(&g_mu);
        if (round == ts->last_round)
            return NULL;
    }
}

static const char usage_text[] =
    "usage: bench_mstress [threads scale rounds seed]\n"
    "  e.g. bench_mstress 2 150000 30 1   (all arguments or none; threads 1..1024,\n"
    "  scale = steps per thread per round, rounds >= 1)\n";

int main(int argc, char **argv)
{
    g_name = "bench_mstress";
    uint64_t threads = 2, scale = 150000, rounds = 30, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &scale, &rounds, &seed) &&
        (threads < 1 || threads > 1024 || rounds < 1 || rounds > 1000000 || scale > (1ull << 40)))
        usage_exit(usage_text);
    g_nslots = (uint32_t)threads;
    g_scale = scale;
    size_t tn = (size_t)threads * SLICE;
    g_table = xmalloc(tn * sizeof *g_table);
    for (size_t i = 0; i < tn; i++)
        atomic_init(&g_table[i], NULL);
    tslot_t *slots = aligned_alloc(64, threads * sizeof(tslot_t));
    if (!slots)
        fail("aligned_alloc of thread slots");
    memset(slots, 0, threads * sizeof(tslot_t));
    uint8_t *alive = calloc(threads, 1);
    if (!alive)
        fail("calloc");
    uint64_t mrng = rng_init(seed ^ 0x6d737472ULL);
    for (uint32_t i = 0; i < threads; i++) {
        slots[i].id = i;
        slots[i].rng = rng_init(seed * 0x100000001b3ULL + i);
    }

    uint64_t created = 0;
    double t0 = now_sec();
    for (uint32_t r = 1; r <= rounds; r++) {
        for (uint32_t i = 0; i < threads; i++) {
            if (alive[i])
                continue;
            tslot_t *ts = &slots[i];
            uint32_t life = 1 + rng_below(&mrng, 3);
            ts->first_round = r;
            ts->last_round = r + life - 1 < rounds ? r + life - 1 : (uint32_t)rounds;
            check_pthread(pthread_create(&ts->tid, NULL, worker, ts), "pthread_create");
            alive[i] = 1;
            created++;
        }
        pthread_mutex_lock(&g_mu);
        g_ndone = 0;
        g_round = r;
        pthread_cond_broadcast(&g_go);
        while (g_ndone < threads)
            pthread_cond_wait(&g_done, &g_mu);
        pthread_mutex_unlock(&g_mu);
        for (uint32_t i = 0; i < threads; i++)
            if (slots[i].last_round == r) {
                check_pthread(pthread_join(slots[i].tid, NULL), "pthread_join");
                alive[i] = 0;
            }
    }
    double el = now_sec() - t0;

    uint64_t steps = 0, live = 0;
    for (uint32_t i = 0; i < threads; i++) {
        if (alive[i])
            fail("thread slot %u still alive after the last round", i);
        steps += slots[i].steps;
        for (uint32_t j = 0; j < RETAIN; j++)
            if (slots[i].retained[j]) {
                sd_free(slots[i].retained[j], "final retained");
                live++;
            }
    }
    for (size_t i = 0; i < tn; i++) {
        void *p = atomic_load(&g_table[i]);
        if (p) {
            sd_free(p, "final table");
            live++;
        }
    }
    if (steps != threads * scale * rounds)
        fail("%llu steps done, %llu expected", (unsigned long long)steps,
             (unsigned long long)(threads * scale * rounds));
    free(alive);
    free(slots);
    free(g_table);
    fprintf(stderr, "bench_mstress: %llu steps, %llu rounds, %llu threads created (%llu concurrent), "
                    "%llu blocks live at end, %.3f s\n",
            (unsigned long long)steps, (unsigned long long)rounds, (unsigned long long)created,
            (unsigned long long)threads, (unsigned long long)live, el);
    bench_result(threads, "ops_per_sec", per_sec((double)steps, el), 0);
    return 0;
}

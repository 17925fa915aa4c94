/* xmalloc-style cross-thread batches.
 *
 * Models a pipeline in which one thread allocates and another frees: threads/2 producer
 * threads, each paired with its own consumer thread.  A producer allocates `batch` blocks
 * at a time (stamped), puts them in a batch container (itself malloc'ed, and freed by the
 * consumer) and appends the whole batch to its pair's queue; the consumer takes every
 * queued batch at once, checks and frees each block, then the container.  The queue is a
 * mutex-protected FIFO bounded to QDEPTH batches (the producer waits when it is full), so
 * memory stays bounded whatever the speed difference.  Every free is cross-thread.
 *
 * Arguments (all or none, unsigned decimal):
 *   threads              total threads, even, >= 2 (threads/2 producer->consumer pairs)
 *   blocks_per_producer  blocks each producer allocates
 *   batch                blocks per batch, 1..65536
 *   size_mode            0 = every block 64 B, 1 = random 8..1024 B (uniform)
 *   seed                 PRNG seed (block sizes and keys)
 * Defaults: 2 15000000 256 1 1.
 *
 * Metric: ops_per_sec = blocks freed (by the consumers) per second, all pairs together,
 * from the start barrier until every thread is joined. */
#include "bench_common.h"
#include <pthread.h>

#define QDEPTH 8u

typedef struct batch {
    struct batch *next;
    uint64_t tag; /* block_tag(container, n, seq): the container is checked too */
    uint32_t n;
    uint32_t seq; /* FIFO position in the pair's stream */
    block_t b[];
} batch_t;

typedef struct {
    _Alignas(64) pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    batch_t *head, *tail; /* protected by mu */
    uint32_t len;         /* protected by mu */
    int done;             /* protected by mu: the producer has queued its last batch */
    uint32_t id;
    uint64_t freed;       /* written by the consumer, read by main after join */
} pair_t;

static pair_t *g_pairs;
static uint64_t g_per, g_batch, g_mode, g_seed;
static pthread_barrier_t g_bar;

static void *producer(void *arg)
{
    pair_t *q = arg;
    uint64_t rng = rng_init(g_seed * 0x100000001b3ULL + q->id);
    uint32_t seq = 0;
    pthread_barrier_wait(&g_bar);
    for (uint64_t i = 0; i < g_per;) {
        uint32_t k = (uint32_t)(g_per - i < g_batch ? g_per - i : g_batch);
        batch_t *bt = xmalloc(sizeof(batch_t) + (size_t)k * sizeof(block_t));
        for (uint32_t j = 0; j < k; j++) {
            uint64_t r = rng_next(&rng);
            uint32_t n = g_mode ? 8 + (uint32_t)(((r >> 32) * 1017u) >> 32) /* 8..1024 */ : 64;
            bt->b[j] = block_new(n, (uint32_t)r);
        }
        bt->next = NULL;
        bt->n = k;
        bt->seq = seq;
        bt->tag = block_tag(bt, k, seq);
        seq++;
        i += k;
        pthread_mutex_lock(&q->mu);
        while (q->len >= QDEPTH)
            pthread_cond_wait(&q->not_full, &q->mu);
        if (q->tail)
            q->tail->next = bt;
        else
            q->head = bt;
        q->tail = bt;
        if (++q->len == 1)
            pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_lock(&q->mu);
    q->done = 1;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void *consumer(void *arg)
{
    pair_t *q = arg;
    uint64_t freed = 0;
    uint32_t want_seq = 0;
    pthread_barrier_wait(&g_bar);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->len == 0 && !q->done)
            pthread_cond_wait(&q->not_empty, &q->mu);
        batch_t *list = q->head;
        int was_full = q->len >= QDEPTH, done = q->done;
        q->head = q->tail = NULL;
        q->len = 0;
        if (was_full)
            pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->mu);
        while (list) {
            batch_t *bt = list;
            list = bt->next;
            if (bt->seq != want_seq || bt->tag != block_tag(bt, bt->n, bt->seq) || bt->n == 0 ||
                bt->n > g_batch)
                fail("batch container %p corrupted or out of order (seq %u, expected %u)", (void *)bt,
                     bt->seq, want_seq);
            want_seq++;
            for (uint32_t j = 0; j < bt->n; j++)
                block_free(&bt->b[j], "consumer");
            freed += bt->n;
            free(bt);
        }
        if (done)
            break; /* done was read together with the last batches */
    }
    q->freed = freed;
    return NULL;
}

static const char usage_text[] =
    "usage: bench_xmalloc [threads blocks_per_producer batch size_mode seed]\n"
    "  e.g. bench_xmalloc 2 15000000 256 1 1   (all arguments or none)\n"
    "  threads: even, >= 2 (threads/2 producer->consumer pairs); batch: 1..65536;\n"
    "  size_mode: 0 = 64 B blocks, 1 = random 8..1024 B\n";

int main(int argc, char **argv)
{
    g_name = "bench_xmalloc";
    uint64_t threads = 2, per = 15000000, batch = 256, mode = 1, seed = 1;
    if (PARSE_ARGS(argc, argv, usage_text, &threads, &per, &batch, &mode, &seed) &&
        (threads < 2 || threads % 2 != 0 || threads > 1024 || per < 1 || per > (1ull << 40) || batch < 1 ||
         batch > 65536 || mode > 1))
        usage_exit(usage_text);
    g_per = per;
    g_batch = batch;
    g_mode = mode;
    g_seed = seed;
    uint32_t np = (uint32_t)(threads / 2);
    g_pairs = aligned_alloc(64, np * sizeof(pair_t));
    if (!g_pairs)
        fail("aligned_alloc of %u queues", np);
    memset(g_pairs, 0, np * sizeof(pair_t));
    pthread_t *tid = xmalloc(sizeof(pthread_t) * threads);
    check_pthread(pthread_barrier_init(&g_bar, NULL, (unsigned)threads + 1), "pthread_barrier_init");
    for (uint32_t p = 0; p < np; p++) {
        pair_t *q = &g_pairs[p];
        q->id = p;
        check_pthread(pthread_mutex_init(&q->mu, NULL), "pthread_mutex_init");
        check_pthread(pthread_cond_init(&q->not_empty, NULL), "pthread_cond_init");
        check_pthread(pthread_cond_init(&q->not_full, NULL), "pthread_cond_init");
    }
    for (uint32_t p = 0; p < np; p++) {
        check_pthread(pthread_create(&tid[2 * p], NULL, producer, &g_pairs[p]), "pthread_create");
        check_pthread(pthread_create(&tid[2 * p + 1], NULL, consumer, &g_pairs[p]), "pthread_create");
    }
    pthread_barrier_wait(&g_bar);
    double t0 = now_sec();
    for (uint64_t i = 0; i < threads; i++)
        check_pthread(pthread_join(tid[i], NULL), "pthread_join");
    double el = now_sec() - t0;

    uint64_t freed = 0;
    for (uint32_t p = 0; p < np; p++) {
        pair_t *q = &g_pairs[p];
        if (q->freed != per || q->head != NULL)
            fail("pair %u: consumer freed %llu blocks, producer made %llu", p, (unsigned long long)q->freed,
                 (unsigned long long)per);
        freed += q->freed;
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->not_empty);
        pthread_cond_destroy(&q->not_full);
    }
    pthread_barrier_destroy(&g_bar);
    free(tid);
    free(g_pairs);
    fprintf(stderr, "bench_xmalloc: %llu blocks (%s) in batches of %llu, %u pairs, %.3f s\n",
            (unsigned long long)freed, mode ? "8..1024 B" : "64 B", (unsigned long long)batch, np, el);
    bench_result(threads, "ops_per_sec", per_sec((double)freed, el), 0);
    return 0;
}

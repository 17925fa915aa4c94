/* Thread churn: create threads_total short-lived threads, at most `concurrent` alive at a
 * time.  Each thread first takes one hand-off batch left by an earlier thread (if any),
 * verifies and frees it (cross-thread frees of blocks whose owner thread has exited), then
 * performs allocs_per_thread allocations of 16..512 bytes into a 64-slot window (replacing
 * and freeing locally as it goes); at exit it leaves half of the remaining window as a
 * hand-off batch for a later thread and frees the rest.
 * Metric: ops_per_sec = threads completed per second. */
#include "bench_common.h"
#include <pthread.h>

#define WINDOW 64

typedef struct batch {
    struct batch *next;
    uint32_t count;
    block_t b[WINDOW / 2];
} batch_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static batch_t *g_mail;      /* hand-off batches (LIFO), protected by g_mu */
static uint32_t *g_finished; /* finished slot indices, protected by g_mu */
static uint32_t g_nfinished;
static uint64_t g_allocs;

typedef struct {
    uint32_t slot;
    uint64_t seq;
} targ_t;

static void *worker(void *arg)
{
    targ_t *a = arg;
    uint64_t rng = rng_init(0xc4a5ULL ^ (a->seq * 0x9e3779b97f4a7c15ULL));
    pthread_mutex_lock(&g_mu);
    batch_t *in = g_mail;
    if (in)
        g_mail = in->next;
    pthread_mutex_unlock(&g_mu);
    if (in) {
        for (uint32_t i = 0; i < in->count; i++)
            block_free(&in->b[i], "hand-off");
        free(in);
    }

    block_t w[WINDOW];
    memset(w, 0, sizeof w);
    for (uint64_t k = 0; k < g_allocs; k++) {
        uint64_t r = rng_next(&rng);
        uint32_t i = (uint32_t)(r & (WINDOW - 1));
        if (w[i].p)
            block_free(&w[i], "local");
        w[i] = block_new(16 + (uint32_t)(((r >> 32) * 497u) >> 32) /* 16..512 */, (uint32_t)(r >> 8));
    }
    batch_t *out = xmalloc(sizeof *out);
    out->count = 0;
    for (uint32_t i = 0; i < WINDOW; i++) {
        if (!w[i].p)
            continue;
        if ((i & 1) == 0)
            out->b[out->count++] = w[i];
        else
            block_free(&w[i], "local exit");
    }
    const int handed = out->count != 0; /* out may be taken and freed once published */
    pthread_mutex_lock(&g_mu);
    if (handed) {
        out->next = g_mail;
        g_mail = out;
    }
    g_finished[g_nfinished++] = a->slot;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    if (!handed)
        free(out);
    return NULL;
}

static const char usage_text[] =
    "usage: bench_thread_churn [threads_total concurrent allocs_per_thread]\n"
    "  e.g. bench_thread_churn 20000 2 1000   (all arguments or none)\n";

int main(int argc, char **argv)
{
    g_name = "bench_thread_churn";
    uint64_t total = 20000, conc = 2, allocs = 1000;
    if (PARSE_ARGS(argc, argv, usage_text, &total, &conc, &allocs) && (total < 1 || conc < 1 || conc > 4096))
        usage_exit(usage_text);
    if (conc > total)
        conc = total;
    g_allocs = allocs;
    pthread_t *tid = xmalloc(sizeof(pthread_t) * conc);
    targ_t *args = xmalloc(sizeof(targ_t) * conc);
    g_finished = xmalloc(sizeof(uint32_t) * conc);
    uint32_t *freeslots = xmalloc(sizeof(uint32_t) * conc);
    uint32_t *done = xmalloc(sizeof(uint32_t) * conc);
    uint32_t nfree = 0;
    for (uint32_t i = 0; i < conc; i++)
        freeslots[nfree++] = (uint32_t)conc - 1 - i;

    double t0 = now_sec();
    uint64_t started = 0, joined = 0;
    while (joined < total) {
        while (nfree > 0 && started < total) {
            uint32_t s = freeslots[--nfree];
            args[s] = (targ_t){s, started};
            check_pthread(pthread_create(&tid[s], NULL, worker, &args[s]), "pthread_create");
            started++;
        }
        pthread_mutex_lock(&g_mu);
        while (g_nfinished == 0)
            pthread_cond_wait(&g_cv, &g_mu);
        uint32_t n = g_nfinished;
        memcpy(done, g_finished, n * sizeof(uint32_t));
        g_nfinished = 0;
        pthread_mutex_unlock(&g_mu);
        for (uint32_t i = 0; i < n; i++) {
            check_pthread(pthread_join(tid[done[i]], NULL), "pthread_join");
            freeslots[nfree++] = done[i];
            joined++;
        }
    }
    double el = now_sec() - t0;

    uint64_t left = 0;
    while (g_mail) {
        batch_t *b = g_mail;
        g_mail = b->next;
        for (uint32_t i = 0; i < b->count; i++) {
            block_free(&b->b[i], "final");
            left++;
        }
        free(b);
    }
    free(tid);
    free(args);
    free(g_finished);
    free(freeslots);
    free(done);
    fprintf(stderr, "bench_thread_churn: %llu threads (%llu concurrent, %llu allocs each) in %.3f s, "
                    "%.0f allocs/s, %llu blocks left in hand-off at end\n",
            (unsigned long long)total, (unsigned long long)conc, (unsigned long long)allocs, el,
            el > 0 ? (double)(total * allocs) / el : 0.0, (unsigned long long)left);
    bench_result(conc, "ops_per_sec", per_sec((double)total, el), 0);
    return 0;
}

/*
 * test_hardening.c — free-list protection and secret handling (hakmem only,
 * except the "valid" case).
 *
 * A free block of a slab (<= 256 KiB) holds a link to the next free block in
 * its first word and the "free-block key" (double-free detection) in its
 * second.  A use-after-free read or write of those two words must give an
 * attacker nothing:
 *
 *   key-varies      free 64 blocks of 32 B and 64 of 200 B and read (deliberate
 *                   use-after-free) both words of each.  The key word must not
 *                   be one value for the whole size (the allocator mixes the
 *                   key with the block address), must equal neither 8-byte word
 *                   of the kernel's AT_RANDOM bytes, and must not give back
 *                   AT_RANDOM through the inverse of the splitmix64 finaliser
 *                   (the baseline's invertible mix: its key leaks glibc's pointer
 *                   guard xor a stack address).  Fewer than half of the link
 *                   words may equal the address of another freed block (links
 *                   are stored encoded, not as plain pointers).
 *   uaf-*           after free(p), write one word into p (the link): the address
 *                   of a static buffer, or 0x4141414141414141; then malloc the
 *                   same size 100 times.  No malloc may return a pointer into
 *                   the buffer (baseline: the second malloc does), malloc must
 *                   not crash (SIGSEGV/SIGBUS), and the child either survives
 *                   (prints "survived"; the 100 blocks are distinct and
 *                   writable) or dies by SIGABRT after a stderr line starting
 *                   "hakmem: " that contains "corrupt".  Variants: 32 B (tiny)
 *                   and 5000 B (mid); one freed block, or a chain of 10 with the
 *                   most recently freed corrupted; the thread caches at 0
 *                   (HAKMEM_TCACHE_TINY=0 HAKMEM_TCACHE_MID=0: the slab lists).
 *   check-*         HAKMEM_CHECK=1 (thorough checking): freed blocks are filled
 *                   and the fill verified when the block is handed out again,
 *                   so a use-after-free write at byte 40 of a 64 B or 3000 B
 *                   block gets a line "hakmem: ... after free ..."; the child
 *                   then survives with HAKMEM_ABORT_ON_ERROR=0 and dies by
 *                   SIGABRT with =1.  check-valid: a valid random workload
 *                   (malloc/realloc/free/calloc, contents verified, calloc
 *                   all zero) under HAKMEM_CHECK=1 prints no "hakmem: " line.
 *   valid           the same workload plus cross-thread frees between 2
 *                   threads, default flags: no "hakmem: " line (also on glibc).
 *
 * Each case runs in a child (this program re-executed with "--case NAME ...",
 * tests/test_common.h spawn_self), so a crash or abort is observed, not fatal.
 * The child reports figures on stdout; the parent asserts on them, on the exit
 * status and on the child's stderr.  Deliberate misuse goes through opaque().
 *
 * Usage: test_hardening hakmem   every case (the runner passes "hakmem")
 *        test_hardening          "valid" only (glibc: the rest is undefined
 *                                behaviour that glibc does not defend against)
 */
#define TEST_NAME "test_hardening"
#include "test_common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>

/* ------------------------------------------------------------------------- */
/* child side                                                                */


/* Progress marker on stdout, flushed at once: if the child dies, the parent
 * knows how far it got (e.g. a SIGSEGV after "wrote" is inside malloc). */
static void stage(const char *s)
{
    printf("stage %s\n", s);
    fflush(stdout);
}

static void child_exit(void)
{
    if (case_failed) exit(1);
    printf("survived\n");
    fflush(stdout);
    exit(0);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) { case_fail("malloc(%zu) returned NULL", n); exit(1); }
    return p;
}

/* Use-after-free read of word k of a freed block. */
static uint64_t uaf_word(void *p, int k)
{
    volatile uint64_t *w = opaque(p);
    return w[k];
}

/* -- key-varies ------------------------------------------------------------- */

/* The inverse of the splitmix64 finaliser z -> z', where
 *   z ^= z >> 30; z *= M1; z ^= z >> 27; z *= M2; z ^= z >> 31.  */
static uint64_t inv_mul(uint64_t m) /* m odd: m * inv_mul(m) == 1 mod 2^64 */
{
    uint64_t x = m; /* correct to 3 bits; each Newton step doubles that */
    for (int i = 0; i < 5; i++) x *= 2 - m * x;
    return x;
}
static uint64_t unxorshift(uint64_t z, int s)
{
    uint64_t x = z;
    for (int i = 0; i < 64 / s + 1; i++) x = z ^ (x >> s);
    return x;
}
static uint64_t unsplitmix(uint64_t z)
{
    z = unxorshift(z, 31);
    z *= inv_mul(0x94D049BB133111EBull);
    z = unxorshift(z, 27);
    z *= inv_mul(0xBF58476D1CE4E5B9ull);
    z = unxorshift(z, 30);
    return z - 0x9E3779B97F4A7C15ull;
}

/* Does key word w (of the block at addr) give back AT_RANDOM when un-mixed?
 * Tried: w and w ^ addr (the address is known to whoever has the pointer),
 * each also with bit 0 flipped (a key forced odd), un-mixed, then xor-ed with
 * either AT_RANDOM word: a result of 0, or one that (rotated by 32, as the
 * baseline mixes it) is an address within 1 GiB of this thread's stack,
 * means the secret is recoverable.  For a value that is not built this way
 * the chance of a hit is about 2^-33 per try. */
static int unmixes_to_at_random(uint64_t w, uint64_t addr, const uint64_t at[2], uintptr_t stack)
{
    uint64_t cand[4] = { w, w ^ 1, w ^ addr, w ^ addr ^ 1 };
    for (int c = 0; c < 4; c++) {
        uint64_t x = unsplitmix(cand[c]);
        for (int a = 0; a < 2; a++) {
            uint64_t y = x ^ at[a];
            uint64_t s = (y >> 32) | (y << 32);
            uint64_t d = s > stack ? s - stack : stack - s;
            if (y == 0 || d < (1ull << 30)) return 1;
        }
    }
    return 0;
}

enum { KV_N = 64 };

static void key_varies(size_t size)
{
    uintptr_t stack = (uintptr_t)__builtin_frame_address(0);
    uint64_t at[2] = { 0, 0 };
    const void *atr = (const void *)getauxval(AT_RANDOM);
    if (atr) memcpy(at, atr, 16);
    else case_fail("getauxval(AT_RANDOM) returned NULL");

    /* 2*KV_N blocks; the even ones are freed, the odd ones stay live, so every
     * slab holding a freed block also holds a live one and is neither released
     * nor purged while we read the freed blocks. */
    static void *blk[2 * KV_N];
    static uint64_t link[KV_N], key[KV_N];
    for (int i = 0; i < 2 * KV_N; i++) {
        blk[i] = xmalloc(size);
        fill(blk[i], size, (unsigned)i);
    }
    for (int j = 0; j < KV_N; j++) free(blk[2 * j]);
    /* No allocation between the frees and these reads (stdout's buffer exists). */
    for (int j = 0; j < KV_N; j++) {
        link[j] = uaf_word(blk[2 * j], 0);
        key[j] = uaf_word(blk[2 * j], 1);
    }

    int distinct = 0, at_equal = 0, plain = 0, unmixed = 0;
    for (int j = 0; j < KV_N; j++) {
        int seen = 0;
        for (int k = 0; k < j; k++)
            if (key[k] == key[j]) seen = 1;
        distinct += !seen;
        at_equal += key[j] == at[0] || key[j] == at[1];
        unmixed += unmixes_to_at_random(key[j], (uint64_t)(uintptr_t)blk[2 * j], at, stack);
        for (int k = 0; k < KV_N; k++)
            if (k != j && link[j] == (uint64_t)(uintptr_t)blk[2 * k]) { plain++; break; }
    }
    int last = KV_N - 1; /* the most recently freed block */
    printf("words size=%zu block=%p link=0x%016llx key=0x%016llx at_random=0x%016llx,0x%016llx\n", size,
           blk[2 * last], (unsigned long long)link[last], (unsigned long long)key[last],
           (unsigned long long)at[0], (unsigned long long)at[1]);
    printf("figures size=%zu blocks=%d distinct_keys=%d at_random_equal=%d unmixed_at_random=%d plain_links=%d\n",
           size, KV_N, distinct, at_equal, unmixed, plain);
    fflush(stdout);
    for (int j = 0; j < KV_N; j++) free(blk[2 * j + 1]);
}

/* -- uaf-link-write ---------------------------------------------------------- */

static char target[256] __attribute__((aligned(16)));

enum { UAF_MALLOCS = 100 };

/* shape: 1 freed block, or 10 with the most recently freed corrupted. */
static void uaf_link_write(size_t size, int wild, int chain)
{
    const uintptr_t value = wild ? (uintptr_t)0x4141414141414141ull : (uintptr_t)target;
    const int k = chain ? 10 : 1;
    void *b[10];
    /* Live neighbours keep the freed blocks' slab in use (not released). */
    void *pin1 = xmalloc(size);
    for (int i = 0; i < k; i++) b[i] = xmalloc(size);
    void *pin2 = xmalloc(size);
    void *alias = opaque(b[k - 1]);
    for (int i = 0; i < k; i++) free(b[i]);
    volatile uintptr_t *victim = alias; /* taken before the frees: no -Wuse-after-free */
    stage("freed");
    *victim = value; /* use-after-free write of the link */
    stage("wrote");

    static void *got[UAF_MALLOCS];
    for (int i = 0; i < UAF_MALLOCS; i++) {
        got[i] = malloc(size);
        uintptr_t g = (uintptr_t)got[i];
        if (g >= value && g < value + sizeof target) {
            printf("GOT-TARGET malloc #%d of %zu B returned %p, inside the attacker's buffer %p..%p\n", i + 1, size,
                   got[i], (void *)value, (void *)(value + sizeof target));
            fflush(stdout);
            _exit(3); /* the heap is in the attacker's hands: stop here */
        }
        if (!got[i]) { case_fail("malloc #%d of %zu B returned NULL", i + 1, size); exit(1); }
    }
    stage("allocated");
    for (int i = 0; i < UAF_MALLOCS; i++) memset(got[i], 0x33, size); /* each block is usable */
    stage("used");
    for (int i = 0; i < UAF_MALLOCS; i++)
        for (int j = 0; j < i; j++)
            if (got[i] == got[j]) case_fail("malloc #%d and #%d of %zu B both returned %p", j + 1, i + 1, size, got[i]);
    for (int i = 0; i < UAF_MALLOCS; i++) free(got[i]);
    free(pin1);
    free(pin2);
}

/* -- check-mode ------------------------------------------------------------- */

enum { CHECK_MALLOCS = 200 };

/* `pinned`: another block of the slab stays live; without it the freed block
 * is the slab's only one, so the slab is empty when the next malloc comes
 * (a slab that empties is carved afresh outside check mode, which would drop
 * the freed block unverified). */
static void check_mode_uaf(size_t size, int pinned)
{
    void *pin = pinned ? xmalloc(size) : NULL;
    unsigned char *p = xmalloc(size);
    volatile unsigned char *alias = opaque(p); /* taken before the free: no -Wuse-after-free */
    fill(p, size, 5);
    free(p);
    stage("freed");
    alias[40] = 0x5a; /* use-after-free write past the link and key words */
    stage("wrote");
    static void *keep[CHECK_MALLOCS];
    for (int i = 0; i < CHECK_MALLOCS; i++) {
        keep[i] = malloc(size);
        if (!keep[i]) { case_fail("malloc #%d of %zu B returned NULL", i + 1, size); exit(1); }
        memset(keep[i], 0x11, size);
    }
    stage("allocated");
    for (int i = 0; i < CHECK_MALLOCS; i++) free(keep[i]);
    free(pin);
}

/* A slab emptied and carved afresh, then a second free of a block past its new
 * carve point whose tag word the program overwrote (run with thread caches of
 * capacity 0, so frees reach the slab at once): must be reported as a double
 * free, never make a live block be handed out again. */
static void restart_double_free(void)
{
    size_t size = 64;
    unsigned char *p = xmalloc(size), *q = xmalloc(size);
    free(p);
    free(q);
    unsigned char *r = xmalloc(size); /* the slab is empty: carved again from its start */
    unsigned char *o = r == p ? q : p;
    volatile unsigned char *alias = opaque(o);
    memset(r, 0xAB, size);
    for (int i = 8; i < 16; i++) alias[i] = 0; /* use after free: its tag word */
    stage("wrote");
    free(o); /* double free */
    unsigned char *s1 = xmalloc(size), *s2 = xmalloc(size);
    if (s1 == r || s2 == r || s1 == s2) case_fail("a live block was handed out again (r %p, then %p and %p)", (void *)r, (void *)s1, (void *)s2);
    for (size_t i = 0; i < size; i++)
        if (r[i] != 0xAB) { case_fail("live block %p changed at byte %zu", (void *)r, i); break; }
    free(s1);
    free(s2);
    free(r);
}

/* -- valid workload --------------------------------------------------------- */

/* 1 B .. 600 KiB: mostly tiny, some mid, a few large. */
static size_t rand_size(rng_t *r)
{
    uint64_t x = rnd(r);
    unsigned pick = (unsigned)(x % 100);
    x >>= 8;
    if (pick < 70) return 1 + x % 1024;
    if (pick < 96) return 1024 + x % (64 * KiB);
    return 200 * KiB + x % (400 * KiB);
}

enum { SLOTS = 256, OPS = 3000 };

/* Random malloc/calloc/realloc/free over SLOTS slots; contents verified before
 * every realloc and free; every calloc'ed block verified all zero. */
static void random_workload(uint64_t seed)
{
    static unsigned char *slot[SLOTS];
    static size_t len[SLOTS];
    static unsigned sd[SLOTS];
    rng_t r = rng_seed(seed);
    for (int op = 0; op < OPS; op++) {
        int s = (int)(rnd(&r) % SLOTS);
        unsigned pick = (unsigned)(rnd(&r) % 4);
        if (slot[s]) {
            size_t bad = verify(slot[s], len[s], sd[s]);
            if (bad != len[s]) case_fail("op %d: block %p of %zu B damaged at byte %zu", op, (void *)slot[s], len[s], bad);
        }
        if (slot[s] && pick == 0) {
            size_t n = rand_size(&r);
            unsigned char *q = realloc(slot[s], n);
            if (!q) { case_fail("realloc(%zu) returned NULL", n); exit(1); }
            size_t keep = n < len[s] ? n : len[s];
            size_t bad = verify(q, keep, sd[s]);
            if (bad != keep) case_fail("op %d: realloc %zu -> %zu B lost byte %zu", op, len[s], n, bad);
            slot[s] = q;
            len[s] = n;
            sd[s] = (unsigned)op;
            fill(q, n, sd[s]);
        } else if (slot[s]) {
            free(slot[s]);
            slot[s] = NULL;
        } else {
            size_t n = rand_size(&r);
            unsigned char *q;
            if (pick == 1) {
                size_t cnt = 1 + n / 16;
                q = calloc(cnt, 16);
                if (!q) { case_fail("calloc(%zu, 16) returned NULL", cnt); exit(1); }
                n = cnt * 16;
                for (size_t i = 0; i < n; i++)
                    if (q[i]) { case_fail("op %d: calloc(%zu, 16) byte %zu is 0x%02x, want 0", op, cnt, i, q[i]); break; }
            } else {
                q = xmalloc(n);
            }
            slot[s] = q;
            len[s] = n;
            sd[s] = (unsigned)op;
            fill(q, n, sd[s]);
        }
    }
    for (int s = 0; s < SLOTS; s++) {
        free(slot[s]);
        slot[s] = NULL;
    }
}

/* Cross-thread frees: in each round both threads allocate XN blocks, swap
 * them at a barrier, verify and free the other thread's blocks. */
enum { XN = 2000, XROUNDS = 3 };
static unsigned char *xblk[2][XN];
static size_t xlen[2][XN];
static pthread_barrier_t xbar;

static void *cross_thread(void *arg)
{
    int me = (int)(intptr_t)arg, other = 1 - me;
    rng_t r = rng_seed(100 + (uint64_t)me);
    for (int round = 0; round < XROUNDS; round++) {
        for (int i = 0; i < XN; i++) {
            size_t n = 1 + rnd(&r) % (i % 10 ? 512 : 20000);
            xblk[me][i] = xmalloc(n);
            xlen[me][i] = n;
            fill(xblk[me][i], n, (unsigned)(me * XN + i));
        }
        pthread_barrier_wait(&xbar);
        for (int i = 0; i < XN; i++) {
            size_t bad = verify(xblk[other][i], xlen[other][i], (unsigned)(other * XN + i));
            if (bad != xlen[other][i]) case_fail("cross-thread block %d damaged at byte %zu", i, bad);
            free(xblk[other][i]);
        }
        pthread_barrier_wait(&xbar);
    }
    return NULL;
}

static void cross_threads(void)
{
    pthread_t t[2];
    pthread_barrier_init(&xbar, NULL, 2);
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, cross_thread, (void *)(intptr_t)i)) { case_fail("pthread_create"); exit(1); }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&xbar);
}

static void run_case(int argc, char **argv)
{
    alarm(5); /* child watchdog: a hang ends as SIGALRM (the parent reports it) */
    const char *name = argv[2];
    stage("start"); /* also allocates stdout's buffer before any experiment */
    if (!strcmp(name, "key-varies")) {
        key_varies(32);
        key_varies(200);
    } else if (!strcmp(name, "uaf-link-write") && argc == 6) {
        uaf_link_write((size_t)atol(argv[3]), !strcmp(argv[4], "wild"), !strcmp(argv[5], "chain"));
    } else if (!strcmp(name, "check-uaf") && argc == 5) {
        check_mode_uaf((size_t)atol(argv[3]), !strcmp(argv[4], "pinned"));
    } else if (!strcmp(name, "restart-double-free")) {
        restart_double_free();
    } else if (!strcmp(name, "check-valid")) {
        random_workload(1);
    } else if (!strcmp(name, "valid")) {
        random_workload(2);
        cross_threads();
    } else {
        case_fail("unknown case %s (argc %d)", name, argc);
        exit(2);
    }
    child_exit();
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

/* The running case, for the watchdog message (a copy: names are built on the stack). */
static char current_case[96] = "(none)";
static void set_case(const char *name) { snprintf(current_case, sizeof current_case, "%s", name); }

static child_result_t res;
/* Failed assertions on the current spawn: the case counts as failed once, and the
 * child's output is printed once. */
static int res_reported;

/* Runs "--case args..." with the flags that would add or change "hakmem: "
 * lines dropped (and, when nocache, the thread caches forced to 0), plus add[]. */
static void spawn_case(char *const args[], int nocache, const char *const add[])
{
    static const char *const drop_std[] = { "HAKMEM_ABORT_ON_ERROR=", "HAKMEM_STATS=", "HAKMEM_VERBOSE=",
                                            "HAKMEM_CHECK=", NULL };
    static const char *const drop_nc[] = { "HAKMEM_ABORT_ON_ERROR=", "HAKMEM_STATS=", "HAKMEM_VERBOSE=",
                                           "HAKMEM_CHECK=", "HAKMEM_TCACHE_TINY=", "HAKMEM_TCACHE_MID=", NULL };
    static const char *const add_nc[] = { "HAKMEM_TCACHE_TINY=0", "HAKMEM_TCACHE_MID=0" };
    const char *all_add[8];
    size_t n = 0;
    if (nocache) { all_add[n++] = add_nc[0]; all_add[n++] = add_nc[1]; }
    for (size_t i = 0; add[i] && n < 7; i++) all_add[n++] = add[i];
    all_add[n] = NULL;
    char *argv[8];
    size_t a = 0;
    argv[a++] = (char *)test_name;
    argv[a++] = (char *)"--case";
    for (size_t i = 0; args[i] && a < 7; i++) argv[a++] = args[i];
    argv[a] = NULL;
    spawn_self(argv, nocache ? drop_nc : drop_std, all_add, &res);
    res_reported = 0;
}

/* Number of stderr lines starting "hakmem: "; with needle, only those containing it. */
static int hakmem_lines(const char *needle)
{
    int n = 0;
    const char *cur = res.err, *line;
    size_t len;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "hakmem: ") && (!needle || line_has(line, len, needle))) n++;
    return n;
}

/* The child's last "stage X" marker. */
static const char *last_stage(char *buf, size_t cap)
{
    const char *cur = res.out, *line;
    size_t len;
    snprintf(buf, cap, "(none)");
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "stage "))
            snprintf(buf, cap, "%.*s", (int)(len - 6 < 60 ? len - 6 : 60), line + 6);
    return buf;
}

static void status_str(char *buf, size_t cap)
{
    if (WIFEXITED(res.status)) snprintf(buf, cap, "exit %d", WEXITSTATUS(res.status));
    else if (WIFSIGNALED(res.status))
        snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(res.status), strsignal(WTERMSIG(res.status)),
                 WTERMSIG(res.status) == SIGALRM ? " = child watchdog: hang" : "");
    else snprintf(buf, cap, "status 0x%x", res.status);
}

/* "FAIL ...: case NAME: message", then (once per spawn) the child's status and output. */
static void report(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(const char *name, const char *fmt, ...)
{
    char st[128], sg[64];
    va_list ap;
    fprintf(stderr, "FAIL %s: case %s: ", test_name, name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (res_reported++) return;
    status_str(st, sizeof st);
    fprintf(stderr, "  child: %s, last stage \"%s\"\n  child stdout: %s\n  child stderr: %s\n", st,
            last_stage(sg, sizeof sg), res.nout ? res.out : "(empty)", res.nerr ? res.err : "(empty)");
    test_failures++;
}

static int exited_ok(void) { return WIFEXITED(res.status) && WEXITSTATUS(res.status) == 0 && strstr(res.out, "survived"); }

/* A valid program: exit 0, "survived", no "hakmem: " line. */
static void check_valid(const char *name, const char *child_case, const char *const add[])
{
    char *args[] = { (char *)child_case, NULL };
    set_case(name);
    spawn_case(args, 0, add);
    int n = hakmem_lines(NULL);
    if (!exited_ok()) report(name, "valid program did not exit 0 with \"survived\"");
    else if (n) report(name, "valid program printed %d \"hakmem: \" line(s), want 0", n);
    else printf("case %-28s ok (no diagnostics)\n", name);
}

static void check_key_varies(void)
{
    const char *name = "key-varies";
    char *args[] = { (char *)"key-varies", NULL };
    static const char *const add[] = { NULL };
    set_case(name);
    spawn_case(args, 0, add);
    if (!exited_ok()) { report(name, "child did not exit 0 with \"survived\""); return; }
    const char *cur = res.out, *line;
    size_t len;
    int sizes = 0;
    while ((line = next_line(&cur, &len))) {
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < 500 ? len : 500), line);
        if (starts_with(line, len, "words ")) { printf("case %-28s %s\n", name, buf); continue; }
        size_t size;
        int blocks, distinct, at_equal, unmixed, plain;
        if (sscanf(buf, "figures size=%zu blocks=%d distinct_keys=%d at_random_equal=%d unmixed_at_random=%d plain_links=%d",
                   &size, &blocks, &distinct, &at_equal, &unmixed, &plain) != 6)
            continue;
        sizes++;
        printf("case %-28s %s\n", name, buf);
        /* One key for every free block: one use-after-free read reveals the key
         * of all of them (and lets an attacker forge or hide a free block). */
        if (distinct < 2)
            report(name, "%zu B: the key word of all %d freed blocks is the same value (distinct: %d), want it "
                   "mixed with the block address", size, blocks, distinct);
        /* The raw AT_RANDOM words are glibc's stack canary / pointer guard. */
        if (at_equal)
            report(name, "%zu B: %d key word(s) equal an 8-byte word of AT_RANDOM, want 0", size, at_equal);
        /* An invertible mix of AT_RANDOM is AT_RANDOM (see unmixes_to_at_random). */
        if (unmixed)
            report(name, "%zu B: %d of %d key words un-mix (inverse splitmix64) to AT_RANDOM xor a stack "
                   "address, want 0", size, unmixed, blocks);
        /* Freed in order, each freed block's link points to the previously freed
         * one when links are plain pointers (about blocks-1 hits); an encoded
         * link matches an address by chance only. Bound: fewer than half. */
        if (plain * 2 >= blocks)
            report(name, "%zu B: %d of %d link words are plain pointers to other freed blocks, want fewer than %d",
                   size, plain, blocks, (blocks + 1) / 2);
    }
    if (sizes != 2) report(name, "child printed figures for %d sizes, want 2", sizes);
}

/* One uaf-link-write variant. */
static void check_uaf_case(const char *size, const char *what, const char *shape, int nocache)
{
    char name[96];
    snprintf(name, sizeof name, "uaf-%s-%s-%s%s", size, what, shape, nocache ? "-nocache" : "");
    char *args[] = { (char *)"uaf-link-write", (char *)size, (char *)what, (char *)shape, NULL };
    static const char *const add[] = { NULL };
    set_case(name);
    spawn_case(args, nocache, add);
    char st[128], sg[64];
    status_str(st, sizeof st);
    last_stage(sg, sizeof sg);
    const char *got = strstr(res.out, "GOT-TARGET");
    if (got) {
        const char *nl = strchr(got, '\n');
        report(name, "malloc returned an attacker-chosen address after one use-after-free write of a link: %.*s",
               (int)(nl ? nl - got : (long)strlen(got)), got);
        return;
    }
    if (WIFSIGNALED(res.status) && WTERMSIG(res.status) == SIGABRT) {
        int c = hakmem_lines("corrupt");
        if (c == 0)
            report(name, "SIGABRT without a stderr line starting \"hakmem: \" containing \"corrupt\"");
        else
            printf("case %-28s ok (aborted after a \"hakmem: ... corrupt\" line, stage %s)\n", name, sg);
        return;
    }
    if (WIFSIGNALED(res.status)) {
        report(name, "%s%s", st,
               !strcmp(sg, "wrote") ? " inside malloc, after the use-after-free write"
               : !strcmp(sg, "allocated") ? ": a block malloc returned is not writable" : "");
        return;
    }
    if (!exited_ok()) { report(name, "want \"survived\" and exit 0, or SIGABRT after a hakmem corrupt line"); return; }
    printf("case %-28s ok (survived, %d \"hakmem: \" line(s))\n", name, hakmem_lines(NULL));
}

/* One check-mode use-after-free variant. */
static void check_checkmode(const char *size, const char *pin, int abort_flag)
{
    char name[96];
    snprintf(name, sizeof name, "check-uaf-%s-%s-abort%d", size, pin, abort_flag);
    char *args[] = { (char *)"check-uaf", (char *)size, (char *)pin, NULL };
    const char *const add[] = { "HAKMEM_CHECK=1", abort_flag ? "HAKMEM_ABORT_ON_ERROR=1" : "HAKMEM_ABORT_ON_ERROR=0",
                                NULL };
    set_case(name);
    spawn_case(args, 0, add);
    int n = hakmem_lines("after free");
    if (n == 0) {
        report(name, "with HAKMEM_CHECK=1, a use-after-free write at byte 40 of a freed %s B block drew no stderr "
               "line starting \"hakmem: \" containing \"after free\"", size);
        return;
    }
    if (abort_flag) {
        if (!WIFSIGNALED(res.status) || WTERMSIG(res.status) != SIGABRT) report(name, "want death by SIGABRT");
        else if (strstr(res.out, "survived")) report(name, "printed \"survived\" although it should have aborted");
        else printf("case %-28s ok (reported, aborted)\n", name);
    } else {
        if (!exited_ok()) report(name, "want \"survived\" and exit 0 after the report");
        else printf("case %-28s ok (reported %d time(s), survived)\n", name, n);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--case")) run_case(argc, argv);
    watchdog_context = current_case;
    watchdog_arm(60);
    static const char *const no_add[] = { NULL };
    check_valid("valid", "valid", no_add);
    if (argc < 2 || strcmp(argv[1], "hakmem") != 0) {
        printf("other cases skipped (hakmem-specific; run with argument \"hakmem\")\n");
        return test_finish("case");
    }
    check_key_varies();
    static const char *const sizes[] = { "32", "5000" };
    for (int s = 0; s < 2; s++) {
        check_uaf_case(sizes[s], "target", "single", 0);
        check_uaf_case(sizes[s], "target", "chain", 0);
        check_uaf_case(sizes[s], "target", "single", 1);
        check_uaf_case(sizes[s], "target", "chain", 1);
        check_uaf_case(sizes[s], "wild", "single", 0);
        check_uaf_case(sizes[s], "wild", "chain", 1);
    }
    static const char *const chk_sizes[] = { "64", "3000" };
    for (int s = 0; s < 2; s++) {
        check_checkmode(chk_sizes[s], "pinned", 0);
        check_checkmode(chk_sizes[s], "pinned", 1);
        check_checkmode(chk_sizes[s], "alone", 0);
    }
    {
        const char *name = "restart-double-free";
        char *args[] = { (char *)name, NULL };
        const char *const add[] = { "HAKMEM_ABORT_ON_ERROR=0", NULL };
        set_case(name);
        spawn_case(args, 1, add); /* no thread caches: frees reach the slab at once */
        if (hakmem_lines("double free") == 0) report(name, "no \"hakmem: \" line saying \"double free\"");
        else if (!exited_ok()) report(name, "want \"survived\" and exit 0 after the report");
        else printf("case %-28s ok (reported, survived)\n", name);
    }
    static const char *const chk_add[] = { "HAKMEM_CHECK=1", "HAKMEM_ABORT_ON_ERROR=0", NULL };
    check_valid("check-valid", "check-valid", chk_add);
    return test_finish("case");
}

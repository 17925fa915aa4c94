/*
 * test_crash.c — the opt-in crash report (HAKMEM_CRASH_REPORT=1).
 *
 * With HAKMEM_CRASH_REPORT=1 hakmem installs, at load time and only over the
 * default disposition, handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT.
 * On the signal it writes one block of "hakmem: " lines with write(2):
 *     hakmem: crash report (HAKMEM_CRASH_REPORT=1): <SIGNAME> (...) in thread <tid> of pid <pid>
 *     hakmem:   fault address 0x...: <what the address is to hakmem>     (kernel faults only)
 *     hakmem:   this thread's heap: 0x...; the thread was not inside a hakmem slow path
 *     hakmem:   the signal now goes to the program's previous handler (or the core dump)
 * then puts the previous disposition back and lets the signal go on, so the
 * process still dies OF THE ORIGINAL SIGNAL (or the program's own handler runs).
 * A program handler installed later replaces hakmem's; one installed earlier is
 * kept.  Off by default.
 *
 * Every case runs in a child (this program re-run with "--case NAME MODE" by
 * spawn_self, RLIMIT_CORE 0, its own HAKMEM_CRASH_REPORT / HAKMEM_LARGE_CACHE_MB,
 * without HAKMEM_STATS / HAKMEM_VERBOSE).  The child prints what it is about to
 * do (pid, tid, the address it writes, the text hakmem should say about it) on
 * stdout with write(2), then crashes; the parent checks the child's stderr line
 * by line and how it ended.
 *   Faults whose address hakmem must classify (SIGSEGV unless said otherwise):
 *     large-unmapped   a 1 MiB block freed with HAKMEM_LARGE_CACHE_MB=0 (unmapped at
 *                      once), written through: "not hakmem's memory (...)"
 *     large-past-end   the first byte after a live large block's pages (same chunk,
 *                      nothing mapped there): "past the end of large block B (N bytes)"
 *     segment-past     the first byte after the mapping that holds a small block,
 *                      inside the same 4 MiB segment chunk: "in hakmem segment S,
 *                      past its mapped part"
 *     large-live-ro    a page of a live large block made read-only (mprotect) by the
 *                      test, then written: "inside the live large block B of N bytes,
 *                      offset K"
 *     large-freed-ro   the same on a freed, cached large block: "inside a FREED (cached)
 *                      large block ..."
 *     slab-live-ro     a live 200-byte block's page made read-only, written at offset
 *                      40: "<stride>-byte block B (class C), offset 40, which is in use"
 *     slab-free-ro     the same after free(B) (tiny class, 200 B) ...
 *     slab-free-mid-ro ... and mid class (3000 B): "..., which is FREE (use after free?)"
 *     slab-guard       a 4096-byte block made PROT_NONE by the program (a guard page)
 *                      and written: its tag word is on the faulting page, so the
 *                      report says "... which is not readable" instead of faulting
 *     segment-header   the segment's header page made read-only and written: "on a page
 *                      that holds no slab (free, or the header)"
 *     thread           a wild write from a second thread (which allocated first) into
 *                      a PROT_NONE chunk of the test's own: the report names that
 *                      thread's tid, "not hakmem's memory (...)"
 *     no-heap-thread   the same from a thread that never allocated: "this thread has
 *                      no hakmem heap (it has allocated no small block)" (glibc's thread start
 *                      does not malloc in the new thread)
 *     sigbus           a write to an empty memfd's page (mapped in a chunk of the test's
 *                      own): SIGBUS, "not hakmem's memory"
 *     sigill           ud2: SIGILL at the instruction's address
 *     sigfpe           integer division by zero: SIGFPE at the instruction's address
 *   The read-only cases use mprotect(PROT_READ) on hakmem's pages: the report only
 *   reads hakmem's memory, so it still works, and the write still faults.  Every
 *   case's main thread mallocs a small block first, so the heap line is known.
 *   large-past-end and segment-past skip (with a message) when another mapping sits
 *   right after the block / segment part (never seen on this machine with hakmem;
 *   always the case for large-past-end on glibc, whose chunk lands below a library).
 *   For each: the report appears exactly once, in this order, names the signal,
 *   the faulting thread and pid, prints the written address (%p form: 0x +
 *   lowercase hex) and the expected classification, and the child dies of the
 *   signal (WTERMSIG), not of anything else.
 *     abort            malloc, then abort(): SIGABRT, no fault-address line, the
 *                      thread has a heap; dies of SIGABRT.
 *     later-handler    main installs its own SIGSEGV handler (after hakmem's load),
 *                      then faults: the program's handler runs (exit 42), and no
 *                      "hakmem:" line appears.
 *     earlier-handler  a constructor(101) installs a SIGSEGV handler; in the linked
 *                      build it runs before hakmem's (unprioritised) .init_array entry,
 *                      so hakmem must keep it (and still take SIGBUS, which was
 *                      default).  In the preloaded build the library's constructor
 *                      runs first: the case is skipped with a message.
 *     off-segv, off-abort  without HAKMEM_CRASH_REPORT: every disposition is still the
 *                      default, no "hakmem:" line, death by SIGSEGV / SIGABRT.
 *     normal-run       HAKMEM_CRASH_REPORT=1 and no crash: empty stderr, exit 0, and
 *                      sigaction(sig, NULL, &old) shows an SA_SIGINFO handler for all
 *                      five signals (hakmem mode only).
 * On glibc (no "hakmem" argument) the report checks are skipped with a message,
 * but every child must still die of its signal (or run its handler) and print
 * no "hakmem:" line; the hakmem-only layouts (segment-header) skip.
 *
 * Usage: test_crash hakmem   run the cases with the hakmem checks
 *        test_crash          glibc: the children must still die of their signals
 * x86_64 Linux (sigill / sigfpe use a few instructions of assembly).
 */
#define TEST_NAME "test_crash"
#include "test_common.h"
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define CHUNK ((uintptr_t)4 * MiB) /* hakmem's segments and large blocks start on 4 MiB boundaries */
#define OS_PAGE ((uintptr_t)4096)

/* ------------------------------------------------------------------------- */
/* child side                                                                */

/* Output from a child that is about to crash: write(2) only, formatted on the
 * stack (no stdio buffer: it would be a heap block, and would never be flushed). */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(1, buf + off, (size_t)(n - off));
        if (w <= 0) return;
        off += w;
    }
}
/* A child failure: "FAIL test_crash: child: ..." on stderr, exit 1 (before any crash). */
#define CHILD_FAIL(...) do { case_fail(__VA_ARGS__); exit(1); } while (0)

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

/* /proc/self/maps, read with open/read into BSS (no allocation: hakmem's layout
 * must not change between reading it and the crash). */
static char maps_buf[1 << 20];
static void read_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) CHILD_FAIL("open /proc/self/maps: %s", strerror(errno));
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, maps_buf + len, sizeof maps_buf - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof maps_buf - 1) CHILD_FAIL("/proc/self/maps is larger than %zu bytes", len);
    }
    maps_buf[len] = 0;
    close(fd);
}
/* The mapping [*start, *end) that holds a, from the last read_maps(); 0 if none. */
static int vma_of(uintptr_t a, uintptr_t *start, uintptr_t *end)
{
    const char *cur = maps_buf, *line;
    size_t len;
    while ((line = next_line(&cur, &len))) {
        char *e;
        unsigned long long s = strtoull(line, &e, 16);
        if (*e != '-') continue;
        unsigned long long t = strtoull(e + 1, NULL, 16);
        if (a >= s && a < t) {
            *start = (uintptr_t)s;
            *end = (uintptr_t)t;
            return 1;
        }
    }
    return 0;
}
static int is_mapped(uintptr_t a)
{
    uintptr_t s, e;
    return vma_of(a, &s, &e);
}

/* The deliberate wild write: one byte, so si_addr is exactly a. */
static void poke(uintptr_t a)
{
    *(volatile char *)a = 1;
}

/* Prints what the parent needs, then writes to a (which must fault). */
static void crash_at(uintptr_t a, const char *what_fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void crash_at(uintptr_t a, const char *what_fmt, ...)
{
    char what[300];
    va_list ap;
    va_start(ap, what_fmt);
    vsnprintf(what, sizeof what, what_fmt, ap);
    va_end(ap);
    say("addr=%p\nwhat=%s\n", (void *)a, what);
    poke(a);
    say("survived a write to %p\n", (void *)a);
    CHILD_FAIL("the write to %p did not fault", (void *)a);
}

static void make_ro(uintptr_t a)
{
    uintptr_t page = a & ~(OS_PAGE - 1);
    if (mprotect((void *)page, OS_PAGE, PROT_READ) != 0)
        CHILD_FAIL("mprotect(%p, 4096, PROT_READ): %s", (void *)page, strerror(errno));
}

/* The exact text hakmem prints for an address that is none of its memory. */
#define NOT_HAKMEM "not hakmem's memory (a freed large block is unmapped unless cached; or another mapping, or none)"

/* A 4 MiB-aligned chunk wholly covered by a PROT_NONE mapping of the test's own:
 * no hakmem segment or large block can start there, so an address in it is "not
 * hakmem's memory".  (A page mapped and unmapped by the test is not enough: the
 * kernel may place it in the unmapped tail of a hakmem segment's chunk, and then
 * hakmem rightly says "in hakmem segment ..., past its mapped part".) */
static uintptr_t foreign_chunk(void)
{
    void *r = mmap(NULL, 2 * CHUNK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) CHILD_FAIL("mmap(8 MiB, PROT_NONE): %s", strerror(errno));
    return ((uintptr_t)r + CHUNK - 1) & ~(CHUNK - 1);
}

/* A live block of n bytes, filled (so its tag word is not hakmem's free tag). */
static unsigned char *live_block(size_t n)
{
    unsigned char *p = malloc(opaque_size(n));
    if (!p) CHILD_FAIL("malloc(%zu) failed", n);
    memset(p, 0x5A, n);
    return p;
}

/* Small-block cases: the victim is a block that shares its 64 KiB slab page
 * with another live block, so its slab stays live when the victim is freed
 * (an empty slab could be released and its pages purged: then there would be
 * no slab to describe). */
enum { NSMALL = 24 };
static void slab_case(size_t size, int free_it)
{
    unsigned char *b[NSMALL];
    for (int i = 0; i < NSMALL; i++) b[i] = live_block(size);
    int v = -1;
    for (int i = 1; i < NSMALL - 1 && v < 0; i++)
        for (int j = 0; j < NSMALL; j++)
            if (j != i && ((uintptr_t)b[j] >> 16) == ((uintptr_t)b[i] >> 16)) { v = i; break; }
    if (v < 0) CHILD_FAIL("no two of %d blocks of %zu bytes share a 64 KiB page", NSMALL, size);
    unsigned char *p = b[v];
    size_t stride = malloc_usable_size(p);
    if (free_it) free(opaque(p));
    uintptr_t a = (uintptr_t)p + 40;
    make_ro(a);
    crash_at(a, "%zu-byte block %p (class {class}), offset 40, which is %s", stride, (void *)p,
             free_it ? "FREE (use after free?)" : "in use");
}

/* thread / no-heap-thread: a wild write from a second thread (which allocates
 * first, or not at all), into the test's own PROT_NONE chunk. */
static void *thread_main(void *arg)
{
    if (arg) (void)opaque(live_block(100));
    uintptr_t a = foreign_chunk() + 0x1230;
    say("thread_tid=%d\n", (int)my_tid());
    crash_at(a, "%s", NOT_HAKMEM);
}

/* ud2 and idiv at known addresses: si_addr of SIGILL / SIGFPE is the faulting instruction. */
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl test_crash_ud2\n.type test_crash_ud2,@function\n"
        "test_crash_ud2:\n\tud2\n\tret\n.size test_crash_ud2, .-test_crash_ud2\n"
        ".globl test_crash_div0\n.type test_crash_div0,@function\n"
        "test_crash_div0:\n\txorl %ecx, %ecx\n\tmovl $1, %eax\n\txorl %edx, %edx\n"
        ".globl test_crash_idiv\ntest_crash_idiv:\n\tidivl %ecx\n\tret\n"
        ".size test_crash_div0, .-test_crash_div0\n");
void test_crash_ud2(void);
void test_crash_div0(void);
extern const char test_crash_idiv[];
#endif

/* earlier-handler: a constructor that runs, in the linked build, before hakmem's
 * unprioritised .init_array entry (the linker sorts prioritised entries first).
 * It records what it found and installs a plain SIGSEGV handler. */
static volatile sig_atomic_t early_seen_segv = -1, early_seen_bus = -1;
static void early_handler(int sig)
{
    (void)sig;
    static const char msg[] = "early handler ran\n";
    if (write(1, msg, sizeof msg - 1) < 0) {}
    _exit(43);
}
static void later_handler(int sig, siginfo_t *si, void *ctx)
{
    (void)sig; (void)si; (void)ctx;
    static const char msg[] = "later handler ran\n";
    if (write(1, msg, sizeof msg - 1) < 0) {}
    _exit(42);
}
/* "dfl", "ign", "ours-early", "ours-later", "siginfo" (someone's SA_SIGINFO handler) or "other". */
static const char *disposition(int sig)
{
    struct sigaction old;
    if (sigaction(sig, NULL, &old) != 0) return "error";
    if (old.sa_flags & SA_SIGINFO) return old.sa_sigaction == later_handler ? "ours-later" : "siginfo";
    if (old.sa_handler == SIG_DFL) return "dfl";
    if (old.sa_handler == SIG_IGN) return "ign";
    if (old.sa_handler == early_handler) return "ours-early";
    return "other";
}
static int disp_code(int sig)
{
    const char *d = disposition(sig);
    return !strcmp(d, "dfl") ? 0 : !strcmp(d, "siginfo") ? 1 : 2;
}
__attribute__((constructor(101))) static void early_constructor(void)
{
    const char *e = getenv("TEST_CRASH_EARLY_HANDLER");
    if (!e || strcmp(e, "1") != 0) return;
    early_seen_segv = disp_code(SIGSEGV);
    early_seen_bus = disp_code(SIGBUS);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = early_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

static const int crash_signals[5] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
static const char *const crash_signal_names[5] = { "SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT" };

static void say_dispositions(void)
{
    for (int i = 0; i < 5; i++) say("disp %s=%s\n", crash_signal_names[i], disposition(crash_signals[i]));
}

static void run_case(const char *name, int hakmem)
{
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core); /* spawn_self does it too: no core files from the crashes */
    alarm(5);                         /* a hang in a child ends as SIGALRM, which the parent reports */
    test_who = "child";
    say("pid=%d\ntid=%d\n", (int)getpid(), (int)my_tid());
    /* Every case's main thread allocates a small block first, so it has a heap (a thread
     * that allocated only large blocks has none: they need no heap) and the report's heap
     * line is known.  no-heap-thread crashes in a thread that never allocates. */
    (void)opaque(live_block(100));

    if (!strcmp(name, "large-unmapped")) {
        /* HAKMEM_LARGE_CACHE_MB=0: free unmaps the block at once. */
        unsigned char *p = live_block(1 * MiB);
        free(opaque(p));
        uintptr_t a = (uintptr_t)p + 100;
        read_maps();
        if (is_mapped(a)) CHILD_FAIL("%p is still mapped after free(%p) of 1 MiB with the cache off", (void *)a, (void *)p);
        crash_at(a, "%s", NOT_HAKMEM);
    } else if (!strcmp(name, "large-past-end")) {
        unsigned char *p = live_block(1 * MiB + 5000);
        size_t usable = malloc_usable_size(p);
        uintptr_t s, e;
        read_maps();
        if (!vma_of((uintptr_t)p, &s, &e)) CHILD_FAIL("%p is not in /proc/self/maps", (void *)p);
        if (is_mapped(e)) { say("skip: %p, just past the mapping of %p, is mapped by something else\n", (void *)e, (void *)p); exit(0); }
        if (hakmem) {
            if ((uintptr_t)p & (CHUNK - 1)) CHILD_FAIL("large block %p does not start on a 4 MiB boundary", (void *)p);
            if (e != (uintptr_t)p + usable) { say("skip: the mapping of %p ends at %p, not at its end %p (merged with a neighbour)\n", (void *)p, (void *)e, (void *)((uintptr_t)p + usable)); exit(0); }
            if (e >= (uintptr_t)p + CHUNK) { say("skip: the block fills its chunk\n"); exit(0); }
        }
        crash_at(e, "past the end of large block %p (%zu bytes): not hakmem's", (void *)p, usable);
    } else if (!strcmp(name, "segment-past")) {
        unsigned char *p = live_block(64);
        uintptr_t seg = (uintptr_t)p & ~(CHUNK - 1), s, e;
        read_maps();
        if (!vma_of((uintptr_t)p, &s, &e)) CHILD_FAIL("%p is not in /proc/self/maps", (void *)p);
        if (e >= seg + CHUNK) { say("skip: the mapping of %p reaches the end of its 4 MiB chunk (%p)\n", (void *)p, (void *)e); exit(0); }
        if (is_mapped(e)) { say("skip: %p, just past the mapping of %p, is mapped by something else\n", (void *)e, (void *)p); exit(0); }
        crash_at(e, "in hakmem segment %p, past its mapped part: no hakmem block (another mapping may sit there)", (void *)seg);
    } else if (!strcmp(name, "large-live-ro")) {
        unsigned char *p = live_block(1 * MiB);
        size_t usable = malloc_usable_size(p);
        uintptr_t a = (uintptr_t)p + 8192 + 100;
        make_ro(a);
        crash_at(a, "inside the live large block %p of %zu bytes, offset %zu", (void *)p, usable, (size_t)(8192 + 100));
    } else if (!strcmp(name, "large-freed-ro")) {
        /* The default large cache (64 MiB) keeps the freed block mapped. */
        unsigned char *p = live_block(1 * MiB);
        size_t usable = malloc_usable_size(p);
        free(opaque(p));
        uintptr_t a = (uintptr_t)p + 100;
        if (!hakmem) {
            read_maps();
            if (!is_mapped(a)) crash_at(a, "%s", NOT_HAKMEM); /* glibc unmapped it */
        }
        make_ro(a);
        crash_at(a, "inside a FREED (cached) large block %p of %zu bytes, offset 100", (void *)p, usable);
    } else if (!strcmp(name, "slab-live-ro")) {
        slab_case(200, 0);
    } else if (!strcmp(name, "slab-free-ro")) {
        slab_case(200, 1);
    } else if (!strcmp(name, "slab-free-mid-ro")) {
        slab_case(3000, 1);
    } else if (!strcmp(name, "slab-guard")) {
        /* A program that guards part of its block with PROT_NONE: the block's
         * tag word lies on the faulting page, so the report must not read it
         * directly (a nested SIGSEGV would kill the process without a report). */
        unsigned char *p = aligned_alloc(OS_PAGE, OS_PAGE);
        if (!p) CHILD_FAIL("aligned_alloc(4096, 4096) failed");
        size_t stride = malloc_usable_size(p);
        if (mprotect(p, OS_PAGE, PROT_NONE) != 0) CHILD_FAIL("mprotect(PROT_NONE): %s", strerror(errno));
        crash_at((uintptr_t)p + 100, "%zu-byte block %p (class {class}), offset 100, which is not readable", stride,
                 (void *)p);
    } else if (!strcmp(name, "segment-header")) {
        if (!hakmem) { say("skip: hakmem's segment layout only\n"); exit(0); }
        unsigned char *p = live_block(64);
        uintptr_t seg = (uintptr_t)p & ~(CHUNK - 1);
        uintptr_t a = seg + 256; /* in slab page 0, the header */
        make_ro(a);
        crash_at(a, "in hakmem segment %p, on a page that holds no slab (free, or the header)", (void *)seg);
    } else if (!strcmp(name, "thread") || !strcmp(name, "no-heap-thread")) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, !strcmp(name, "thread") ? (void *)1 : NULL))
            CHILD_FAIL("pthread_create failed");
        pthread_join(t, NULL);
        CHILD_FAIL("the thread returned");
    } else if (!strcmp(name, "sigbus")) {
        /* A page of an empty memfd, mapped over the start of a chunk of the test's own. */
        int fd = (int)syscall(SYS_memfd_create, "test_crash", 0);
        if (fd < 0) CHILD_FAIL("memfd_create: %s", strerror(errno));
        uintptr_t c = foreign_chunk();
        void *m = mmap((void *)c, OS_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0); /* file size 0 */
        if (m == MAP_FAILED) CHILD_FAIL("mmap of a memfd: %s", strerror(errno));
        crash_at((uintptr_t)m + 64, "%s", NOT_HAKMEM);
#if defined(__x86_64__)
    } else if (!strcmp(name, "sigill")) {
        say("addr=%p\nwhat=%s\n", (void *)(uintptr_t)test_crash_ud2, NOT_HAKMEM);
        test_crash_ud2();
        CHILD_FAIL("ud2 did not raise SIGILL");
    } else if (!strcmp(name, "sigfpe")) {
        say("addr=%p\nwhat=%s\n", (void *)(uintptr_t)test_crash_idiv, NOT_HAKMEM);
        test_crash_div0();
        CHILD_FAIL("idiv by 0 did not raise SIGFPE");
#endif
    } else if (!strcmp(name, "abort")) {
        abort();
    } else if (!strcmp(name, "later-handler")) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = later_handler;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &old) != 0) CHILD_FAIL("sigaction: %s", strerror(errno));
        say("replaced=%s\n", (old.sa_flags & SA_SIGINFO) ? "siginfo" : old.sa_handler == SIG_DFL ? "dfl" : "other");
        poke(foreign_chunk());
        CHILD_FAIL("the write to a PROT_NONE page did not fault");
    } else if (!strcmp(name, "earlier-handler")) {
        say("ctor segv=%d bus=%d\n", (int)early_seen_segv, (int)early_seen_bus);
        say("now segv=%s bus=%s\n", disposition(SIGSEGV), disposition(SIGBUS));
        poke(foreign_chunk());
        CHILD_FAIL("the write to a PROT_NONE page did not fault");
    } else if (!strcmp(name, "off-segv") || !strcmp(name, "off-abort")) {
        say_dispositions();
        if (!strcmp(name, "off-abort")) abort();
        poke(foreign_chunk());
        CHILD_FAIL("the write to a PROT_NONE page did not fault");
    } else if (!strcmp(name, "normal-run")) {
        for (int i = 0; i < 1000; i++) free(opaque(live_block((size_t)(i % 50) * 37 + 1)));
        free(opaque(live_block(1 * MiB)));
        say_dispositions();
        exit(0);
    } else {
        say("skip: case %s not built on this architecture\n", name);
        exit(0);
    }
    CHILD_FAIL("case %s fell through", name);
}

/* ------------------------------------------------------------------------- */
/* parent side                                                               */

static int hakmem_mode;

enum { ENV_REPORT = 1, ENV_NO_LARGE_CACHE = 2, ENV_EARLY = 4 };

static void spawn_case(const char *name, unsigned env, child_result_t *r)
{
    static const char *const drop[] = { "HAKMEM_CRASH_REPORT=", "HAKMEM_STATS=", "HAKMEM_STATS_FILE=", "HAKMEM_VERBOSE=",
                                        "HAKMEM_LARGE_CACHE_MB=", "TEST_CRASH_EARLY_HANDLER=", NULL };
    /* The runner's HAKMEM_LARGE_CACHE_MB is dropped for every child: large-freed-ro needs the
     * default cache (the freed block must stay mapped), large-unmapped needs it off. */
    const char *add[4];
    int n = 0;
    if (env & ENV_REPORT) add[n++] = "HAKMEM_CRASH_REPORT=1";
    if (env & ENV_NO_LARGE_CACHE) add[n++] = "HAKMEM_LARGE_CACHE_MB=0";
    if (env & ENV_EARLY) add[n++] = "TEST_CRASH_EARLY_HANDLER=1";
    add[n] = NULL;
    char *argv[] = { (char *)test_name, (char *)"--case", (char *)name, (char *)(hakmem_mode ? "hakmem" : "system"), NULL };
    spawn_self(argv, drop, add, r);
}

static const char *signame(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV (invalid memory access)";
    case SIGBUS: return "SIGBUS (bus error)";
    case SIGILL: return "SIGILL (illegal instruction)";
    case SIGFPE: return "SIGFPE (arithmetic error)";
    case SIGABRT: return "SIGABRT (abort)";
    default: return "?";
    }
}

static void describe_status(int status, char *buf, size_t n)
{
    if (WIFSIGNALED(status)) snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status)) snprintf(buf, n, "exit status %d", WEXITSTATUS(status));
    else snprintf(buf, n, "status 0x%x", status);
}

/* One failed check of a case: what was wanted vs what happened, then the child's output. */
static void case_failure(const char *name, const child_result_t *r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void case_failure(const char *name, const child_result_t *r, const char *fmt, ...)
{
    char st[96];
    describe_status(r->status, st, sizeof st);
    fprintf(stderr, "FAIL %s: case %s: ", test_name, name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  child: %s\n  child stdout:\n%s  child stderr:\n%s", st, r->nout ? r->out : "(empty)\n",
            r->nerr ? r->err : "(empty)\n");
    test_failures++;
}

/* The value of the child's stdout line "key=value" (copied; "" if absent). */
static const char *info(const child_result_t *r, const char *key)
{
    static char val[4][400];
    static int slot;
    char *v = val[slot++ & 3];
    v[0] = 0;
    const char *cur = r->out, *line;
    size_t len, kl = strlen(key);
    while ((line = next_line(&cur, &len)))
        if (len > kl && !strncmp(line, key, kl) && line[kl] == '=') {
            snprintf(v, 400, "%.*s", (int)(len - kl - 1), line + kl + 1);
            break;
        }
    return v;
}

/* The "hakmem: " lines of the child's stderr (at most 16), and whether stderr held anything else. */
typedef struct { const char *line[16]; size_t len[16]; int n, other; } hk_lines_t;
static void hakmem_lines(const child_result_t *r, hk_lines_t *h)
{
    const char *cur = r->err, *line;
    size_t len;
    h->n = h->other = 0;
    while ((line = next_line(&cur, &len))) {
        if (!starts_with(line, len, "hakmem: ")) { h->other++; continue; }
        if (h->n < 16) { h->line[h->n] = line; h->len[h->n] = len; }
        h->n++;
    }
}
static int line_is(const char *line, size_t len, const char *want)
{
    return strlen(want) == len && !memcmp(line, want, len);
}
/* Does the line match the pattern, where "{class}" stands for a class number
 * (1..52: class 0 means "no slab")? */
static int line_matches(const char *line, size_t len, const char *pat)
{
    size_t i = 0;
    while (*pat) {
        if (!strncmp(pat, "{class}", 7)) {
            size_t d = i;
            long c = 0;
            while (i < len && line[i] >= '0' && line[i] <= '9' && i - d < 3) c = c * 10 + (line[i++] - '0');
            if (i == d || c < 1 || c > 52) return 0;
            pat += 7;
            continue;
        }
        if (i >= len || line[i] != *pat) return 0;
        i++;
        pat++;
    }
    return i == len;
}

static int skipped(const char *name, const child_result_t *r)
{
    const char *s = strstr(r->out, "skip: ");
    if (!s || !WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0) return 0;
    const char *nl = strchr(s, '\n');
    printf("case %s: skipped (%.*s)\n", name, (int)(nl ? nl - s - 6 : (long)strlen(s + 6)), s + 6);
    return 1;
}

/* What a report case expects: R_ADDR a fault-address line; R_THREAD the report names the
 * child's "thread_tid" (a second thread) rather than its main thread; R_NOHEAP the
 * faulting thread never allocated, so it has no heap. */
enum { R_ADDR = 1, R_THREAD = 2, R_NOHEAP = 4 };

/* A case that must print the report (hakmem) and die of sig. */
static void check_report_case(const char *name, unsigned env, int sig, unsigned opts)
{
    int addr_line = !!(opts & R_ADDR), thread = !!(opts & R_THREAD);
    static child_result_t r;
    spawn_case(name, env, &r);
    if (skipped(name, &r)) return;
    if (strstr(r.err, "FAIL ")) { case_failure(name, &r, "the child reported a failure before crashing"); return; }
    if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != sig) {
        case_failure(name, &r, "want death by signal %d (%s), the original signal", sig, strsignal(sig));
        return;
    }
    if (strstr(r.out, "survived")) { case_failure(name, &r, "the child went on after the faulting write"); return; }
    hk_lines_t h;
    hakmem_lines(&r, &h);
    if (!hakmem_mode) {
        if (h.n) case_failure(name, &r, "glibc run printed %d \"hakmem: \" line(s)", h.n);
        else printf("case %s: died of %s (report checks skipped: glibc)\n", name, strsignal(sig));
        return;
    }
    int want = addr_line ? 4 : 3;
    int reports = 0;
    for (int i = 0; i < h.n && i < 16; i++)
        if (line_has(h.line[i], h.len[i], "crash report")) reports++;
    if (reports != 1) { case_failure(name, &r, "want exactly 1 \"hakmem: crash report\" line, got %d", reports); return; }
    if (h.n != want || h.other) {
        case_failure(name, &r, "want exactly %d stderr lines, all \"hakmem: \" lines; got %d \"hakmem: \" line(s) and %d other(s)",
                     want, h.n, h.other);
        return;
    }
    char exp[600];
    const char *tid = info(&r, thread ? "thread_tid" : "tid"), *pid = info(&r, "pid");
    if (!*tid || !*pid) { case_failure(name, &r, "the child did not print its pid and tid"); return; }
    if (thread && !strcmp(tid, pid)) { case_failure(name, &r, "the thread's tid %s equals the pid", tid); return; }
    snprintf(exp, sizeof exp, "hakmem: crash report (HAKMEM_CRASH_REPORT=1): %s in thread %s of pid %s", signame(sig), tid, pid);
    if (!line_is(h.line[0], h.len[0], exp)) {
        case_failure(name, &r, "line 1: want \"%s\", got \"%.*s\"", exp, (int)h.len[0], h.line[0]);
        return;
    }
    int k = 1;
    if (addr_line) {
        const char *addr = info(&r, "addr"), *what = info(&r, "what");
        if (!*addr || !*what) { case_failure(name, &r, "the child did not print addr= and what="); return; }
        snprintf(exp, sizeof exp, "hakmem:   fault address %s: %s", addr, what);
        if (!line_matches(h.line[1], h.len[1], exp)) {
            case_failure(name, &r, "line 2: want \"%s\"%s, got \"%.*s\"", exp, strstr(exp, "{class}") ? " ({class}: 1..52)" : "",
                         (int)h.len[1], h.line[1]);
            return;
        }
        k = 2;
    }
    /* The thread has allocated a small block (every case's main thread does, first) and
     * crashed outside hakmem; or (R_NOHEAP) it never allocated. */
    const char *hp = "hakmem:   this thread's heap: 0x", *hs = "; the thread was not inside a hakmem slow path";
    size_t hl = strlen(hs);
    if (opts & R_NOHEAP) {
        const char *nh = "hakmem:   this thread has no hakmem heap (it has allocated no small block)";
        if (!line_is(h.line[k], h.len[k], nh)) {
            case_failure(name, &r, "line %d: want \"%s\", got \"%.*s\"", k + 1, nh, (int)h.len[k], h.line[k]);
            return;
        }
    } else if (!starts_with(h.line[k], h.len[k], hp) || h.len[k] < strlen(hp) + hl || memcmp(h.line[k] + h.len[k] - hl, hs, hl)) {
        case_failure(name, &r, "line %d: want \"%s...%s\", got \"%.*s\"", k + 1, hp, hs, (int)h.len[k], h.line[k]);
        return;
    }
    const char *last = "hakmem:   the signal now goes to the program's previous handler (or the core dump)";
    if (!line_is(h.line[k + 1], h.len[k + 1], last)) {
        case_failure(name, &r, "line %d: want \"%s\", got \"%.*s\"", k + 2, last, (int)h.len[k + 1], h.line[k + 1]);
        return;
    }
    printf("case %s: report OK, died of %s\n", name, strsignal(sig));
}

/* Parses the child's "disp SIGX=..." lines; returns how many of the five equal want. */
static int count_dispositions(const child_result_t *r, const char *want, char *seen, size_t n)
{
    int match = 0;
    seen[0] = 0;
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof key, "disp %s", crash_signal_names[i]);
        const char *v = info(r, key);
        if (!strcmp(v, want)) match++;
        size_t used = strlen(seen);
        snprintf(seen + used, n - used, "%s%s=%s", i ? " " : "", crash_signal_names[i], *v ? v : "(missing)");
    }
    return match;
}

static void check_off(const char *name, int sig)
{
    static child_result_t r;
    spawn_case(name, 0, &r);
    if (strstr(r.err, "FAIL ")) { case_failure(name, &r, "the child reported a failure"); return; }
    if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != sig) {
        case_failure(name, &r, "want death by signal %d (%s)", sig, strsignal(sig));
        return;
    }
    hk_lines_t h;
    hakmem_lines(&r, &h);
    if (h.n) { case_failure(name, &r, "HAKMEM_CRASH_REPORT unset, yet %d \"hakmem: \" line(s)", h.n); return; }
    char seen[200];
    int dfl = count_dispositions(&r, "dfl", seen, sizeof seen);
    if (dfl != 5) { case_failure(name, &r, "want all 5 dispositions SIG_DFL (the report is off by default), got %s", seen); return; }
    printf("case %s: no report, died of %s\n", name, strsignal(sig));
}

static void check_normal_run(void)
{
    static child_result_t r;
    const char *name = "normal-run";
    spawn_case(name, ENV_REPORT, &r);
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) { case_failure(name, &r, "want exit status 0"); return; }
    if (r.nerr) { case_failure(name, &r, "want empty stderr, got %zu bytes", r.nerr); return; }
    char seen[200];
    if (!hakmem_mode) {
        int dfl = count_dispositions(&r, "dfl", seen, sizeof seen);
        if (dfl != 5) case_failure(name, &r, "glibc: want all 5 dispositions SIG_DFL, got %s", seen);
        else printf("case %s: exit 0, no output (handler checks skipped: glibc)\n", name);
        return;
    }
    int si = count_dispositions(&r, "siginfo", seen, sizeof seen);
    if (si != 5) {
        case_failure(name, &r, "want an SA_SIGINFO handler (hakmem's) for all 5 signals, got %d: %s", si, seen);
        return;
    }
    printf("case %s: exit 0, no output, handlers installed for all 5 signals\n", name);
}

static void check_later_handler(void)
{
    static child_result_t r;
    const char *name = "later-handler";
    spawn_case(name, ENV_REPORT, &r);
    if (strstr(r.err, "FAIL ")) { case_failure(name, &r, "the child reported a failure"); return; }
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 42 || !strstr(r.out, "later handler ran")) {
        case_failure(name, &r, "want the program's own SIGSEGV handler to run (it prints \"later handler ran\" and exits 42)");
        return;
    }
    hk_lines_t h;
    hakmem_lines(&r, &h);
    if (h.n) { case_failure(name, &r, "want no \"hakmem: \" line (the program's handler replaced hakmem's), got %d", h.n); return; }
    const char *rep = info(&r, "replaced");
    if (hakmem_mode && strcmp(rep, "siginfo") != 0) {
        case_failure(name, &r, "the program's sigaction(SIGSEGV) should have replaced hakmem's SA_SIGINFO handler, found \"%s\"", rep);
        return;
    }
    printf("case %s: the program's handler ran (exit 42), no report\n", name);
}

static void check_earlier_handler(void)
{
    static child_result_t r;
    const char *name = "earlier-handler";
    spawn_case(name, ENV_REPORT | ENV_EARLY, &r);
    if (strstr(r.err, "FAIL ")) { case_failure(name, &r, "the child reported a failure"); return; }
    int ctor_segv = -1, ctor_bus = -1;
    char now_segv[32] = "", now_bus[32] = "";
    const char *l = strstr(r.out, "ctor segv=");
    if (l) sscanf(l, "ctor segv=%d bus=%d", &ctor_segv, &ctor_bus);
    l = strstr(r.out, "now segv=");
    if (l) sscanf(l, "now segv=%31s bus=%31s", now_segv, now_bus);
    if (ctor_segv < 0 || !now_segv[0]) { case_failure(name, &r, "the constructor(101) did not run or the child printed nothing"); return; }
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 43 || !strstr(r.out, "early handler ran")) {
        case_failure(name, &r, "want the handler installed by the constructor to run (\"early handler ran\", exit 43); "
                               "SIGSEGV disposition in main: %s", now_segv);
        return;
    }
    hk_lines_t h;
    hakmem_lines(&r, &h);
    if (h.n) { case_failure(name, &r, "want no \"hakmem: \" line (the earlier handler was kept), got %d", h.n); return; }
    if (!hakmem_mode) { printf("case %s: the constructor's handler ran (exit 43)\n", name); return; }
    if (ctor_segv != 0 || ctor_bus != 0) {
        /* hakmem's load hook ran before the constructor (preloaded: the library's constructors run
         * before the executable's): an earlier handler cannot be arranged from the program. */
        printf("case %s: skipped (hakmem's constructor ran before the program's constructor(101): "
               "SIGSEGV/SIGBUS were %s/%s there, so no handler can precede it; the later handler ran)\n",
               name, ctor_segv == 1 ? "hakmem's" : ctor_segv ? "other" : "default", ctor_bus == 1 ? "hakmem's" : ctor_bus ? "other" : "default");
        return;
    }
    /* The constructor saw both default: hakmem loaded after it.  It must have kept the constructor's
     * SIGSEGV handler and still installed its own for SIGBUS (default then). */
    if (strcmp(now_segv, "ours-early") != 0) { case_failure(name, &r, "want SIGSEGV still the constructor's handler in main, found %s", now_segv); return; }
    if (strcmp(now_bus, "siginfo") != 0) {
        case_failure(name, &r, "want hakmem's SA_SIGINFO handler on SIGBUS (default when it loaded), found %s", now_bus);
        return;
    }
    printf("case %s: hakmem loaded after the constructor(101), kept its SIGSEGV handler and took SIGBUS\n", name);
}

static void on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL " TEST_NAME ": watchdog: the cases took more than 30 s\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(1);
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "--case")) run_case(argv[2], !strcmp(argv[3], "hakmem"));
    hakmem_mode = argc >= 2 && !strcmp(argv[1], "hakmem");
    signal(SIGALRM, on_watchdog);
    alarm(30);
    if (!hakmem_mode) printf("glibc run: hakmem's report checks are skipped; every child must still die of its signal\n");

    check_report_case("large-unmapped", ENV_REPORT | ENV_NO_LARGE_CACHE, SIGSEGV, R_ADDR);
    check_report_case("large-past-end", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("segment-past", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("large-live-ro", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("large-freed-ro", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("slab-live-ro", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("slab-free-ro", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("slab-free-mid-ro", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("slab-guard", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("segment-header", ENV_REPORT, SIGSEGV, R_ADDR);
    check_report_case("thread", ENV_REPORT, SIGSEGV, R_ADDR | R_THREAD);
    check_report_case("no-heap-thread", ENV_REPORT, SIGSEGV, R_ADDR | R_THREAD | R_NOHEAP);
    check_report_case("sigbus", ENV_REPORT, SIGBUS, R_ADDR);
#if defined(__x86_64__)
    check_report_case("sigill", ENV_REPORT, SIGILL, R_ADDR);
    check_report_case("sigfpe", ENV_REPORT, SIGFPE, R_ADDR);
#endif
    check_report_case("abort", ENV_REPORT, SIGABRT, 0);
    check_later_handler();
    check_earlier_handler();
    check_off("off-segv", SIGSEGV);
    check_off("off-abort", SIGABRT);
    check_normal_run();
    return test_finish("case");
}

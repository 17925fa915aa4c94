/*
 * test_nopie.c — hakmem serving a non-PIE executable that takes malloc's address.
 *
 * In a non-PIE executable, taking the address of malloc (a table of function pointers,
 * as CPython's allocator tables do) gives malloc a "canonical PLT entry": the
 * executable's dynamic symbol table defines malloc as its own PLT stub, so
 * dlsym(RTLD_DEFAULT, "malloc") returns an address in the executable, not in the
 * library that serves it.  An allocator that decides "am I the process's malloc?" by
 * where that symbol lives concludes it is not (Debian's /usr/bin/python3 made hakmem
 * pass every call on to "the process's malloc", which was itself: a hang).
 *
 * This program is built with -no-pie and keeps malloc, free, realloc and calloc in a
 * table.  A child ("--case run") allocates, reallocates and frees through the table
 * and directly, under a watchdog; the parent checks that it exited 0 and printed no
 * "hakmem: " line.  With "hakmem" (preloaded or linked), the child also checks that
 * hakmem served the blocks: malloc(24) has hakmem's usable size, 32 (glibc: 24).
 *
 * Usage: test_nopie [hakmem]
 */
// cflags: -no-pie -fno-pie
#define TEST_NAME "test_nopie"
#include "test_common.h"
#include <malloc.h>

typedef struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*realloc)(void *, size_t);
    void *(*calloc)(size_t, size_t);
} table_t;

/* Addresses taken in non-PIC code (absolute relocations in the text): the linker gives
 * the executable canonical PLT entries for them. */
static table_t table;
__attribute__((noinline)) static void take_addresses(void)
{
    table.malloc = malloc;
    table.free = free;
    table.realloc = realloc;
    table.calloc = calloc;
}

static void run(int hakmem)
{
    alarm(10); /* a forwarding loop shows up as a hang */
    take_addresses();
    table_t *t = opaque(&table);
    enum { N = 2000 };
    static void *p[N];
    rng_t r = rng_seed(42);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < N; i++) {
            size_t n = 1 + rnd(&r) % (i % 50 == 0 ? 400000 : 3000);
            p[i] = i % 3 ? t->malloc(n) : t->calloc(1, n);
            CHECK(p[i] != NULL, "malloc(%zu) through the table returned NULL", n);
            fill(p[i], n < 64 ? n : 64, (unsigned)i);
            if (i % 7 == 0) {
                void *q = t->realloc(p[i], n + 100);
                CHECK(q != NULL, "realloc(%zu) through the table returned NULL", n + 100);
                CHECK(verify(q, n < 64 ? n : 64, (unsigned)i) == (n < 64 ? n : 64), "realloc lost contents");
                p[i] = q;
            }
        }
        for (int i = 0; i < N; i++) (i % 2 ? t->free : free)(p[i]);
    }
    void *b = malloc(24);
    size_t usable = malloc_usable_size(b);
    free(b);
    if (hakmem)
        CHECK(usable == 32, "malloc(24) has usable size %zu: not served by hakmem (which gives 32)", usable);
    printf("ok: usable size of malloc(24) = %zu\n", usable);
    exit(0);
}

int main(int argc, char **argv)
{
    int hakmem = argc >= 2 && !strcmp(argv[argc - 1], "hakmem");
    if (argc >= 3 && !strcmp(argv[1], "--case")) run(hakmem);
    static const char *const drop[] = { "HAKMEM_STATS=", "HAKMEM_VERBOSE=", NULL };
    static const char *const add[] = { NULL };
    char *cargv[] = { (char *)test_name, (char *)"--case", (char *)"run", hakmem ? (char *)"hakmem" : NULL, NULL };
    static child_result_t res;
    spawn_self(cargv, drop, add, &res);
    const char *cur = res.err, *line;
    size_t len;
    int lines = 0;
    while ((line = next_line(&cur, &len)))
        if (starts_with(line, len, "hakmem: ")) lines++;
    CHECK(WIFEXITED(res.status) && WEXITSTATUS(res.status) == 0,
          "the child did not exit 0 (status 0x%x; a SIGALRM means a hang)\n  stderr: %s", res.status,
          res.nerr ? res.err : "(empty)");
    CHECK(lines == 0, "the child printed %d \"hakmem: \" line(s):\n%s", lines, res.err);
    printf("%s", res.out);
    return test_finish("check");
}

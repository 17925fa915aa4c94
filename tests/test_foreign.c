/*
 * test_foreign.c — pointers the allocator did not hand out itself, and memory
 * allocated by libc on the program's behalf.
 *
 *   - blocks from glibc's own __libc_malloc / __libc_calloc / __libc_realloc /
 *     __libc_memalign passed to free, realloc (grow and shrink, contents kept)
 *     and malloc_usable_size (>= request);
 *   - blocks allocated in a .preinit_array function and in a constructor with
 *     priority 101 (under LD_PRELOAD these run before or after the allocator's
 *     own initialisation), freed / realloc'ed in main;
 *   - memory returned by libc functions that allocate internally: strdup,
 *     strndup, getline, getdelim, asprintf, vasprintf, open_memstream,
 *     fopen/fclose, realpath(..., NULL), getcwd(NULL, 0), scandir, glob,
 *     regcomp/regfree, qsort (temporary buffer), dlopen/dlsym/dlerror/dlclose.
 *
 * Usage: test_foreign [hakmem] (argument ignored).
 */
#define TEST_NAME "test_foreign"
#include "test_common.h"
#include <dirent.h>
#include <dlfcn.h>
#include <glob.h>
#include <limits.h>
#include <malloc.h>
#include <regex.h>
#include <sys/stat.h>

/* glibc's allocator entry points: they always use glibc's malloc, even when
 * malloc itself is interposed (LD_PRELOAD) or linked in statically. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

/* ------------------------------------------------------------------------- */
/* blocks allocated before main                                              */

enum { EARLY = 6 };
static const size_t early_sizes[EARLY] = { 24, 1000, 5000, 100 * KiB, 600 * KiB, 5 * MiB };
static void *preinit_blocks[EARLY], *ctor_blocks[EARLY];
static char *preinit_str, *ctor_str;
static void *preinit_aligned, *ctor_calloc;

static void early_alloc(void **blocks, unsigned seed)
{
    for (int i = 0; i < EARLY; i++) {
        blocks[i] = malloc(early_sizes[i]);
        if (blocks[i]) fill(blocks[i], early_sizes[i], seed + (unsigned)i);
    }
}

/* Runs before any shared-object constructor, including the allocator's. */
static void preinit(int argc, char **argv, char **envp)
{
    (void)argc; (void)argv; (void)envp;
    early_alloc(preinit_blocks, 100);
    preinit_str = strdup("allocated in .preinit_array");
    if (posix_memalign(&preinit_aligned, 4096, 3000) == 0) fill(preinit_aligned, 3000, 55);
}
__attribute__((section(".preinit_array"), used))
static void (*const preinit_entry)(int, char **, char **) = preinit;

__attribute__((constructor(101)))
static void early_ctor(void)
{
    early_alloc(ctor_blocks, 200);
    ctor_str = strdup("allocated in constructor(101)");
    ctor_calloc = calloc(1000, 7);
}

static void test_early_blocks(void)
{
    CHECK(preinit_str && strcmp(preinit_str, "allocated in .preinit_array") == 0, "preinit strdup");
    CHECK(ctor_str && strcmp(ctor_str, "allocated in constructor(101)") == 0, "ctor strdup");
    CHECK(preinit_aligned && is_aligned(preinit_aligned, 4096), "preinit posix_memalign");
    CHECK(verify(preinit_aligned, 3000, 55) == 3000, "preinit aligned block corrupted");
    CHECK(malloc_usable_size(preinit_aligned) >= 3000, "preinit aligned usable size");
    CHECK(ctor_calloc != NULL, "ctor calloc");
    const unsigned char *z = opaque(ctor_calloc);
    for (size_t i = 0; i < 7000; i++) CHECK(z[i] == 0, "ctor calloc byte %zu not zero", i);

    for (int i = 0; i < EARLY; i++) {
        size_t n = early_sizes[i];
        void **pair[2] = { &preinit_blocks[i], &ctor_blocks[i] };
        for (int k = 0; k < 2; k++) {
            unsigned seed = (k ? 200u : 100u) + (unsigned)i;
            void *p = *pair[k];
            CHECK(p != NULL, "early malloc(%zu) failed", n);
            CHECK(verify(p, n, seed) == n, "early block of %zu corrupted", n);
            CHECK(malloc_usable_size(p) >= n, "early block of %zu: usable %zu", n, malloc_usable_size(p));
            if (i % 2 == 0) {
                /* grow then shrink, contents kept */
                void *q = realloc(p, 3 * n + 100);
                CHECK(q != NULL, "realloc early block %zu -> %zu", n, 3 * n + 100);
                CHECK(verify(q, n, seed) == n, "realloc of early block lost contents");
                q = realloc(q, n / 2 + 1);
                CHECK(q != NULL && verify(q, n / 2 + 1, seed) == n / 2 + 1, "shrink of early block");
                free(q);
            } else {
                free(p);
            }
            *pair[k] = NULL;
        }
    }
    preinit_str = realloc(preinit_str, 1000);
    CHECK(preinit_str && strcmp(preinit_str, "allocated in .preinit_array") == 0, "realloc preinit string");
    free(preinit_str);
    free(ctor_str);
    free(preinit_aligned);
    free(ctor_calloc);
}

/* ------------------------------------------------------------------------- */
/* blocks from glibc's __libc_* functions                                    */

static const size_t libc_sizes[] = { 1, 8, 24, 100, 1000, 4096, 5000, 70000, 100 * KiB,
                                     300 * KiB, MiB, 8 * MiB /* mmapped by glibc */ };
#define NLIBC (sizeof libc_sizes / sizeof libc_sizes[0])

static void test_libc_blocks(void)
{
    /* free */
    for (size_t k = 0; k < NLIBC; k++) {
        size_t n = libc_sizes[k];
        void *p = __libc_malloc(n);
        CHECK(p != NULL, "__libc_malloc(%zu)", n);
        fill(p, n, 1);
        CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(__libc_malloc(%zu)) = %zu", n, malloc_usable_size(p));
        free(p);
    }
    /* realloc grow and shrink */
    for (size_t k = 0; k < NLIBC; k++) {
        size_t n = libc_sizes[k];
        unsigned char *p = __libc_malloc(n);
        CHECK(p != NULL, "__libc_malloc(%zu)", n);
        fill(p, n, 2);
        size_t big = 2 * n + 17;
        unsigned char *q = realloc(p, big);
        CHECK(q != NULL, "realloc(__libc_malloc(%zu), %zu)", n, big);
        CHECK(verify(q, n, 2) == n, "realloc grow of libc block %zu lost contents", n);
        CHECK(malloc_usable_size(q) >= big, "usable after realloc");
        free(q);

        p = __libc_malloc(n);
        CHECK(p != NULL, "__libc_malloc(%zu)", n);
        fill(p, n, 3);
        size_t small = n / 3 + 1;
        q = realloc(p, small);
        CHECK(q != NULL, "realloc(__libc_malloc(%zu), %zu)", n, small);
        CHECK(verify(q, small, 3) == small, "realloc shrink of libc block %zu lost contents", n);
        q = realloc(q, n + 1000); /* and grow again, now whatever the block is */
        CHECK(q != NULL && verify(q, small, 3) == small, "realloc regrow of libc block %zu", n);
        free(q);

        /* realloc(p, 0) of a foreign block frees it */
        p = __libc_malloc(n);
        CHECK(p != NULL, "__libc_malloc(%zu)", n);
        q = realloc(p, 0);
        CHECK(q == NULL, "realloc(libc block, 0) = %p, want NULL", (void *)q);
    }
    /* calloc'ed */
    for (size_t k = 0; k < NLIBC; k++) {
        size_t n = libc_sizes[k];
        unsigned char *p = __libc_calloc(1, n);
        CHECK(p != NULL, "__libc_calloc(%zu)", n);
        for (size_t i = 0; i < n; i++) CHECK(p[i] == 0, "__libc_calloc not zero");
        CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(__libc_calloc(%zu))", n);
        fill(p, n, 4);
        unsigned char *q = realloc(p, n + 4096);
        CHECK(q != NULL && verify(q, n, 4) == n, "realloc of __libc_calloc block %zu", n);
        free(q);
    }
    /* __libc_realloc(NULL, n) and __libc_realloc growth, then ours */
    for (size_t k = 0; k < NLIBC; k++) {
        size_t n = libc_sizes[k];
        unsigned char *p = __libc_realloc(NULL, n);
        CHECK(p != NULL, "__libc_realloc(NULL, %zu)", n);
        fill(p, n, 5);
        p = __libc_realloc(p, n * 2);
        CHECK(p != NULL && verify(p, n, 5) == n, "__libc_realloc grow");
        CHECK(malloc_usable_size(p) >= n * 2, "malloc_usable_size(__libc_realloc block)");
        unsigned char *q = realloc(p, n / 2 + 1);
        CHECK(q != NULL && verify(q, n / 2 + 1, 5) == n / 2 + 1, "realloc of __libc_realloc block");
        free(q);
    }
    /* __libc_memalign */
    static const size_t aligns[] = { 16, 32, 64, 256, 4096, 65536 };
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        for (size_t k = 0; k < NLIBC; k += 2) {
            size_t n = libc_sizes[k];
            unsigned char *p = __libc_memalign(aligns[a], n);
            CHECK(p != NULL && is_aligned(p, aligns[a]), "__libc_memalign(%zu, %zu)", aligns[a], n);
            CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(__libc_memalign(%zu, %zu)) = %zu",
                  aligns[a], n, malloc_usable_size(p));
            fill(p, n, 6);
            if (k % 4 == 0) {
                free(p);
            } else {
                unsigned char *q = realloc(p, n * 3);
                CHECK(q != NULL && verify(q, n, 6) == n, "realloc of __libc_memalign block");
                free(q);
            }
        }
    }
    /* many live foreign blocks mixed with our own, freed interleaved */
    enum { MIX = 400 };
    static void *mix[MIX];
    for (int i = 0; i < MIX; i++) {
        size_t n = 16 + (size_t)i * 37 % 3000;
        mix[i] = (i & 1) ? __libc_malloc(n) : malloc(n);
        CHECK(mix[i] != NULL, "alloc");
        fill(mix[i], n, (unsigned)i);
    }
    for (int i = MIX - 1; i >= 0; i--) {
        size_t n = 16 + (size_t)i * 37 % 3000;
        CHECK(verify(mix[i], n, (unsigned)i) == n, "mixed block %d corrupted", i);
        free(mix[i]);
    }
}

/* ------------------------------------------------------------------------- */
/* memory allocated by libc functions                                        */

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && s != NULL, "vasprintf failed");
    return s;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void test_libc_functions(void)
{
    /* strdup / strndup */
    char *s = strdup("hello, world");
    CHECK(s && strcmp(s, "hello, world") == 0, "strdup");
    s = realloc(s, 10000);
    CHECK(s && strcmp(s, "hello, world") == 0, "realloc(strdup)");
    free(s);
    s = strndup("abcdefghijklmnop", 5);
    CHECK(s && strcmp(s, "abcde") == 0 && malloc_usable_size(s) >= 6, "strndup");
    free(s);

    /* asprintf, small and large */
    s = NULL;
    CHECK(asprintf(&s, "%d-%s", 42, "x") == 4 && strcmp(s, "42-x") == 0, "asprintf");
    free(s);
    s = xasprintf("%0*d", 200000, 7);
    CHECK(strlen(s) == 200000 && s[199999] == '7', "big vasprintf");
    free(s);

    /* getline / getdelim on a temporary file with lines of growing length */
    char path[] = "/tmp/hakmem_test_foreign_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "w+");
    CHECK(f != NULL, "fdopen");
    static const size_t lens[] = { 0, 1, 10, 100, 119, 120, 121, 1000, 5000, 70000, 300000 };
    enum { NL = sizeof lens / sizeof lens[0] };
    for (size_t i = 0; i < NL; i++) {
        for (size_t j = 0; j < lens[i]; j++) fputc('a' + (int)((i + j) % 26), f);
        fputc('\n', f);
    }
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < NL; i++) {
        ssize_t got = getline(&line, &cap, f);
        CHECK(got == (ssize_t)lens[i] + 1, "getline %zu: got %zd", i, got);
        CHECK(malloc_usable_size(line) >= cap || cap == 0, "getline buffer: usable %zu < cap %zu",
              malloc_usable_size(line), cap);
        for (size_t j = 0; j < lens[i]; j++)
            CHECK(line[j] == 'a' + (int)((i + j) % 26), "getline content");
    }
    CHECK(getline(&line, &cap, f) == -1, "getline EOF");
    free(line);
    rewind(f);
    line = NULL; /* fresh buffer from getdelim */
    cap = 0;
    ssize_t got = getdelim(&line, &cap, 'Z', f); /* no 'Z': reads the whole file */
    CHECK(got > 300000, "getdelim read %zd", got);
    free(line);
    fclose(f); /* frees the FILE and its buffer */
    unlink(path);

    /* many fopen/fclose cycles (libc allocates FILE + buffer) */
    for (int i = 0; i < 200; i++) {
        FILE *g = fopen("/proc/self/stat", "r");
        CHECK(g != NULL, "fopen");
        char buf[64];
        CHECK(fgets(buf, sizeof buf, g) != NULL, "fgets");
        fclose(g);
    }

    /* open_memstream: libc reallocs the buffer, we free it */
    char *ms = NULL;
    size_t mslen = 0;
    FILE *m = open_memstream(&ms, &mslen);
    CHECK(m != NULL, "open_memstream");
    for (int i = 0; i < 20000; i++) fprintf(m, "%d,", i);
    fclose(m);
    CHECK(ms && mslen > 100000 && strncmp(ms, "0,1,2,", 6) == 0, "open_memstream content");
    free(ms);

    /* realpath / getcwd */
    char *rp = realpath("/proc/self/../self/.", NULL);
    CHECK(rp != NULL && rp[0] == '/', "realpath");
    free(rp);
    char *cwd = getcwd(NULL, 0);
    CHECK(cwd != NULL && cwd[0] == '/', "getcwd(NULL, 0)");
    free(cwd);

    /* scandir: the array and every entry are malloc'ed by libc */
    struct dirent **ents = NULL;
    int ne = scandir("/proc/self", &ents, NULL, alphasort);
    CHECK(ne > 2, "scandir");
    for (int i = 0; i < ne; i++) free(ents[i]);
    free(ents);

    /* glob */
    glob_t gl;
    CHECK(glob("/proc/self/*", 0, NULL, &gl) == 0 && gl.gl_pathc > 2, "glob");
    globfree(&gl);

    /* regex */
    regex_t re;
    CHECK(regcomp(&re, "^(a|b)+[0-9]{2,5}$", REG_EXTENDED) == 0, "regcomp");
    CHECK(regexec(&re, "abba123", 0, NULL, 0) == 0, "regexec match");
    CHECK(regexec(&re, "abc", 0, NULL, 0) == REG_NOMATCH, "regexec nomatch");
    regfree(&re);

    /* qsort of a large array makes glibc allocate a temporary buffer */
    enum { QN = 200000 };
    int *arr = malloc(QN * sizeof *arr);
    CHECK(arr != NULL, "malloc");
    for (int i = 0; i < QN; i++) arr[i] = (int)((unsigned)i * 2654435761u % 1000003u);
    qsort(arr, QN, sizeof *arr, cmp_int);
    for (int i = 1; i < QN; i++) CHECK(arr[i - 1] <= arr[i], "qsort order");
    free(arr);

    /* dlopen / dlsym / dlerror (libdl allocates link maps, error strings) */
    for (int i = 0; i < 20; i++) {
        void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
        CHECK(h != NULL, "dlopen(libm.so.6): %s", dlerror());
        double (*cosp)(double) = (double (*)(double))dlsym(h, "cos");
        CHECK(cosp != NULL && cosp(0.0) == 1.0, "dlsym(cos)");
        dlerror();
        void *nope = dlsym(h, "no_such_symbol_hakmem");
        const char *err = dlerror();
        CHECK(nope == NULL && err != NULL && strstr(err, "no_such_symbol_hakmem"), "dlerror after bad dlsym");
        CHECK(dlopen("libdoes-not-exist-hakmem.so", RTLD_NOW) == NULL, "dlopen of missing library");
        err = dlerror();
        CHECK(err != NULL, "dlerror after failed dlopen");
        CHECK(dlclose(h) == 0, "dlclose");
    }
    /* a library not already mapped, with its own initialisers */
    void *h = dlopen("libz.so.1", RTLD_NOW);
    if (h) {
        const char *(*zver)(void) = (const char *(*)(void))dlsym(h, "zlibVersion");
        CHECK(zver != NULL && zver()[0] != 0, "dlsym(zlibVersion)");
        dlclose(h);
    } else {
        dlerror();
    }
}

int main(void)
{
    test_early_blocks();
    test_libc_blocks();
    test_libc_functions();
    return test_finish("check");
}

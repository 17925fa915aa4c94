/*
 * lib_atfork_early.c — a shared library whose fork handlers call malloc, registered
 * BEFORE hakmem's own fork handlers (used by tests/test_fork_edge.c, case "atfork-early").
 *
 * Why a separate library: the test executable lists it in DT_NEEDED, so its constructor
 * runs before hakmem's constructor in both ways the suite runs hakmem:
 *   - LD_PRELOAD=libhakmem.so: ld.so runs initialisers dependencies-first, and among
 *     unrelated objects the later-loaded first; the preloaded libhakmem.so is loaded before
 *     the executable's DT_NEEDED libraries, so this constructor runs first;
 *   - libhakmem.a linked into the executable: hakmem's constructor sits in the executable's
 *     .init_array, which ld.so runs after every shared library's initialisers.
 * (Checked with gdb breakpoints on both constructors: "lib ctor, hakmem::on_load, exe ctor"
 * preloaded, and "lib ctor, exe ctor, hakmem::on_load" linked.)
 *
 * pthread_atfork runs prepare handlers in reverse registration order and parent/child
 * handlers in registration order, so around every fork():
 *     prepare: hakmem's first, then ours   (ours runs while hakmem holds what it took)
 *     parent/child: ours first, then hakmem's (ours runs before hakmem released/reset it)
 * An allocator whose handlers simply hold every global lock across fork deadlocks in our
 * malloc calls.  glibc calls its own malloc fork hooks inside fork() itself, after every
 * prepare handler and before every parent/child handler, so this works with glibc.
 *
 * The handlers do nothing unless the program sets atfork_early_active = 1 (the test's
 * runner process also forks, and fork from a signal handler must not call malloc); when
 * active, each handler mallocs, writes, checks and frees blocks of 24 B, 5000 B and
 * 300 KiB (tiny, mid and large paths), and counts its calls.  prepare also keeps one
 * 100 B block across the fork, which the parent and the child handler each check and free.
 *
 * Built by build.sh as out/release/lib_atfork_early.so:
 *   cc -O2 -g -pthread -Wall -Wextra -Wno-unused-parameter -shared -fPIC \
 *      tests/lib_atfork_early.c -o out/release/lib_atfork_early.so
 * and linked into tests whose source holds the line "// link: lib_atfork_early".
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set to 1 by the program to make the handlers allocate and count. */
int atfork_early_active;
/* Calls of each handler while active (parent: prepare and parent; child: inherits both, then child). */
int atfork_early_prepare_calls;
int atfork_early_parent_calls;
int atfork_early_child_calls;
/* Handler calls whose own blocks were wrong (malloc NULL, or content not as written). */
int atfork_early_errors;
/* 1 once the constructor registered the handlers. */
int atfork_early_registered;

/* The block prepare allocates and the parent / child handler frees. */
static unsigned char *held;
enum { HELD_SIZE = 100, HELD_BYTE = 0x5a };

/* malloc, write, check and free blocks of the three sizes; seed varies the content. */
static void touch_blocks(unsigned seed)
{
    static const size_t sizes[] = { 24, 5000, 300 * 1024 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        if (!p) {
            __atomic_fetch_add(&atfork_early_errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        unsigned char c = (unsigned char)(seed * 7 + i + 1);
        memset(p, c, n);
        if (p[0] != c || p[n / 2] != c || p[n - 1] != c)
            __atomic_fetch_add(&atfork_early_errors, 1, __ATOMIC_RELAXED);
        free(p);
    }
}

static int active(void) { return __atomic_load_n(&atfork_early_active, __ATOMIC_RELAXED); }

static void check_and_free_held(void)
{
    if (!held || held[0] != HELD_BYTE || held[HELD_SIZE - 1] != HELD_BYTE)
        __atomic_fetch_add(&atfork_early_errors, 1, __ATOMIC_RELAXED);
    free(held);
    held = NULL;
}

static void prepare(void)
{
    if (!active()) return;
    touch_blocks(1);
    held = malloc(HELD_SIZE);
    if (held) memset(held, HELD_BYTE, HELD_SIZE);
    __atomic_fetch_add(&atfork_early_prepare_calls, 1, __ATOMIC_RELAXED);
}

static void parent(void)
{
    if (!active()) return;
    touch_blocks(2);
    check_and_free_held();
    __atomic_fetch_add(&atfork_early_parent_calls, 1, __ATOMIC_RELAXED);
}

static void child(void)
{
    if (!active()) return;
    touch_blocks(3);
    check_and_free_held();
    __atomic_fetch_add(&atfork_early_child_calls, 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void atfork_early_init(void)
{
    if (pthread_atfork(prepare, parent, child) == 0) atfork_early_registered = 1;
}

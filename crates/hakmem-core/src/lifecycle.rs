//! Process life: what happens at load time and around `fork`.
//!
//! Nothing here is needed for correctness of the first `malloc`, which may
//! come before the load-time constructor (everything is initialised lazily).
//! The constructor reads the configuration for real, registers the fork
//! handlers and the statistics printer.
//!
//! Fork: the prepare handler freezes every global structure by taking its
//! lock, in one fixed order, so the child never inherits a lock held by a
//! thread that does not exist there. Three cases must not hang:
//! - `fork` from a signal handler that interrupted `malloc` on this very
//!   thread: a lock this thread already holds is left alone (its holder
//!   resumes and releases it, in parent and child alike);
//! - a prepare handler registered before hakmem's (so running after it)
//!   that calls `malloc`: a lock held for fork lets its holder back in (the
//!   structure is frozen, not being changed);
//! - a nested `fork` from a signal handler during the fork handlers: only
//!   the outermost takes and releases the locks.
//!
//! The forking thread's heap lock is taken first (a visitor may be
//! collecting it). Other threads' heaps are not frozen: in the child their
//! threads are gone, and `reclaim` reaps them when their lock is free.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::sync::RawLock;
use crate::{config, crash, guest, heap, large, os, report, segment, thread};

/// The fork in progress on this process: taken first by prepare, so that
/// concurrent forks queue up, and counting nested forks of its holder.
static FORK_LOCK: RawLock = RawLock::new();
static FORK_DEPTH: AtomicU32 = AtomicU32::new(0);

/// Every global lock, in acquisition order.
fn global_locks() -> [&'static RawLock; 6] {
    let [abandoned, segment_cache, tombstones] = segment::locks();
    [thread::key_lock(), heap::lock(), abandoned, segment_cache, tombstones, large::lock()]
}

/// Which of the locks the outermost prepare took (bit i: lock i; bit 8:
/// this thread's heap lock). Only the forking thread touches it.
static TAKEN: AtomicU32 = AtomicU32::new(0);
const OWN_HEAP_BIT: u32 = 1 << 8;

extern "C" fn fork_prepare() {
    if FORK_LOCK.held_by_me() {
        FORK_DEPTH.fetch_add(1, Ordering::Relaxed);
        return;
    }
    FORK_LOCK.lock();
    FORK_DEPTH.store(1, Ordering::Relaxed);
    let mut taken = 0;
    if let Some(l) = thread::own_heap_lock() {
        if l.lock_for_fork() {
            taken |= OWN_HEAP_BIT;
        }
    }
    for (i, l) in global_locks().iter().enumerate() {
        if l.lock_for_fork() {
            taken |= 1 << i;
        }
    }
    TAKEN.store(taken, Ordering::Relaxed);
}

/// Release what prepare took (parent and child alike: in the child the
/// lock words are plain memory that this thread's copy holds).
fn release() {
    if FORK_DEPTH.fetch_sub(1, Ordering::Relaxed) > 1 {
        return;
    }
    let taken = TAKEN.load(Ordering::Relaxed);
    for (i, l) in global_locks().iter().enumerate().rev() {
        if taken & (1 << i) != 0 {
            l.unlock_after_fork();
        }
    }
    if taken & OWN_HEAP_BIT != 0 {
        if let Some(l) = thread::own_heap_lock() {
            l.unlock_after_fork();
        }
    }
    FORK_LOCK.unlock();
}

extern "C" fn fork_parent() {
    release();
}

extern "C" fn fork_child() {
    thread::after_fork_in_child();
    config::after_fork_in_child();
    release();
}

extern "C" fn print_stats_at_exit() {
    report::print();
}

extern "C" fn print_guest_stats_at_exit() {
    report::print_guest();
}

/// The library's load-time constructor.
pub fn on_load() {
    if guest::decide_on_load() {
        // Not the process's malloc: no fork handlers; a report only to say
        // that another allocator served the process.
        config::ensure_read();
        if config::stats_enabled() {
            report::keep_stderr();
            os::at_exit(print_guest_stats_at_exit);
        }
        return;
    }
    config::ensure_read();
    thread::apply_capacities();
    os::at_fork(fork_prepare, fork_parent, fork_child);
    if config::stats_enabled() {
        report::keep_stderr();
        os::at_exit(print_stats_at_exit);
    }
    if config::get(config::CRASH_REPORT) != 0 {
        crash::install();
    }
}

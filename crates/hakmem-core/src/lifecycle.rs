//! Process life: what happens at load time and around `fork`.
//!
//! Nothing here is needed for correctness of the first `malloc`, which may
//! come before the load-time constructor (everything is initialised lazily).
//! The constructor reads the configuration for real, registers the fork
//! handlers and the statistics printer.
//!
//! Fork: the prepare handler takes every global lock in one fixed order, so
//! the child never inherits a lock held by a thread that does not exist
//! there; parent and child release (the child resets) them. Heaps of the
//! parent's other threads are left alone in the child: their blocks stay
//! valid and can be freed (through remote lists), their memory is not reused.

use crate::sync::RawLock;
use crate::{config, heap, large, segment, stats, thread_cache};

/// Every global lock, in acquisition order.
fn locks() -> [&'static RawLock; 6] {
    let [pool, orphan] = heap::locks();
    let [cache, abandoned] = segment::locks();
    [thread_cache::key_lock(), pool, orphan, cache, abandoned, large::lock()]
}

extern "C" fn fork_prepare() {
    for l in locks() {
        l.lock();
    }
}

extern "C" fn fork_parent() {
    for l in locks().iter().rev() {
        l.unlock();
    }
}

extern "C" fn fork_child() {
    for l in locks() {
        l.reset_after_fork();
    }
}

extern "C" fn print_stats_at_exit() {
    stats::print();
}

/// The library's load-time constructor.
pub fn on_load() {
    config::ensure_read();
    thread_cache::apply_capacities();
    // SAFETY: registering plain extern "C" functions; called outside malloc.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
        if config::stats_enabled() {
            libc::atexit(print_stats_at_exit);
        }
    }
}

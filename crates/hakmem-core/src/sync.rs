//! A futex mutex that never allocates, for hakmem's few global structures
//! (abandoned segments, segment and large caches, heap pool).
//!
//! Why not `parking_lot`: its slow path allocates a parking table on first
//! contention, which would re-enter `malloc` while a lock is held. Why not
//! `std::sync::Mutex`: the core is `no_std`, and `fork` needs raw
//! lock/unlock to hold every global lock across the fork (see `lifecycle`).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::os;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A raw three-state futex lock (unlocked, locked, locked with waiters).
pub struct RawLock {
    state: AtomicU32,
}

impl RawLock {
    pub const fn new() -> Self {
        RawLock { state: AtomicU32::new(UNLOCKED) }
    }

    #[inline]
    pub fn lock(&self) {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            // Spin a little before sleeping: holders keep these locks briefly.
            if spins < 64 {
                spins += 1;
                if self.state.load(Ordering::Relaxed) == UNLOCKED
                    && self
                        .state
                        .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return;
                }
                core::hint::spin_loop();
                continue;
            }
            if self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                return;
            }
            os::futex_wait(&self.state, CONTENDED);
        }
    }

    #[inline]
    pub fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            os::futex_wake_one(&self.state);
        }
    }

    /// Reset to unlocked without waking anyone: only for the child after
    /// `fork`, where the thread that held the lock no longer exists.
    pub fn reset_after_fork(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

/// A value protected by a [`RawLock`].
pub struct Lock<T> {
    raw: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `raw`.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the value.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    pub const fn new(value: T) -> Self {
        Lock { raw: RawLock::new(), value: UnsafeCell::new(value) }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        self.raw.lock();
        Guard { lock: self }
    }

    /// The raw lock, for fork handlers that hold it across `fork()`.
    pub fn raw(&self) -> &RawLock {
        &self.raw
    }
}

pub struct Guard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.raw.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_serialises_increments() {
        let l = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 200_000);
    }
}

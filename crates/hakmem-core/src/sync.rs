//! A futex lock that never allocates and knows which thread holds it, for
//! hakmem's global structures and for each heap's slow-path state.
//!
//! Why not `parking_lot`: its slow path allocates a parking table on first
//! contention, which would re-enter `malloc` while a lock is held. Why not
//! `std::sync::Mutex`: the core is `no_std`, and `fork` needs raw
//! lock/unlock to hold every global lock across the fork (see `lifecycle`).
//!
//! The holder is recorded (the thread pointer) so that the fork handlers can
//! tell a lock the forking thread already holds — `fork` called from a signal
//! handler that interrupted `malloc` — from one another thread holds, and so
//! that a lock held *for fork* lets its holder back in: another library's
//! `pthread_atfork` prepare handler that runs after hakmem's may call `malloc`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::os;

/// Set while the lock is held by the fork handlers: its holder may then
/// re-enter (the structure is not being modified, only frozen).
const FOR_FORK: usize = 1;
/// Set when a thread may be sleeping on the lock: unlock wakes one.
const CONTENDED: usize = 2;
const FLAGS: usize = FOR_FORK | CONTENDED;

/// A futex lock whose one word says who holds it: 0 when free, else the
/// holder's thread pointer (64-byte aligned) with the flag bits. Taking and
/// releasing it are single atomic operations, so a signal handler that
/// interrupts its holder — and forks — always sees a consistent word.
pub struct RawLock {
    word: AtomicUsize,
}

impl RawLock {
    pub const fn new() -> Self {
        RawLock { word: AtomicUsize::new(0) }
    }

    /// Take the lock. Returns false — without taking it — when the calling
    /// thread holds it for `fork` (a prepare handler's `malloc`); the caller
    /// must then not unlock.
    #[inline]
    pub fn lock(&self) -> bool {
        let me = os::thread_pointer();
        match self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => true,
            Err(held) if held & !CONTENDED == me | FOR_FORK => false,
            Err(_) => {
                self.lock_contended(me);
                true
            }
        }
    }

    /// Take the lock if it is free; never waits.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.word.compare_exchange(0, os::thread_pointer(), Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[cold]
    fn lock_contended(&self, me: usize) {
        // Spin a little before sleeping: holders keep these locks briefly.
        for _ in 0..64 {
            if self.word.load(Ordering::Relaxed) == 0
                && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            core::hint::spin_loop();
        }
        loop {
            let held = self.word.load(Ordering::Relaxed);
            if held == 0 {
                // Taken as contended: other sleepers may remain, so our
                // unlock must wake one.
                if self.word.compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return;
                }
                continue;
            }
            if held & CONTENDED == 0
                && self
                    .word
                    .compare_exchange(held, held | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // Sleeps only while the low half of the word is unchanged.
            os::futex_wait(self.futex_word(), (held | CONTENDED) as u32);
        }
    }

    /// The low 32 bits of the word, which the futex calls watch (x86_64 is
    /// little-endian).
    fn futex_word(&self) -> &core::sync::atomic::AtomicU32 {
        // SAFETY: the first four bytes of an aligned AtomicUsize form an
        // aligned u32 that lives as long as the lock; it is only accessed
        // atomically (by the kernel's futex, and through `word`).
        unsafe { &*(self.word.as_ptr() as *const core::sync::atomic::AtomicU32) }
    }

    #[inline]
    pub fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & CONTENDED != 0 {
            os::futex_wake_one(self.futex_word());
        }
    }

    /// Does the calling thread hold this lock (for any reason)?
    pub fn held_by_me(&self) -> bool {
        self.word.load(Ordering::Relaxed) & !FLAGS == os::thread_pointer()
    }

    /// Fork prepare: take the lock and mark it held for fork, unless this
    /// thread holds it already (then it is left alone). Returns whether it
    /// was taken.
    pub fn lock_for_fork(&self) -> bool {
        if self.held_by_me() {
            return false;
        }
        self.lock();
        self.word.fetch_or(FOR_FORK, Ordering::Relaxed);
        true
    }

    /// Fork parent/child: release a lock taken by [`lock_for_fork`]. In the
    /// child nobody can be waiting; the wake-up is then a harmless no-op.
    ///
    /// [`lock_for_fork`]: Self::lock_for_fork
    pub fn unlock_after_fork(&self) {
        debug_assert_eq!(self.word.load(Ordering::Relaxed) & !CONTENDED, os::thread_pointer() | FOR_FORK);
        self.unlock();
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
        let owned = self.raw.lock();
        Guard { lock: self, owned }
    }

    /// The raw lock, for fork handlers that hold it across `fork()`.
    pub fn raw(&self) -> &RawLock {
        &self.raw
    }
}

pub struct Guard<'a, T> {
    lock: &'a Lock<T>,
    /// False when re-entered under the fork handlers' hold: do not unlock.
    owned: bool,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held (by us, or by this very
        // thread for fork, which does not touch the value meanwhile).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if self.owned {
            self.lock.raw.unlock();
        }
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

    #[test]
    fn try_lock_fails_while_held() {
        let l = RawLock::new();
        assert!(l.try_lock());
        assert!(l.held_by_me());
        std::thread::scope(|s| {
            s.spawn(|| assert!(!l.try_lock() && !l.held_by_me()));
        });
        l.unlock();
        assert!(!l.held_by_me());
    }

    #[test]
    fn fork_hold_lets_its_holder_back_in_and_no_one_else() {
        let l = Lock::new(5u32);
        assert!(l.raw().lock_for_fork());
        // A prepare handler that runs after ours allocates: same thread, no wait.
        {
            let g = l.lock();
            assert_eq!(*g, 5);
        }
        // Still held for fork after the re-entry.
        std::thread::scope(|s| {
            s.spawn(|| assert!(!l.raw().try_lock()));
        });
        // A nested fork (from a signal handler) does not take it twice.
        assert!(!l.raw().lock_for_fork());
        l.raw().unlock_after_fork();
        assert!(l.raw().try_lock());
        l.raw().unlock();
    }

    #[test]
    fn a_lock_held_normally_is_skipped_by_fork_prepare() {
        // fork() from a signal handler that interrupted the holder.
        let l = RawLock::new();
        assert!(l.lock());
        assert!(!l.lock_for_fork());
        l.unlock();
    }
}

//! The remote-free list: how a thread hands a block back to the slab of
//! another thread.
//!
//! A multi-producer, single-consumer Treiber stack. Any thread pushes (one CAS,
//! or one CAS for a whole pre-linked chain); only the slab's owner takes, and
//! it takes everything at once with a swap, so there is no ABA problem: a
//! node is never popped individually while others push.
//!
//! The links live in the blocks themselves. The list is generic over how a
//! link is stored so that `loom` can model-check it (tests/loom_remote.rs)
//! with nodes whose link is a loom atomic.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicPtr, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, Ordering};

/// Where a node keeps its "next" pointer.
///
/// # Safety
/// `get_next`/`set_next` are only called on nodes the caller exclusively holds
/// (a node being pushed, or nodes of a chain taken with `take_all`).
pub unsafe trait Link {
    /// # Safety
    /// `node` must be valid and exclusively held by the caller.
    unsafe fn get_next(node: *mut Self) -> *mut Self;
    /// # Safety
    /// `node` must be valid and exclusively held by the caller.
    unsafe fn set_next(node: *mut Self, next: *mut Self);
}

pub struct RemoteList<T: Link> {
    head: AtomicPtr<T>,
}

impl<T: Link> Default for RemoteList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Link> RemoteList<T> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        RemoteList { head: AtomicPtr::new(core::ptr::null_mut()) }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        RemoteList { head: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Push the chain `first ..= last` (already linked through `Link`).
    ///
    /// # Safety
    /// The caller exclusively holds every node of the chain; after the call
    /// it must not touch them again.
    pub unsafe fn push_chain(&self, first: *mut T, last: *mut T) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `last` is exclusively ours until the CAS publishes it.
            unsafe { T::set_next(last, head) };
            // Release: the links written above are visible to the owner, whose
            // swap in `take_all` acquires.
            match self.head.compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Push one node.
    ///
    /// # Safety
    /// As for [`push_chain`](Self::push_chain).
    pub unsafe fn push(&self, node: *mut T) {
        // SAFETY: forwarded contract.
        unsafe { self.push_chain(node, node) }
    }

    /// Take every node pushed so far, as a null-terminated chain (most recent
    /// first). Only the owner calls this.
    pub fn take_all(&self) -> *mut T {
        // A plain load first keeps the common empty case free of a locked op.
        if self.head.load(Ordering::Relaxed).is_null() {
            return core::ptr::null_mut();
        }
        self.head.swap(core::ptr::null_mut(), Ordering::Acquire)
    }

    /// Has anything been pushed and not taken? A hint: may be stale at once.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Node {
        next: *mut Node,
        value: usize,
    }

    // SAFETY: the link is a plain field of a node the caller holds.
    unsafe impl Link for Node {
        unsafe fn get_next(node: *mut Self) -> *mut Self {
            // SAFETY: caller holds `node`.
            unsafe { (*node).next }
        }
        unsafe fn set_next(node: *mut Self, next: *mut Self) {
            // SAFETY: caller holds `node`.
            unsafe { (*node).next = next }
        }
    }

    struct Shared(RemoteList<Node>);
    // SAFETY: the list is designed for concurrent pushes.
    unsafe impl Sync for Shared {}
    // SAFETY: as above.
    unsafe impl Send for Shared {}

    #[test]
    fn every_pushed_node_is_taken_once_under_contention() {
        const THREADS: usize = 4;
        const PER: usize = 20_000;
        let list = Arc::new(Shared(RemoteList::new()));
        let mut seen = vec![0u8; THREADS * PER];
        let producers: Vec<_> = (0..THREADS)
            .map(|t| {
                let list = list.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while i < PER {
                        // Alternate single pushes and chains of three.
                        let n = if i % 2 == 0 { 1 } else { 3.min(PER - i) };
                        let nodes: Vec<*mut Node> = (0..n)
                            .map(|k| {
                                Box::into_raw(Box::new(Node {
                                    next: std::ptr::null_mut(),
                                    value: t * PER + i + k,
                                }))
                            })
                            .collect();
                        for w in nodes.windows(2) {
                            // SAFETY: fresh nodes we own.
                            unsafe { (*w[0]).next = w[1] };
                        }
                        // SAFETY: we own the chain and give it up.
                        unsafe { list.0.push_chain(nodes[0], nodes[n - 1]) };
                        i += n;
                    }
                })
            })
            .collect();
        let mut taken = 0;
        let mut drain = |seen: &mut Vec<u8>| {
            let mut p = list.0.take_all();
            while !p.is_null() {
                // SAFETY: the chain is ours after take_all.
                let node = unsafe { Box::from_raw(p) };
                seen[node.value] += 1;
                taken += 1;
                p = node.next;
            }
        };
        while producers.iter().any(|p| !p.is_finished()) {
            drain(&mut seen);
        }
        for p in producers {
            p.join().unwrap();
        }
        drain(&mut seen);
        assert_eq!(taken, THREADS * PER);
        assert!(seen.iter().all(|&c| c == 1));
        assert!(list.0.is_empty());
    }
}

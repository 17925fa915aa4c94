//! The remote-free list: how a thread hands a block back to the slab of
//! another thread.
//!
//! A multi-producer, single-consumer Treiber stack. Any thread pushes (one CAS,
//! or one CAS for a whole pre-linked chain); only the slab's owner takes, and
//! it takes everything at once with a swap, so there is no ABA problem: a
//! node is never popped individually while others push.
//!
//! The head word also counts the nodes on the list, in its top 16 bits (user
//! addresses fit in 47 bits), so the owner learns how many blocks came back
//! from the same swap; it walks the chain (through cache lines other threads
//! just wrote) only to append it to a non-empty local list.
//!
//! The links live in the blocks themselves. The list is generic over how a
//! link is stored so that `loom` can model-check it (tests/loom_remote.rs)
//! with nodes whose link is a loom atomic.

use core::marker::PhantomData;

#[cfg(not(loom))]
use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};

const COUNT_SHIFT: u32 = 48;
const PTR_MASK: usize = (1 << COUNT_SHIFT) - 1;
/// Most nodes the list can count.
pub const MAX_COUNT: usize = (1 << (usize::BITS - COUNT_SHIFT)) - 1;

/// Where a node keeps its "next" pointer. The list only writes links (the
/// consumer walks a taken chain with its own accessor).
///
/// # Safety
/// `set_next` is only called on nodes the caller exclusively holds (a node
/// being pushed).
pub unsafe trait Link {
    /// # Safety
    /// `node` must be valid and exclusively held by the caller.
    unsafe fn set_next(node: *mut Self, next: *mut Self);
}

pub struct RemoteList<T: Link> {
    /// `first node | count << COUNT_SHIFT`.
    head: AtomicUsize,
    _nodes: PhantomData<*mut T>,
}

// SAFETY: the list only hands nodes from thread to thread through the atomic
// head; nodes are owned by whoever pushed or took them.
unsafe impl<T: Link> Sync for RemoteList<T> {}
// SAFETY: as above.
unsafe impl<T: Link> Send for RemoteList<T> {}

impl<T: Link> Default for RemoteList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Link> RemoteList<T> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        RemoteList { head: AtomicUsize::new(0), _nodes: PhantomData }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        RemoteList { head: AtomicUsize::new(0), _nodes: PhantomData }
    }

    /// Push the chain `first ..= last` of `n` nodes (already linked through
    /// `Link`).
    ///
    /// # Safety
    /// The caller exclusively holds every node of the chain; after the call
    /// it must not touch them again. Node addresses fit in 48 bits, and the
    /// list never holds more than [`MAX_COUNT`] nodes.
    pub unsafe fn push_chain(&self, first: *mut T, last: *mut T, n: usize) {
        debug_assert!((first as usize) & !PTR_MASK == 0 && n > 0);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            debug_assert!((head >> COUNT_SHIFT) + n <= MAX_COUNT);
            // SAFETY: `last` is exclusively ours until the CAS publishes it.
            unsafe { T::set_next(last, (head & PTR_MASK) as *mut T) };
            let new = first as usize | (((head >> COUNT_SHIFT) + n) << COUNT_SHIFT);
            // Release: the links written above are visible to the owner, whose
            // swap in `take_all` acquires.
            match self.head.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
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
        unsafe { self.push_chain(node, node, 1) }
    }

    /// Take every node pushed so far, as a null-terminated chain (most recent
    /// first) and its length. Only the owner calls this.
    pub fn take_all(&self) -> (*mut T, usize) {
        // A plain load first keeps the common empty case free of a locked op.
        if self.head.load(Ordering::Relaxed) == 0 {
            return (core::ptr::null_mut(), 0);
        }
        let h = self.head.swap(0, Ordering::Acquire);
        ((h & PTR_MASK) as *mut T, h >> COUNT_SHIFT)
    }

    /// How many nodes wait on the list: a lower bound (pushes may add more
    /// at once), read without taking them.
    pub fn pending(&self) -> usize {
        self.head.load(Ordering::Relaxed) >> COUNT_SHIFT
    }

    /// Has anything been pushed and not taken? A hint: may be stale at once.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == 0
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
        // At most MAX_COUNT nodes may be on the list: 4 x 10_000 stays below.
        const PER: usize = 10_000;
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
                        unsafe { list.0.push_chain(nodes[0], nodes[n - 1], n) };
                        i += n;
                    }
                })
            })
            .collect();
        let mut taken = 0;
        let mut drain = |seen: &mut Vec<u8>| {
            let (mut p, n) = list.0.take_all();
            let mut walked = 0;
            while !p.is_null() {
                walked += 1;
                // SAFETY: the chain is ours after take_all.
                let node = unsafe { Box::from_raw(p) };
                seen[node.value] += 1;
                taken += 1;
                p = node.next;
            }
            assert_eq!(walked, n, "the head counts the chain");
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

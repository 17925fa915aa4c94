//! Model check of the remote-free list (`remote.rs`) with loom: every
//! interleaving of concurrent pushers and the owner's take-all, under the
//! C11 memory model. The link word is a loom atomic written Relaxed, so a
//! missing Release/Acquire pair in the list would show up as a lost or
//! truncated chain.
//!
//! Run: RUSTFLAGS="--cfg loom" cargo test --release -p hakmem-core --test loom_remote
#![cfg(loom)]

use hakmem_core::remote::{Link, RemoteList};
use loom::sync::atomic::{AtomicPtr, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Node {
    next: AtomicPtr<Node>,
    id: usize,
}

// SAFETY: the link is the node's own field; callers hold the node.
unsafe impl Link for Node {
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: caller holds `node`.
        unsafe { (*node).next.store(next, Ordering::Relaxed) }
    }
}

fn node(id: usize) -> *mut Node {
    Box::into_raw(Box::new(Node { next: AtomicPtr::new(std::ptr::null_mut()), id }))
}

/// Take everything pushed so far; record ids in `seen`, return how many.
fn drain(list: &RemoteList<Node>, seen: &mut Vec<usize>) -> usize {
    let (mut p, count) = list.take_all();
    let mut n = 0;
    while !p.is_null() {
        // SAFETY: take_all handed us the chain; its nodes are ours.
        let b = unsafe { Box::from_raw(p) };
        seen.push(b.id);
        p = b.next.load(Ordering::Relaxed);
        n += 1;
    }
    assert_eq!(n, count, "the head counts the chain it hands over");
    n
}

#[test]
fn take_all_racing_a_push_onto_a_non_empty_list_loses_nothing() {
    // The owner takes while a node is already queued and another thread
    // pushes: a take that is not one atomic swap would lose or duplicate it.
    loom::model(|| {
        let list = Arc::new(RemoteList::<Node>::new());
        // SAFETY: a fresh node we give up.
        unsafe { list.push(node(1)) };
        let l2 = list.clone();
        // SAFETY: a fresh node we give up.
        let pusher = thread::spawn(move || unsafe { l2.push(node(2)) });
        let mut seen = Vec::new();
        drain(&list, &mut seen);
        pusher.join().unwrap();
        drain(&list, &mut seen);
        seen.sort();
        assert_eq!(seen, vec![1, 2], "each node taken exactly once");
    });
}

#[test]
fn concurrent_pushes_and_take_all_lose_nothing() {
    loom::model(|| {
        let list = Arc::new(RemoteList::<Node>::new());
        let pushers: Vec<_> = (0..2)
            .map(|t| {
                let list = list.clone();
                thread::spawn(move || {
                    // SAFETY: a fresh node we give up.
                    unsafe { list.push(node(t)) };
                })
            })
            .collect();
        let mut seen = Vec::new();
        // The owner drains while the pushers run.
        drain(&list, &mut seen);
        for p in pushers {
            p.join().unwrap();
        }
        drain(&list, &mut seen);
        seen.sort();
        assert_eq!(seen, vec![0, 1], "each node taken exactly once");
        assert!(list.is_empty());
    });
}

#[test]
fn chains_arrive_whole_and_in_order() {
    loom::model(|| {
        let list = Arc::new(RemoteList::<Node>::new());
        let l1 = list.clone();
        let chain = thread::spawn(move || {
            // A chain of three, linked before it is published.
            let (a, b, c) = (node(10), node(11), node(12));
            // SAFETY: fresh nodes we own, then give up.
            unsafe {
                Node::set_next(a, b);
                Node::set_next(b, c);
                l1.push_chain(a, c, 3);
            }
        });
        let l2 = list.clone();
        let single = thread::spawn(move || {
            // SAFETY: a fresh node we give up.
            unsafe { l2.push(node(20)) };
        });
        let mut seen = Vec::new();
        drain(&list, &mut seen);
        chain.join().unwrap();
        single.join().unwrap();
        drain(&list, &mut seen);
        let pos = |id| seen.iter().position(|&x| x == id).expect("node present");
        assert_eq!(seen.len(), 4);
        assert!(pos(10) + 1 == pos(11) && pos(11) + 1 == pos(12), "chain kept whole: {seen:?}");
    });
}

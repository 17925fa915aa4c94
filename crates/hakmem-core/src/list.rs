//! An intrusive doubly-linked queue over raw pointers, for the heap's lists of
//! slabs and segments. The links live in the elements; the queue never
//! allocates. Every operation is O(1).

use core::ptr;

/// Access to an element's `next` and `prev` fields.
///
/// # Safety
/// Implementations return pointers to two distinct link fields of `p`.
pub unsafe trait Linked {
    /// # Safety
    /// `p` must be valid.
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self);
}

pub struct Queue<T> {
    pub head: *mut T,
    pub tail: *mut T,
}

impl<T: Linked> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> Queue<T> {
    pub const fn new() -> Self {
        Queue { head: ptr::null_mut(), tail: ptr::null_mut() }
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// # Safety
    /// `p` is valid and on no queue.
    pub unsafe fn push_front(&mut self, p: *mut T) {
        // SAFETY: `p` and the current head are valid elements.
        unsafe {
            let (next, prev) = T::links(p);
            *prev = ptr::null_mut();
            *next = self.head;
            if self.head.is_null() {
                self.tail = p;
            } else {
                *T::links(self.head).1 = p;
            }
        }
        self.head = p;
    }

    /// # Safety
    /// `p` is valid and on no queue.
    pub unsafe fn push_back(&mut self, p: *mut T) {
        // SAFETY: `p` and the current tail are valid elements.
        unsafe {
            let (next, prev) = T::links(p);
            *next = ptr::null_mut();
            *prev = self.tail;
            if self.tail.is_null() {
                self.head = p;
            } else {
                *T::links(self.tail).0 = p;
            }
        }
        self.tail = p;
    }

    /// # Safety
    /// `p` is on this queue.
    pub unsafe fn remove(&mut self, p: *mut T) {
        // SAFETY: `p` and its neighbours are valid elements of this queue.
        unsafe {
            let (next, prev) = T::links(p);
            let (n, pv) = (*next, *prev);
            if pv.is_null() {
                self.head = n;
            } else {
                *T::links(pv).0 = n;
            }
            if n.is_null() {
                self.tail = pv;
            } else {
                *T::links(n).1 = pv;
            }
            *next = ptr::null_mut();
            *prev = ptr::null_mut();
        }
    }

    /// The element after `p`.
    ///
    /// # Safety
    /// `p` is on this queue.
    pub unsafe fn next(p: *mut T) -> *mut T {
        // SAFETY: `p` is a valid element.
        unsafe { *T::links(p).0 }
    }

    /// The element before `p`.
    ///
    /// # Safety
    /// `p` is on this queue.
    pub unsafe fn prev(p: *mut T) -> *mut T {
        // SAFETY: `p` is a valid element.
        unsafe { *T::links(p).1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        v: u32,
        next: *mut Node,
        prev: *mut Node,
    }
    // SAFETY: distinct fields.
    unsafe impl Linked for Node {
        unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
            // SAFETY: `p` is valid.
            unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
        }
    }

    fn values(q: &Queue<Node>) -> Vec<u32> {
        let mut out = vec![];
        let mut p = q.head;
        while !p.is_null() {
            // SAFETY: elements of the queue are live nodes.
            unsafe {
                out.push((*p).v);
                p = (*p).next;
            }
        }
        out
    }

    #[test]
    fn push_remove_keep_order_and_ends() {
        let mut nodes: Vec<Node> =
            (0..5).map(|v| Node { v, next: ptr::null_mut(), prev: ptr::null_mut() }).collect();
        let p: Vec<*mut Node> = nodes.iter_mut().map(|n| n as *mut Node).collect();
        let mut q = Queue::new();
        // SAFETY: every node is live and on at most one queue at a time.
        unsafe {
            q.push_back(p[1]);
            q.push_back(p[2]);
            q.push_front(p[0]);
            q.push_back(p[3]);
            assert_eq!(values(&q), [0, 1, 2, 3]);
            q.remove(p[0]);
            q.remove(p[3]);
            q.remove(p[1]);
            assert_eq!(values(&q), [2]);
            assert_eq!(q.head, q.tail);
            q.remove(p[2]);
            assert!(q.is_empty() && q.tail.is_null());
            q.push_front(p[4]);
            assert_eq!(values(&q), [4]);
        }
    }
}

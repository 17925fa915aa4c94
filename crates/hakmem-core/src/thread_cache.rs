//! The per-thread cache and the allocation fast paths.
//!
//! Each thread has, in static TLS, one bin per size class: a singly linked
//! list of free blocks with a count and a capacity (HAKMEM_TCACHE_*). The
//! fast paths pop and push there with plain loads and stores: no atomics, no
//! locks, no "initialised?" test. A thread starts with every bin empty and
//! every capacity 0, so its first malloc and free take the slow path, which
//! sets the thread up.
//!
//! The TLS block is declared in assembly with the initial-exec model: one
//! `%fs`-relative address computation, where Rust's `thread_local!` in a
//! `cdylib` goes through `__tls_get_addr` on every access. A thread's exit is
//! seen through a pthread key destructor.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::config;
use crate::heap::{self, Heap};
use crate::size_class::{is_tiny, CLASS_SLOTS, NUM_CLASSES, STRIDE};
use crate::slab::{free_key, Block};
use crate::stats::{self, STATS};
use crate::sync::Lock;

#[repr(C)]
pub struct Bin {
    pub head: *mut Block,
    pub count: u32,
    pub cap: u32,
}

const NEW: u32 = 0;
const LIVE: u32 = 1;
const DEAD: u32 = 2;

#[repr(C)]
pub struct ThreadCache {
    pub bins: [Bin; CLASS_SLOTS],
    pub heap: *mut Heap,
    pub state: u32,
}

// The thread's cache lives in .tbss: zero-initialised means every bin empty
// with capacity 0, heap null, state NEW.
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 6",
    ".globl hakmem_thread_cache",
    ".hidden hakmem_thread_cache",
    ".type hakmem_thread_cache,@object",
    ".size hakmem_thread_cache, {size}",
    "hakmem_thread_cache:",
    ".zero {size}",
    ".popsection",
    size = const core::mem::size_of::<ThreadCache>(),
);

/// This thread's cache.
#[inline(always)]
pub fn current() -> *mut ThreadCache {
    let p: *mut ThreadCache;
    // SAFETY: reads the thread pointer (%fs:0 holds its own address on x86_64
    // glibc) and adds the initial-exec offset of our TLS symbol; no memory is
    // written. The result is constant for the thread.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + hakmem_thread_cache@GOTTPOFF]",
            p = out(reg) p,
            options(nostack, pure, readonly),
        );
    }
    p
}

/// Pop a block of `class` from this thread's cache; null when empty.
#[inline(always)]
pub fn pop(class: usize) -> *mut Block {
    // SAFETY: the cache belongs to this thread; blocks on a bin are free
    // blocks of at least 16 bytes.
    unsafe {
        let bin = &mut (*current()).bins[class];
        let b = bin.head;
        if !b.is_null() {
            bin.head = (*b).next;
            bin.count -= 1;
            (*b).key = 0;
        }
        b
    }
}

/// Push a freed block on this thread's cache; false when the bin is full.
///
/// `key` is [`free_key`], which the caller has loaded already.
///
/// # Safety
/// `b` is a live block of `class` that the caller gives up.
#[inline(always)]
pub unsafe fn push(b: *mut Block, class: usize, key: u64) -> bool {
    // SAFETY: the cache belongs to this thread; the caller gives us `b`.
    unsafe {
        let bin = &mut (*current()).bins[class];
        if bin.count >= bin.cap {
            return false;
        }
        (*b).key = key;
        (*b).next = bin.head;
        bin.head = b;
        bin.count += 1;
        true
    }
}

/// The allocation slow path: the bin of `class` is empty.
#[cold]
#[inline(never)]
pub fn alloc_slow(class: usize) -> *mut u8 {
    let tc = current();
    // SAFETY: the cache and the heap it points to belong to this thread.
    unsafe {
        if (*tc).heap.is_null() && !thread_start(tc) {
            return orphan_alloc(class);
        }
        let bin = &mut (*tc).bins[class];
        let want = bin.cap.div_ceil(2);
        let (b, chain, n) = (*(*tc).heap).refill(class, want);
        if b.is_null() {
            return ptr::null_mut();
        }
        debug_assert!(bin.head.is_null());
        bin.head = chain;
        bin.count = n;
        (*b).key = 0;
        b as *mut u8
    }
}

/// The free slow path: the bin of `class` is full (or has capacity 0).
///
/// # Safety
/// `b` is a live block of `class` that the caller gives up.
#[cold]
#[inline(never)]
pub unsafe fn free_slow(b: *mut Block, class: usize) {
    let tc = current();
    // SAFETY: the cache and its heap belong to this thread; `b` is ours now.
    unsafe {
        let heap = (*tc).heap;
        if heap.is_null() {
            if (*tc).state == NEW && thread_start(tc) {
                if !push(b, class, free_key()) {
                    (*(*tc).heap).free_block(b);
                }
            } else {
                // No heap (exiting thread): the owner will get it back.
                heap::free_remote(b);
            }
            return;
        }
        let bin = &mut (*tc).bins[class];
        // Flush down to half the capacity: the most recently freed blocks,
        // likeliest in cache, stay; the older half goes back to the slabs.
        let keep = bin.cap / 2;
        if bin.count > keep {
            let n = bin.count - keep;
            let chain = if keep == 0 {
                let c = bin.head;
                bin.head = ptr::null_mut();
                c
            } else {
                let mut cut = bin.head;
                for _ in 1..keep {
                    cut = (*cut).next;
                }
                let c = (*cut).next;
                (*cut).next = ptr::null_mut();
                c
            };
            bin.count = keep;
            (*heap).free_chain(chain, n);
        }
        if !push(b, class, free_key()) {
            (*heap).free_block(b);
        }
    }
}

/// Bytes of blocks one mid-class bin may hold at most.
const MID_CACHE_BYTES: usize = 64 * 1024;

/// Capacity of the bin of `class` from the configuration: tiny classes use
/// HAKMEM_TCACHE_TINY, mid classes HAKMEM_TCACHE_MID bounded to
/// `MID_CACHE_BYTES` of blocks (but at least one block when the flag is
/// non-zero).
pub fn capacity(class: usize) -> u32 {
    if is_tiny(class) {
        config::get(config::TCACHE_TINY) as u32
    } else {
        let flag = config::get(config::TCACHE_MID);
        let by_bytes = (MID_CACHE_BYTES / STRIDE[class] as usize).max(1);
        flag.min(by_bytes) as u32
    }
}

/// Apply the configured capacities to this thread's bins (at thread start,
/// and again once the configuration is read for real).
pub fn apply_capacities() {
    let tc = current();
    // SAFETY: this thread's cache.
    unsafe {
        if (*tc).state != LIVE {
            return;
        }
        for class in 1..NUM_CLASSES {
            (*tc).bins[class].cap = capacity(class);
        }
    }
}

static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
static KEY_LOCK: Lock<()> = Lock::new(());

/// Process-wide set-up done before the first thread heap exists.
fn process_start() -> bool {
    if KEY.load(Ordering::Acquire) != u32::MAX {
        return true;
    }
    let _g = KEY_LOCK.lock();
    if KEY.load(Ordering::Acquire) != u32::MAX {
        return true;
    }
    config::ensure_read();
    crate::slab::init_free_key();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: pthread_key_create does not allocate (keys live in a static table).
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
        return false;
    }
    KEY.store(key, Ordering::Release);
    true
}

/// Set up the calling thread: a heap, capacities, the exit hook.
/// False if that is impossible (no memory, or the thread is exiting).
///
/// # Safety
/// `tc` is this thread's cache.
unsafe fn thread_start(tc: *mut ThreadCache) -> bool {
    // SAFETY: `tc` is this thread's cache.
    unsafe {
        if (*tc).state == DEAD || !process_start() {
            return false;
        }
        let h = heap::create();
        if h.is_null() {
            return false;
        }
        (*tc).heap = h;
        (*tc).state = LIVE;
        apply_capacities();
        stats::count(&STATS.threads_started);
        // May call calloc (for keys past the first 32): the heap is ready.
        libc::pthread_setspecific(KEY.load(Ordering::Acquire), tc as *const libc::c_void);
    }
    true
}

/// Give every cached block back to the slabs.
///
/// # Safety
/// `tc` is this thread's cache and `heap` its heap.
unsafe fn flush_all(tc: *mut ThreadCache, heap: *mut Heap) {
    // SAFETY: per contract; the bins' blocks are free blocks we give back.
    unsafe {
        for class in 1..NUM_CLASSES {
            let bin = &mut (*tc).bins[class];
            let (chain, n) = (bin.head, bin.count);
            bin.head = ptr::null_mut();
            bin.count = 0;
            if n > 0 {
                (*heap).free_chain(chain, n);
            }
        }
    }
}

/// pthread key destructor: the thread is exiting.
extern "C" fn thread_exit(_arg: *mut libc::c_void) {
    let tc = current();
    // SAFETY: runs on the exiting thread; its TLS is still valid.
    unsafe {
        let heap = (*tc).heap;
        if heap.is_null() {
            return;
        }
        (*tc).state = DEAD;
        flush_all(tc, heap);
        for bin in (*tc).bins.iter_mut() {
            bin.cap = 0;
        }
        (*tc).heap = ptr::null_mut();
        (*heap).teardown();
        heap::destroy(heap);
    }
    stats::count(&STATS.threads_ended);
}

/// Flush this thread's cache and give free memory back (malloc_trim).
pub fn trim() {
    let tc = current();
    // SAFETY: this thread's cache and heap.
    unsafe {
        let heap = (*tc).heap;
        if heap.is_null() {
            return;
        }
        flush_all(tc, heap);
        (*heap).collect(true);
        (*heap).purge();
    }
}

/// Allocation for a thread without a heap (inside its exit): one block from
/// the shared orphan heap.
#[cold]
fn orphan_alloc(class: usize) -> *mut u8 {
    if !process_start() {
        return ptr::null_mut();
    }
    let mut h = heap::ORPHAN.lock();
    let (b, _, _) = h.refill(class, 0);
    if !b.is_null() {
        // SAFETY: a block of at least 16 bytes, now ours.
        unsafe { (*b).key = 0 };
    }
    b as *mut u8
}

pub fn key_lock() -> &'static crate::sync::RawLock {
    KEY_LOCK.raw()
}

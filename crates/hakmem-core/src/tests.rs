//! Whole-engine tests through the `api` layer (module tests sit beside each
//! module). They run inside the test process next to glibc's allocator,
//! which serves Rust's own allocations: hakmem's blocks are only reached
//! through `api`.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

use crate::api;
use crate::config;
use crate::heap::Heap;
use crate::os::PAGE;
use crate::page_map::{self, Entry, CHUNK};
use crate::size_class::{class_of, MID_MAX, TINY_MAX};
use crate::slab::Block;
use crate::thread as hk_thread;

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pattern(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: callers pass blocks of at least `len` bytes.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8).wrapping_mul(31) };
    }
}

fn check_pattern(p: *const u8, len: usize, seed: u8) -> bool {
    (0..len).all(|i| {
        // SAFETY: callers pass blocks of at least `len` bytes.
        unsafe { *p.add(i) == seed.wrapping_add(i as u8).wrapping_mul(31) }
    })
}

/// Run `f` on the calling thread's heap (if it has one), under its lock
/// (waiting for a visitor that holds it for a moment).
fn with_my_heap(f: impl FnOnce(&mut Heap)) {
    let h = hk_thread::own();
    // SAFETY: this thread's heap; the lock keeps visitors out meanwhile. The
    // empty heap (a thread that never allocated) has no segments to look at.
    unsafe {
        if hk_thread::has_heap() && (*h).lock().lock() {
            f(&mut *h);
            (*h).lock().unlock();
        }
    }
}

/// Tests that change the cache capacities for the whole process, and those
/// that depend on them, run one at a time.
static CAPACITIES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Check the calling thread's heap and all its segments and slabs.
fn check_my_heap() {
    with_my_heap(|h| h.check());
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => rng.below(TINY_MAX as u64 + 1) as usize,
        70..=94 => rng.below(MID_MAX as u64) as usize + 1,
        _ => rng.below(3 << 20) as usize + MID_MAX,
    }
}

/// Random malloc/calloc/realloc/memalign/free against a shadow model of
/// what each live block must contain.
fn random_ops(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut live: HashMap<usize, (usize, u8)> = HashMap::new();
    let mut slots: Vec<usize> = Vec::new();
    for step in 0..steps {
        let op = rng.below(10);
        if op < 4 || slots.is_empty() {
            let size = random_size(&mut rng);
            let (p, zeroed) = match rng.below(4) {
                0 => (api::calloc(1, size), true),
                1 => {
                    let align = 1usize << (4 + rng.below(10));
                    let p = api::memalign(align, size);
                    assert_eq!(p as usize % align, 0, "memalign({align}, {size})");
                    (p, false)
                }
                _ => (api::malloc(size), false),
            };
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0, "alignment of {size}");
            // SAFETY: a live block.
            assert!(unsafe { api::malloc_usable_size(p) } >= size);
            if zeroed {
                // SAFETY: `size` bytes.
                assert!(unsafe { std::slice::from_raw_parts(p, size) }.iter().all(|&b| b == 0));
            }
            assert!(!live.contains_key(&(p as usize)), "block handed out twice");
            let seed = step as u8;
            pattern(p, size, seed);
            live.insert(p as usize, (size, seed));
            slots.push(p as usize);
        } else {
            let i = rng.below(slots.len() as u64) as usize;
            let p = slots.swap_remove(i);
            let (size, seed) = live.remove(&p).unwrap();
            assert!(check_pattern(p as *const u8, size, seed), "block {p:#x} of {size} corrupted");
            if op < 7 {
                // SAFETY: a live block given up.
                unsafe { api::free(p as *mut u8) };
            } else {
                let new_size = random_size(&mut rng);
                // SAFETY: a live block.
                let q = unsafe { api::realloc(p as *mut u8, new_size) };
                if new_size == 0 {
                    assert!(q.is_null());
                    continue;
                }
                assert!(!q.is_null());
                assert!(check_pattern(q, size.min(new_size), seed), "realloc lost contents");
                pattern(q, new_size, seed);
                live.insert(q as usize, (new_size, seed));
                slots.push(q as usize);
            }
        }
        if step % 4096 == 0 {
            check_my_heap();
        }
    }
    for p in slots {
        let (size, seed) = live.remove(&p).unwrap();
        assert!(check_pattern(p as *const u8, size, seed));
        // SAFETY: a live block given up.
        unsafe { api::free(p as *mut u8) };
    }
    check_my_heap();
}

#[test]
fn random_operations_match_a_shadow_model() {
    thread::spawn(|| random_ops(0x1234_5678, 60_000)).join().unwrap();
}

#[test]
fn every_size_up_to_two_mid_classes_is_aligned_and_usable() {
    thread::spawn(|| {
        let mut blocks = Vec::new();
        for size in (0..=5000).chain((5000..=MID_MAX + 5000).step_by(997)) {
            let p = api::malloc(size);
            assert!(!p.is_null());
            assert_eq!(p as usize % if size <= 8 { 8 } else { 16 }, 0);
            // SAFETY: a live block.
            let usable = unsafe { api::malloc_usable_size(p) };
            assert!(usable >= size);
            // The whole usable size is writable.
            pattern(p, usable, 3);
            blocks.push((p, usable));
        }
        for (p, usable) in blocks {
            assert!(check_pattern(p, usable, 3));
            // SAFETY: a live block given up.
            unsafe { api::free(p) };
        }
        check_my_heap();
    })
    .join()
    .unwrap();
}

#[test]
fn cross_thread_frees_come_back_to_the_owner() {
    let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(4);
    let consumer = thread::spawn(move || {
        for batch in rx {
            for p in batch {
                assert!(check_pattern(p as *const u8, 48, 9));
                // SAFETY: live blocks handed to us.
                unsafe { api::free(p as *mut u8) };
            }
        }
        check_my_heap();
    });
    thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        for _round in 0..200 {
            let batch: Vec<usize> = (0..500)
                .map(|_| {
                    let p = api::malloc(48);
                    pattern(p, 48, 9);
                    seen.insert(p as usize);
                    p as usize
                })
                .collect();
            tx.send(batch).unwrap();
        }
        // 100k blocks were allocated, at most ~3000 live at once (bounded
        // channel):
        // remotely freed blocks must have been reused.
        assert!(seen.len() < 40_000, "{} distinct blocks: remote frees not reused", seen.len());
        check_my_heap();
    })
    .join()
    .unwrap();
    consumer.join().unwrap();
}

#[test]
fn blocks_outlive_their_thread_and_its_segments_are_adopted() {
    // A thread allocates and exits with live blocks: its segments are
    // abandoned. Freeing them later, from elsewhere, must work, and new
    // threads adopt and reuse the memory.
    for round in 0..20 {
        let blocks: Vec<usize> = thread::spawn(move || {
            (0..2000)
                .map(|i| {
                    let size = 16 + (i % 64) * 16;
                    let p = api::malloc(size);
                    pattern(p, size, round as u8);
                    p as usize
                })
                .collect()
        })
        .join()
        .unwrap();
        thread::spawn(move || {
            for (i, p) in blocks.into_iter().enumerate() {
                let size = 16 + (i % 64) * 16;
                assert!(check_pattern(p as *const u8, size, round as u8));
                // SAFETY: live blocks of an exited thread.
                unsafe { api::free(p as *mut u8) };
            }
            check_my_heap();
        })
        .join()
        .unwrap();
    }
}

#[test]
fn thread_caches_of_capacity_zero_and_one_stay_correct() {
    let _one_at_a_time = CAPACITIES.lock().unwrap_or_else(|e| e.into_inner());
    for cap in [0, 1] {
        // Capacities apply to threads started after the change.
        config::set_for_test(config::TCACHE_TINY, cap);
        config::set_for_test(config::TCACHE_MID, cap);
        let t = thread::spawn(|| {
            random_ops(77, 20_000);
            check_my_heap();
        });
        let r = t.join();
        config::set_for_test(config::TCACHE_TINY, config::FLAGS[config::TCACHE_TINY].default);
        config::set_for_test(config::TCACHE_MID, config::FLAGS[config::TCACHE_MID].default);
        r.unwrap();
    }
}

#[test]
fn large_blocks_grow_shrink_and_are_cached() {
    // No huge-page advice: a block whose advice changes between two uses is
    // unmapped rather than reused (large.rs), which would change what is
    // checked here. (test_flags checks the advice.) No other test here
    // allocates blocks of 4 MiB or more. Restored even if the test fails.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            config::set_for_test(config::THP_MB, config::FLAGS[config::THP_MB].default);
        }
    }
    let _restore = Restore;
    config::set_for_test(config::THP_MB, 0);
    thread::spawn(|| {
        let mut size = MID_MAX + 1;
        let mut p = api::malloc(size);
        assert_eq!(p as usize % CHUNK, 0, "large blocks start on a chunk");
        pattern(p, size, 1);
        // Grow through several chunks, in place and by moving.
        while size < 40 << 20 {
            let new = size * 3 / 2;
            // SAFETY: a live block.
            let q = unsafe { api::realloc(p, new) };
            assert!(!q.is_null());
            assert!(check_pattern(q, size, 1), "growth to {new} lost contents");
            pattern(q, new, 1);
            p = q;
            size = new;
        }
        // Shrink back to the mid tier.
        for new in [10 << 20, 5 << 20, MID_MAX + 1, 5000] {
            // SAFETY: a live block.
            let q = unsafe { api::realloc(p, new) };
            assert!(check_pattern(q, new, 1));
            p = q;
        }
        // SAFETY: a live block given up.
        unsafe { api::free(p) };

        // Free then malloc of the same size reuses the cached mapping. (6 MiB:
        // above what the tests running beside this one ask for.)
        let a = api::malloc(6 << 20);
        // SAFETY: a live block given up.
        unsafe { api::free(a) };
        assert!(matches!(page_map::lookup(a as usize), Entry::LargeFree { .. }));
        let b = api::malloc(6 << 20);
        assert_eq!(a, b, "cached large block reused");
        assert!(matches!(page_map::lookup(b as usize), Entry::LargeHead { pages, .. } if pages == (6 << 20) / PAGE));
        // SAFETY: a live block given up.
        unsafe { api::free(b) };
        // A smaller request takes a cached block whole while the surplus is
        // within a quarter of the request (no munmap), and a block cut down
        // to the request beyond it. (Other tests share the cache: which
        // block serves a request may vary, never how far it may exceed it.)
        let pages_of = |p: *mut u8| match page_map::lookup(p as usize) {
            Entry::LargeHead { pages, .. } => pages * PAGE,
            e => panic!("{e:?} for a live large block"),
        };
        for (req, whole) in [(5 << 20, 6 << 20), (2 << 20, 2 << 20)] {
            let c = api::malloc(req);
            let got = pages_of(c);
            assert!(got >= req && got - req <= req / 4, "{got} bytes for a request of {req}");
            if c == a {
                assert_eq!(got, whole, "the 6 MiB block for a request of {req}");
            }
            // SAFETY: a live block of at least `req` bytes, then given up.
            unsafe {
                pattern(c, req, 3);
                api::free(c);
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn misuse_is_reported_and_ignored() {
    thread::spawn(|| {
        let p = api::malloc(64);
        let q = api::malloc(64);
        pattern(q, 64, 5);
        // Interior pointer, double free, wild pointer: each is ignored.
        // SAFETY: deliberately bad calls, which the API must survive.
        unsafe {
            api::free(p.add(16));
            api::free(p);
            api::free(p);
            api::free(0x1000 as *mut u8);
            assert!(api::realloc(p.add(32), 10).is_null());
        }
        // No block is handed out twice after the bad calls.
        let a = api::malloc(64);
        let b = api::malloc(64);
        assert_ne!(a, b);
        assert!(check_pattern(q, 64, 5));
        let big = api::malloc(1 << 20);
        // SAFETY: deliberately bad calls, as above.
        unsafe {
            api::free(big.add(PAGE));
            api::free(big);
            api::free(big);
            api::free(a);
            api::free(b);
            api::free(q);
        }
        check_my_heap();
    })
    .join()
    .unwrap();
}

#[test]
fn c_api_edge_cases_follow_glibc() {
    thread::spawn(|| {
        // SAFETY: every pointer passed is live or null.
        unsafe {
            assert!(!api::malloc(0).is_null());
            assert_eq!(api::malloc_usable_size(std::ptr::null_mut()), 0);
            api::free(std::ptr::null_mut());
            assert!(api::malloc(usize::MAX).is_null());
            assert_eq!(crate::os::errno(), libc::ENOMEM);
            assert!(api::calloc(usize::MAX / 2, 3).is_null());
            let p = api::malloc(100);
            assert!(api::reallocarray(p, usize::MAX, 2).is_null());
            assert!(api::realloc(p, 0).is_null());
            let mut out = std::ptr::null_mut();
            assert_eq!(api::posix_memalign(&mut out, 24, 8), libc::EINVAL);
            assert_eq!(api::posix_memalign(&mut out, 4, 8), libc::EINVAL);
            assert_eq!(api::posix_memalign(&mut out, 1 << 20, 100), 0);
            assert_eq!(out as usize % (1 << 20), 0);
            api::free(out);
            assert!(api::aligned_alloc(3, 10).is_null());
            let v = api::valloc(10);
            assert_eq!(v as usize % PAGE, 0);
            let pv = api::pvalloc(PAGE + 1);
            assert!(api::malloc_usable_size(pv) >= 2 * PAGE);
            api::free(v);
            api::free(pv);
            let m = api::memalign(48, 100); // rounded up to 64
            assert_eq!(m as usize % 64, 0);
            api::free(m);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_flush_interleaving_own_and_foreign_blocks_of_one_slab_keeps_lists_apart() {
    // Blocks of another thread's slab, with one of our own between them: the
    // foreign ones must reach their owner's remote list without our block.
    let (tx_blocks, rx_blocks) = mpsc::channel::<Vec<usize>>();
    let (tx_back, rx_back) = mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let mine: Vec<usize> = (0..4).map(|_| api::malloc(32) as usize).collect();
        tx_blocks.send(mine).unwrap();
        rx_back.recv().unwrap();
        // Collecting drains the remote lists.
        with_my_heap(|h| {
            h.collect();
        });
        check_my_heap();
    });
    let foreign = rx_blocks.recv().unwrap();
    thread::spawn(move || {
        let own = api::malloc(32) as *mut Block;
        let f: Vec<*mut Block> = foreign.iter().map(|&p| p as *mut _).collect();
        let chain = [f[0], own, f[1], f[2], f[3]];
        // SAFETY: live blocks handed to this thread, linked into one chain
        // in the order a flush would see them, and tagged as cached blocks are.
        unsafe {
            for w in chain.windows(2) {
                Block::set_next(w[0], w[1]);
            }
            Block::set_next(chain[4], std::ptr::null_mut());
            for &b in &chain {
                Block::mark_free(b);
            }
        }
        // SAFETY: the chain's blocks are given up.
        with_my_heap(|h| unsafe { h.free_chain(chain[0], 5, class_of(32)) });
        check_my_heap();
    })
    .join()
    .unwrap();
    tx_back.send(()).unwrap();
    owner.join().unwrap();
}

#[test]
fn a_large_block_maps_only_its_pages_and_what_follows_is_foreign() {
    use crate::api::{classify, Kind};
    use crate::os::{self, MapAt};
    thread::spawn(|| {
        let size = 300 << 10;
        let p = api::malloc(size);
        assert_eq!(p as usize % CHUNK, 0, "large blocks start on a chunk");
        let end = p as usize + size; // 300 KiB is whole pages
        assert_eq!(classify(p), Kind::Large { pages: size / PAGE });
        assert_eq!(classify(p.wrapping_add(PAGE)), Kind::Invalid, "inside the block");
        // The rest of the chunk is not ours: another mapping fits right there.
        assert_eq!(os::map_at(end, PAGE), MapAt::Mapped, "the pages after the block are not mapped");
        assert_eq!(classify((end + 16) as *mut u8), Kind::Foreign, "a neighbour's pointer is foreign");
        // A block that cannot grow in place moves, and keeps its contents.
        pattern(p, size, 7);
        // SAFETY: a live block.
        let q = unsafe { api::realloc(p, size + PAGE) };
        assert_ne!(q, p, "the neighbour blocks growth in place");
        assert!(check_pattern(q, size, 7));
        assert_eq!(classify(p), Kind::Foreign, "the old range is no longer ours");
        // A moved block can grow (and move) again, any number of times, each
        // time past a neighbour; and its contents follow.
        let (mut q, mut size) = (q, size + PAGE);
        let mut walls = Vec::new();
        for _ in 0..20 {
            let end = q as usize + size;
            if os::map_at(end, PAGE) == MapAt::Mapped {
                walls.push(end);
            }
            pattern(q, size, 9);
            // SAFETY: a live block.
            let r = unsafe { api::realloc(q, size + 16 * PAGE) };
            assert!(!r.is_null(), "growth {size} -> {} of a moved block failed", size + 16 * PAGE);
            assert!(check_pattern(r, size, 9));
            q = r;
            size += 16 * PAGE;
        }
        // The bytes before a pointer just past the block are the block's:
        // never taken for a glibc chunk header (an mmapped chunk of 64 KiB).
        let end = q as usize + size;
        if os::map_at(end, PAGE) == MapAt::Mapped {
            walls.push(end);
        }
        // SAFETY: the last 16 bytes of our live block.
        unsafe {
            *((end - 16) as *mut usize) = 0;
            *((end - 8) as *mut usize) = (64 << 10) | 2;
        }
        assert_eq!(crate::foreign::verdict(end as *const u8), crate::foreign::Verdict::Invalid);
        for w in walls {
            // SAFETY: our test mappings.
            unsafe { os::unmap(w as *mut u8, PAGE) };
        }
        // Shrinking gives the pages past the new end back.
        // SAFETY: a live block.
        let r = unsafe { api::realloc(q, MID_MAX + PAGE) };
        assert_eq!(r, q, "shrinks in place");
        let new_end = r as usize + MID_MAX + PAGE;
        assert_eq!(classify((new_end + 16) as *mut u8), Kind::Foreign);
        assert_eq!(os::map_at(new_end, PAGE), MapAt::Mapped, "the pages past the new end were unmapped");
        // SAFETY: our test mappings, and a live block given up.
        unsafe {
            os::unmap(new_end as *mut u8, PAGE);
            os::unmap(end as *mut u8, PAGE);
            api::free(r);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_segment_grows_in_place_until_a_neighbour_stops_it() {
    use crate::api::{classify, Kind};
    use crate::os::{self, MapAt};
    use crate::segment;
    use crate::size_class::{SLAB_PAGE, SLAB_PAGES};
    let class = (1..).find(|&c| SLAB_PAGES[c] == 1).unwrap();
    // Other tests map memory meanwhile and may land in the unmapped part of
    // a segment's chunk: take segments until one has its page 12 free.
    let mut skipped = Vec::new();
    let (seg, wall) = loop {
        let seg = segment::acquire();
        assert!(!seg.is_null());
        let wall = seg as usize + 12 * SLAB_PAGE;
        if os::map_at(wall, PAGE) == MapAt::Mapped {
            break (seg, wall);
        }
        assert!(skipped.len() < 16, "no segment with its page 12 free in 16 tries");
        skipped.push(seg);
    };
    // SAFETY: empty segments nobody else references; the test owns them.
    unsafe {
        for s in skipped {
            segment::release(s);
        }
    }
    // SAFETY: an empty segment nobody else references; the test owns it.
    let s = unsafe { &mut *seg };
    let first_mapped = s.mapped_pages.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(first_mapped < 64, "a new segment maps only a prefix");
    let mut slabs = Vec::new();
    while let Some((_, _)) = s.alloc_slab(class, false) {
        slabs.push(slabs.len() + 1);
    }
    assert_eq!(slabs.len(), 11, "slab pages 1..12 fit below the neighbour at page 12");
    assert_eq!(s.mapped_pages.load(std::sync::atomic::Ordering::Relaxed), 12);
    assert!(s.maps(wall - 1) && !s.maps(wall));
    assert_eq!(classify((wall + 16) as *mut u8), Kind::Foreign, "the neighbour's memory is not ours");
    for first in slabs {
        s.release_slab(first);
    }
    #[cfg(debug_assertions)]
    s.check();
    // SAFETY: empty and on no list; then our test mapping.
    unsafe {
        segment::release(seg);
        os::unmap(wall as *mut u8, PAGE);
    }
}

#[test]
fn an_unmapped_segments_header_stays_readable_for_two_epochs() {
    use crate::os::{self, MapAt};
    use crate::segment::{self, Segment};
    let seg = segment::acquire();
    assert!(!seg.is_null());
    let base = seg as usize;
    // SAFETY: empty and on no list: into the cache, and out of it unmapped.
    unsafe { segment::release(seg) };
    segment::trim_cache();
    assert_eq!(page_map::lookup(base), Entry::Foreign, "the chunk left the page map first");
    // A reader that looked the chunk up just before still reads a header:
    // zeroes, "no slab, nothing mapped", so its pointer goes the foreign way.
    // SAFETY: the sealed header page is mapped read-only.
    let s = unsafe { &*Segment::of(base + 12345) };
    assert!(!s.maps(base + 12345));
    assert_eq!(s.info_at(base + 70_000).class(), 0);
    assert_eq!(os::map_at(base + os::PAGE, os::PAGE), MapAt::Mapped, "the rest is unmapped at once");
    // SAFETY: our probe mapping.
    unsafe { os::unmap((base + os::PAGE) as *mut u8, os::PAGE) };
    // Two epochs later the sealed page goes too.
    segment::age_cache(segment::current_epoch() + 2);
    assert_eq!(os::map_at(base, os::PAGE), MapAt::Mapped, "the sealed page is unmapped after two epochs");
    // SAFETY: our probe mapping.
    unsafe { os::unmap(base as *mut u8, os::PAGE) };
}

/// The periodic collection must not stop for good behind slabs it passes
/// over: a thread that freed most of a class (keeping a few blocks spread
/// over its slabs, and with half of the rest freed by another thread into
/// the slabs' remote lists) and then works in another class only gives the
/// emptied slabs back.
#[test]
fn the_periodic_collection_goes_round_and_takes_remote_frees() {
    const N: usize = 40_000;
    let class = class_of(256);
    thread::spawn(move || {
        let blocks: Vec<usize> = (0..N).map(|_| api::malloc(256) as usize).collect();
        let mut slabs_before = 0;
        with_my_heap(|h| slabs_before = h.slabs_of(class).0);
        // Every 1000th block stays; of the rest, odd ones are freed by
        // another thread (remote frees), even ones here.
        let remote: Vec<usize> =
            blocks.iter().enumerate().filter(|(i, _)| i % 1000 != 0 && i % 2 == 1).map(|(_, &b)| b).collect();
        thread::spawn(move || {
            for b in remote {
                // SAFETY: live blocks handed to this thread.
                unsafe { api::free(b as *mut u8) };
            }
        })
        .join()
        .unwrap();
        for (i, &b) in blocks.iter().enumerate() {
            if i % 1000 != 0 && i % 2 == 0 {
                // SAFETY: live blocks of this thread.
                unsafe { api::free(b as *mut u8) };
            }
        }
        // The blocks this thread's cache holds go back to their slabs.
        with_my_heap(|h| h.flush_cache());
        // Work in another class only: slow-path events drive collections.
        for _ in 0..400 {
            let v: Vec<usize> = (0..1000).map(|_| api::malloc(48) as usize).collect();
            for b in v {
                // SAFETY: live blocks of this thread.
                unsafe { api::free(b as *mut u8) };
            }
        }
        let (mut slabs_after, mut empty) = (0, 0);
        with_my_heap(|h| (slabs_after, empty) = h.slabs_of(class));
        // 40 blocks kept: at most 40 slabs hold them, plus one kept empty.
        assert!(slabs_before > 100, "{slabs_before} slabs for {N} blocks of 256 B");
        assert!(
            slabs_after <= N / 1000 + 1 && empty <= 1,
            "{slabs_after} of {slabs_before} slabs left ({empty} empty) with {} blocks live",
            N / 1000
        );
        check_my_heap();
        for (i, &b) in blocks.iter().enumerate() {
            if i % 1000 == 0 {
                // SAFETY: the blocks kept.
                unsafe { api::free(b as *mut u8) };
            }
        }
    })
    .join()
    .unwrap();
}

/// A bin the thread stopped using goes back to the slabs on the decay clock:
/// large mid bins must not pin slabs for good.
#[test]
fn a_bin_left_alone_is_given_back_on_the_decay_clock() {
    let class = class_of(8192);
    thread::spawn(move || {
        let blocks: Vec<usize> = (0..32).map(|_| api::malloc(8192) as usize).collect();
        for b in blocks {
            // SAFETY: live blocks of this thread.
            unsafe { api::free(b as *mut u8) };
        }
        let mut cached = 0;
        with_my_heap(|h| cached = h.cache.bins[class].count());
        assert!(cached >= 16, "{cached} blocks of 8 KiB cached after 32 frees");
        // Work in another class only, for up to 3 s: slow-path events drive
        // collections, and the purge clock (100 ms) ticks.
        let start = std::time::Instant::now();
        while cached > 0 && start.elapsed().as_secs() < 3 {
            let v: Vec<usize> = (0..1000).map(|_| api::malloc(48) as usize).collect();
            for b in v {
                // SAFETY: live blocks of this thread.
                unsafe { api::free(b as *mut u8) };
            }
            with_my_heap(|h| cached = h.cache.bins[class].count());
        }
        assert_eq!(cached, 0, "the 8 KiB bin still holds {cached} blocks after {:?}", start.elapsed());
        check_my_heap();
    })
    .join()
    .unwrap();
}

/// A bin that a thread runs empty and full in turn grows by its configured
/// capacity at each overflow that follows a refill, up to four times that
/// capacity; left alone, it goes back to its slabs and its capacity to the
/// configured one on the decay clock.
#[test]
fn a_bin_run_empty_and_full_grows_to_four_times_and_shrinks_when_left_alone() {
    let _one_at_a_time = CAPACITIES.lock().unwrap_or_else(|e| e.into_inner());
    let class = class_of(48);
    let base = crate::thread_cache::capacity(class);
    thread::spawn(move || {
        let cap_now = || {
            let mut c = 0;
            with_my_heap(|h| c = h.cache.bins[class].cap());
            c
        };
        let mut caps = Vec::new();
        for _ in 0..6 {
            let v: Vec<usize> = (0..5 * base).map(|_| api::malloc(48) as usize).collect();
            for b in v {
                // SAFETY: live blocks of this thread.
                unsafe { api::free(b as *mut u8) };
            }
            caps.push(cap_now());
        }
        assert_eq!(caps[0], 2 * base, "capacity after one cycle: {caps:?} (configured {base})");
        assert_eq!(
            *caps.last().unwrap(),
            4 * base,
            "capacity after six cycles: {caps:?} (configured {base})"
        );
        assert!(caps.windows(2).all(|w| w[0] <= w[1]), "capacity went down while in use: {caps:?}");
        let mut cached = 0;
        with_my_heap(|h| cached = h.cache.bins[class].count());
        assert!(
            cached > base,
            "{cached} blocks cached after freeing {} (configured capacity {base})",
            5 * base
        );
        check_my_heap();
        // Work in another class only: the bin is left alone.
        let start = std::time::Instant::now();
        while (cap_now() != base || cached > 0) && start.elapsed().as_secs() < 3 {
            let v: Vec<usize> = (0..1000).map(|_| api::malloc(8192) as usize).collect();
            for b in v {
                // SAFETY: live blocks of this thread.
                unsafe { api::free(b as *mut u8) };
            }
            with_my_heap(|h| cached = h.cache.bins[class].count());
        }
        assert_eq!(
            (cap_now(), cached),
            (base, 0),
            "capacity and blocks of the 48-byte bin after {:?}",
            start.elapsed()
        );
        check_my_heap();
    })
    .join()
    .unwrap();
}

/// A slab whose blocks all came back through other threads is carved afresh
/// from its start (`Slab::restart`); a double free of a block past the new
/// carve point is still reported as a double free (the published carve
/// point does not go down), and every block is handed out once.
#[test]
fn a_slab_emptied_by_remote_frees_restarts_and_still_sees_double_frees() {
    use crate::size_class::CAPACITY;
    use crate::stats::MISUSE;
    use std::sync::atomic::Ordering;
    let class = class_of(96);
    let cap = CAPACITY[class] as usize;
    thread::spawn(move || {
        // Whole slabs, every block in use: none on a local list or uncarved
        // (a refill carves at most what is left of a slab, so the bin is
        // empty exactly when a slab is used up).
        let mut blocks: Vec<usize> = Vec::new();
        loop {
            blocks.push(api::malloc(96) as usize);
            let mut cached = 1;
            with_my_heap(|h| cached = h.cache.bins[class].count());
            if blocks.len() >= 3 * cap && cached == 0 && blocks.len() % cap == 0 {
                break;
            }
        }
        let freed = blocks.clone();
        thread::spawn(move || {
            for b in freed {
                // SAFETY: live blocks handed to this thread.
                unsafe { api::free(b as *mut u8) };
            }
            // Its cache goes back to the owner's remote lists at exit.
        })
        .join()
        .unwrap();
        // The refill takes a full slab's remote frees, finds it empty and
        // carves it again from its first block.
        let first = api::malloc(96) as usize;
        let start = blocks.iter().position(|&b| b == first).expect("a block of the class's slabs");
        assert_eq!(start % cap, 0, "block {start} of the slabs handed out first: the slab did not restart");
        let (invalid, double) =
            (MISUSE.invalid_pointer.load(Ordering::Relaxed), MISUSE.double_free.load(Ordering::Relaxed));
        // SAFETY: a deliberate double free of a block past the new carve point.
        unsafe { api::free(blocks[start + cap - 1] as *mut u8) };
        assert_eq!(MISUSE.double_free.load(Ordering::Relaxed), double + 1, "double free not reported");
        assert_eq!(MISUSE.invalid_pointer.load(Ordering::Relaxed), invalid, "a freed block called invalid");
        // Every block comes back, each once.
        let mut again: Vec<usize> = (1..blocks.len()).map(|_| api::malloc(96) as usize).collect();
        again.push(first);
        let mut sorted = again.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), blocks.len(), "a block was handed out twice");
        check_my_heap();
        for b in again {
            // SAFETY: live blocks of this thread.
            unsafe { api::free(b as *mut u8) };
        }
        check_my_heap();
    })
    .join()
    .unwrap();
}

/// A new slab takes pages still backed by memory in a later segment before
/// fresh pages of the first one: otherwise a thread cycling through sizes
/// touches new memory while its freed pages wait for the purge (mid sizes
/// peaked 7% higher).
#[test]
fn a_new_slab_reuses_freed_pages_of_any_segment_before_fresh_ones() {
    use crate::segment::Segment;
    use crate::size_class::SLAB_PAGES;
    let (big, small) = (250_000, 60_000);
    assert_eq!((SLAB_PAGES[class_of(big)], SLAB_PAGES[class_of(small)]), (4, 1));
    let _one_at_a_time = CAPACITIES.lock().unwrap_or_else(|e| e.into_inner());
    // No thread cache: every malloc takes one new slab of these one-block
    // classes, every free releases one.
    config::set_for_test(config::TCACHE_MID, 0);
    let t = thread::spawn(move || {
        let seg = |p: usize| Segment::of(p) as usize;
        // Free a block so that its pages are the heap's only dirty ones:
        // the others (a reused or adopted segment's) are purged first, and an
        // emptied slab waits for a collection to give its pages back.
        let free = |p: usize| {
            with_my_heap(|h| {
                h.collect();
                h.purge();
            });
            // SAFETY: live blocks of this thread.
            unsafe { api::free(p as *mut u8) };
            with_my_heap(|h| {
                h.collect();
            });
        };
        let mut blocks = vec![api::malloc(big) as usize];
        while seg(*blocks.last().unwrap()) == seg(blocks[0]) {
            blocks.push(api::malloc(big) as usize);
            assert!(blocks.len() < 64, "16 four-page slabs fill a segment");
        }
        // Four freed pages in the first segment, one of them taken again:
        // three left, too few for a big slab, and the segment is not full.
        let (first, second) = (blocks[1], blocks[2]);
        assert_eq!(seg(first), seg(second));
        free(first);
        let small_block = api::malloc(small) as usize;
        assert_eq!(seg(small_block), seg(first));
        // Big slabs go on in the fresh pages of later segments, until a new
        // one comes first in the heap's queue.
        let from = seg(*blocks.last().unwrap());
        loop {
            blocks.push(api::malloc(big) as usize);
            let s = seg(*blocks.last().unwrap());
            assert_ne!(s, seg(first), "no room there for four pages");
            if s != from {
                break;
            }
        }
        // Now four more freed pages in the first segment, behind the new one.
        free(second);
        let again = api::malloc(big) as usize;
        assert_eq!(seg(again), seg(first), "the freed pages are taken before the new segment's fresh ones");
        check_my_heap();
        for b in blocks.into_iter().filter(|&b| b != first && b != second).chain([again, small_block]) {
            free(b);
        }
    });
    let r = t.join();
    config::set_for_test(config::TCACHE_MID, config::FLAGS[config::TCACHE_MID].default);
    r.unwrap();
}

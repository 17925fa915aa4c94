//! Property-based random-operation test of the whole allocation engine
//! against a shadow model, across threads and thread exit.
//!
//! proptest generates 2..=4 per-thread programs of up to 200 operations each
//! (malloc, calloc, posix_memalign, aligned_alloc, memalign, free, realloc,
//! malloc_usable_size, malloc_trim, and hand-offs of live blocks to a shared
//! pool that any thread frees from). The programs run on fresh threads; each
//! thread hands its remaining blocks to the pool when it ends, so many blocks
//! are freed by another thread, often after their allocating thread has
//! exited (its heap torn down by the thread-exit hook, its segments abandoned
//! and adopted). What is left in the pool is freed by the test thread after
//! every worker has been joined.
//!
//! The shadow model catches what an allocator bug looks like from outside:
//! - a block handed out twice, or two live blocks that overlap: every live
//!   block's usable range `[p, p + malloc_usable_size(p))` is kept in one
//!   process-wide map shared by all threads; a new block must not intersect
//!   any live one. A block leaves the map *before* it is freed and enters it
//!   *after* it is allocated, so a race between threads can never make a
//!   correct engine look wrong;
//! - lost or clobbered contents (a free-list link written into a live block,
//!   pages purged while live, a bad realloc copy): each block is filled over
//!   its whole usable size with a pattern seeded per block, checked in full
//!   before every free and realloc, after a trim, and at the head and tail of
//!   every live block of the thread after every operation; realloc must keep
//!   the first `min(old, new)` requested bytes;
//! - bad alignment (16 bytes for everything, the requested power of two for
//!   the aligned calls), a usable size below the request or one that changes
//!   while the block lives, calloc memory that is not zero, null returns, and
//!   `realloc(p, 0)` not freeing (glibc: it frees and returns null).
//!
//! Sizes come from a mix of tiny (0..=64, 65..=1024), mid (..=256 KiB) and,
//! now and then, large (..=4 MiB) requests; alignments are 16..=64 KiB, and
//! rarely 128 KiB..=1 MiB (served by the large tier).
//!
//! The default is 256 cases (a few seconds; the test profile is optimised).
//! Run longer, and under other engine flags, e.g.:
//!   PROPTEST_CASES=5000 cargo test -p hakmem-core --test random_ops
//!   HAKMEM_CHECK=1 PROPTEST_CASES=3000 cargo test -p hakmem-core --test random_ops
//!   (also HAKMEM_TCACHE_TINY=0 HAKMEM_TCACHE_MID=0, HAKMEM_PURGE_DELAY_MS=0
//!   HAKMEM_PURGE_KB=0, HAKMEM_LARGE_CACHE_MB=0: see docs/ENV.md)
//! A failure prints the minimal failing programs that proptest shrank to.
//! Thread interleavings are not reproducible, so a rerun of that input may
//! need a few tries. Failure persistence is off: nothing is written to the
//! source tree.
#![cfg(not(loom))]

use std::collections::{BTreeMap, VecDeque};
use std::ptr;
use std::sync::{Barrier, Mutex};
use std::thread;

use hakmem_core::api;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Largest request of the large tier this test makes.
const LARGE_MAX: usize = 4 << 20;
/// Bytes checked at each end of every live block after every operation.
const QUICK: usize = 64;
/// Proptest cases when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

// ---------------------------------------------------------------------------
// The shadow model.

/// A live block as the model knows it.
#[derive(Clone, Copy, Debug)]
struct Block {
    addr: usize,
    /// Requested size.
    size: usize,
    /// `malloc_usable_size` when it was allocated; filled with the pattern.
    usable: usize,
    seed: u64,
}

/// The usable ranges `start -> end` of all live blocks, of every thread.
#[derive(Default)]
struct Registry {
    ranges: Mutex<BTreeMap<usize, usize>>,
}

impl Registry {
    /// A block `[start, end)` was handed out: it must not intersect any live
    /// block.
    fn insert(&self, start: usize, end: usize) -> Result<(), String> {
        let mut r = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        // Live ranges are disjoint, so only the last one starting below `end`
        // can reach into `[start, end)`.
        if let Some((&s, &e)) = r.range(..end).next_back() {
            if e > start {
                return Err(format!(
                    "block {start:#x}..{end:#x} overlaps the live block {s:#x}..{e:#x} \
                     (handed out twice?)"
                ));
            }
        }
        r.insert(start, end);
        Ok(())
    }

    /// The block `[start, end)` is about to be freed.
    fn remove(&self, start: usize, end: usize) -> Result<(), String> {
        let mut r = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        match r.get(&start) {
            Some(&e) if e == end => {
                r.remove(&start);
                Ok(())
            }
            Some(&e) => Err(format!("model: block {start:#x} ends at {e:#x}, not {end:#x}")),
            None => Err(format!("model: block {start:#x} is not live")),
        }
    }

    fn len(&self) -> usize {
        self.ranges.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The pattern of a block with `seed`: byte `i` is `row[i % 256] ^ step(i / 256)`,
/// so it changes with every byte and across every 256-byte and 64 KiB step
/// (a shifted copy shows), and filling or checking a run of 256 bytes is one
/// vectorisable loop.
struct Pattern {
    row: [u8; 256],
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        let mul = (seed >> 8) as u8 | 1;
        Pattern { row: std::array::from_fn(|j| (seed as u8).wrapping_add((j as u8).wrapping_mul(mul))) }
    }

    fn step(k: usize) -> u8 {
        (k as u8).wrapping_mul(0x9d) ^ (k >> 8) as u8
    }

    /// Calls `f(range, row_part, step)` for the runs of `from..to` that lie
    /// within one 256-byte step.
    fn runs(&self, from: usize, to: usize, mut f: impl FnMut(std::ops::Range<usize>, &[u8], u8) -> bool) {
        let mut a = from;
        while a < to {
            let b = ((a | 255) + 1).min(to);
            if !f(a..b, &self.row[a & 255..(a & 255) + (b - a)], Self::step(a >> 8)) {
                return;
            }
            a = b;
        }
    }
}

fn fill(p: usize, from: usize, to: usize, seed: u64) {
    // SAFETY: callers pass a live block of at least `to` usable bytes that
    // only this thread touches.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, to) };
    Pattern::new(seed).runs(from, to, |r, row, step| {
        for (b, &x) in bytes[r].iter_mut().zip(row) {
            *b = x ^ step;
        }
        true
    });
}

/// Offset of the first byte in `from..to` that is not the pattern.
fn first_bad(p: usize, from: usize, to: usize, seed: u64) -> Option<usize> {
    // SAFETY: callers pass a live block of at least `to` usable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, to) };
    let mut bad = None;
    Pattern::new(seed).runs(from, to, |r, row, step| {
        let run = &bytes[r.clone()];
        if run.iter().zip(row).fold(0, |acc, (&b, &x)| acc | (b ^ x ^ step)) == 0 {
            return true;
        }
        bad = run.iter().zip(row).position(|(&b, &x)| b != x ^ step).map(|i| r.start + i);
        false
    });
    bad
}

fn check_range(b: &Block, from: usize, to: usize, what: &str) -> Result<(), String> {
    match first_bad(b.addr, from, to, b.seed) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: byte {i} of block {:#x} (size {}, usable {}) was changed",
            b.addr, b.size, b.usable
        )),
    }
}

fn check_full(b: &Block, what: &str) -> Result<(), String> {
    check_range(b, 0, b.usable, what)
}

/// Head and tail of the block.
fn check_quick(b: &Block) -> Result<(), String> {
    check_range(b, 0, b.usable.min(QUICK), "live block")?;
    check_range(b, b.usable.saturating_sub(QUICK), b.usable, "live block")
}

fn usable_size(p: usize) -> usize {
    // SAFETY: callers pass a live block.
    unsafe { api::malloc_usable_size(p as *mut u8) }
}

/// A fresh seed (splitmix64 of a counter).
fn next_seed(counter: &mut u64) -> u64 {
    *counter = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *counter;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Check a block the engine just handed out and add it to the model.
fn adopt(
    reg: &Registry,
    p: *mut u8,
    size: usize,
    align: usize,
    zeroed: bool,
    seed: u64,
) -> Result<Block, String> {
    if p.is_null() {
        return Err(format!("null for {size} bytes"));
    }
    let addr = p as usize;
    if addr % align.max(16) != 0 {
        return Err(format!("block {addr:#x} of {size} bytes is not {}-aligned", align.max(16)));
    }
    let usable = usable_size(addr);
    if usable < size {
        return Err(format!("block {addr:#x}: usable size {usable} < requested {size}"));
    }
    reg.insert(addr, addr + usable.max(1))?;
    if zeroed {
        // SAFETY: a live block of at least `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        if let Some(i) = bytes.iter().position(|&x| x != 0) {
            return Err(format!("calloc block {addr:#x} of {size} bytes: byte {i} is not zero"));
        }
    }
    fill(addr, 0, usable, seed);
    Ok(Block { addr, size, usable, seed })
}

/// Check a block in full and free it, leaving the model first.
fn release(reg: &Registry, b: &Block, what: &str) -> Result<(), String> {
    check_full(b, what)?;
    let usable = usable_size(b.addr);
    if usable != b.usable {
        return Err(format!("{what}: usable size of {:#x} changed from {} to {usable}", b.addr, b.usable));
    }
    reg.remove(b.addr, b.addr + b.usable.max(1))?;
    // SAFETY: a live block, given up.
    unsafe { api::free(b.addr as *mut u8) };
    Ok(())
}

// ---------------------------------------------------------------------------
// Operations and their strategies.

#[derive(Clone, Copy, Debug)]
enum AllocKind {
    Malloc,
    Calloc,
    PosixMemalign,
    AlignedAlloc,
    Memalign,
}

/// `slot`s are taken modulo the number of the thread's live blocks (an
/// operation on a thread with none does nothing).
#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        kind: AllocKind,
        size: usize,
        align_log2: u32,
    },
    Free {
        slot: usize,
    },
    Realloc {
        slot: usize,
        size: usize,
    },
    /// Move a live block to the shared pool, for any thread to free.
    Handoff {
        slot: usize,
    },
    /// Free the oldest block of the shared pool (maybe another thread's,
    /// maybe one whose thread has exited).
    FreeFromPool,
    UsableSize {
        slot: usize,
    },
    Trim,
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        40 => 0..=64usize,
        30 => 65..=1024usize,
        25 => 1025..=262_144usize,
        3 => 262_145..=LARGE_MAX,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(AllocKind::Malloc),
        Just(AllocKind::Calloc),
        Just(AllocKind::PosixMemalign),
        Just(AllocKind::AlignedAlloc),
        Just(AllocKind::Memalign),
    ];
    let align_log2 = prop_oneof![20 => 4u32..=16, 1 => 17u32..=20];
    let slot = 0usize..64;
    prop_oneof![
        35 => (kind, size_strategy(), align_log2)
            .prop_map(|(kind, size, align_log2)| Op::Alloc { kind, size, align_log2 }),
        18 => slot.clone().prop_map(|slot| Op::Free { slot }),
        12 => (slot.clone(), size_strategy()).prop_map(|(slot, size)| Op::Realloc { slot, size }),
        10 => slot.clone().prop_map(|slot| Op::Handoff { slot }),
        8 => Just(Op::FreeFromPool),
        6 => slot.prop_map(|slot| Op::UsableSize { slot }),
        1 => Just(Op::Trim),
    ]
}

fn programs_strategy() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op_strategy(), 0..=200), 2..=4)
}

// ---------------------------------------------------------------------------
// Running programs.

struct Shared {
    reg: Registry,
    pool: Mutex<VecDeque<Block>>,
    /// The workers start together, so that their programs overlap in time.
    start: Barrier,
}

fn run_op(shared: &Shared, live: &mut Vec<Block>, op: Op, seeds: &mut u64) -> Result<(), String> {
    let reg = &shared.reg;
    let pick =
        |slot: usize, live: &mut Vec<Block>| (!live.is_empty()).then(|| live.swap_remove(slot % live.len()));
    match op {
        Op::Alloc { kind, size, align_log2 } => {
            let align = 1usize << align_log2;
            let (p, align, zeroed) = match kind {
                AllocKind::Malloc => (api::malloc(size), 16, false),
                AllocKind::Calloc => {
                    // Both factors of the product, now and then.
                    let p = if size % 8 == 0 && size > 0 {
                        api::calloc(size / 8, 8)
                    } else {
                        api::calloc(1, size)
                    };
                    (p, 16, true)
                }
                AllocKind::PosixMemalign => {
                    let mut out = ptr::null_mut();
                    // SAFETY: `out` is a writable pointer.
                    let rc = unsafe { api::posix_memalign(&mut out, align, size) };
                    if rc != 0 {
                        return Err(format!("posix_memalign({align}, {size}) returned {rc}"));
                    }
                    (out, align, false)
                }
                AllocKind::AlignedAlloc => (api::aligned_alloc(align, size), align, false),
                AllocKind::Memalign => (api::memalign(align, size), align, false),
            };
            live.push(adopt(reg, p, size, align, zeroed, next_seed(seeds))?);
        }
        Op::Free { slot } => {
            if let Some(b) = pick(slot, live) {
                release(reg, &b, "before free")?;
            }
        }
        Op::Realloc { slot, size } => {
            let Some(b) = pick(slot, live) else { return Ok(()) };
            check_full(&b, "before realloc")?;
            reg.remove(b.addr, b.addr + b.usable.max(1))?;
            // SAFETY: a live block; on success the old pointer is dropped.
            let q = unsafe { api::realloc(b.addr as *mut u8, size) };
            if size == 0 {
                if !q.is_null() {
                    return Err(format!("realloc({:#x}, 0) returned {q:p}, not null", b.addr));
                }
                return Ok(());
            }
            if q.is_null() {
                return Err(format!("realloc({:#x}, {size}) returned null", b.addr));
            }
            let keep = b.size.min(size);
            if let Some(i) = first_bad(q as usize, 0, keep, b.seed) {
                return Err(format!(
                    "realloc({:#x} of {}, {size}) -> {q:p}: byte {i} of the {keep} kept bytes was lost",
                    b.addr, b.size
                ));
            }
            live.push(adopt(reg, q, size, 16, false, next_seed(seeds))?);
        }
        Op::Handoff { slot } => {
            if let Some(b) = pick(slot, live) {
                shared.pool.lock().unwrap_or_else(|e| e.into_inner()).push_back(b);
            }
        }
        Op::FreeFromPool => {
            let b = shared.pool.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            if let Some(b) = b {
                release(reg, &b, "before free from the pool")?;
            }
        }
        Op::UsableSize { slot } => {
            if !live.is_empty() {
                let b = live[slot % live.len()];
                let usable = usable_size(b.addr);
                if usable != b.usable || usable < b.size {
                    return Err(format!(
                        "usable size of {:#x} (size {}) is {usable}, was {}",
                        b.addr, b.size, b.usable
                    ));
                }
                check_full(&b, "usable size")?;
            }
        }
        Op::Trim => {
            api::malloc_trim(0);
            for b in live.iter() {
                check_full(b, "after malloc_trim")?;
            }
        }
    }
    Ok(())
}

/// One thread's program. Its blocks still live at the end go to the pool:
/// freed later by other threads or by the test thread, after this one exits.
fn run_program(shared: &Shared, tid: usize, ops: &[Op]) -> Result<(), String> {
    let mut live = Vec::new();
    let mut seeds = (tid as u64) << 48;
    shared.start.wait();
    for (step, &op) in ops.iter().enumerate() {
        let r =
            run_op(shared, &mut live, op, &mut seeds).and_then(|()| live.iter().try_for_each(check_quick));
        r.map_err(|e| format!("thread {tid}, op {step} ({op:?}): {e}"))?;
    }
    shared.pool.lock().unwrap_or_else(|e| e.into_inner()).extend(live);
    Ok(())
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

fn run_case(programs: &[Vec<Op>]) -> Result<(), String> {
    let shared = Shared {
        reg: Registry::default(),
        pool: Mutex::new(VecDeque::new()),
        start: Barrier::new(programs.len()),
    };
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .enumerate()
            .map(|(tid, ops)| {
                let shared = &shared;
                s.spawn(move || run_program(shared, tid, ops))
            })
            .collect();
        // Joined explicitly: each thread has exited (thread-exit hook run)
        // before the pool's leftovers are freed below.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| Err(format!("worker panicked: {}", panic_message(&*e)))))
            .collect()
    });
    for r in results {
        r?;
    }
    let leftovers: Vec<Block> = shared.pool.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
    for b in &leftovers {
        release(&shared.reg, b, "before free after the threads exited")?;
    }
    match shared.reg.len() {
        0 => Ok(()),
        n => Err(format!("model: {n} blocks still registered after every free")),
    }
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    Config { cases, max_shrink_iters: 512, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_operations_across_threads_match_the_shadow_model(programs in programs_strategy()) {
        run_case(&programs).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic tests.

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// 50 rounds of 4 short-lived threads that allocate ~200 blocks of mixed
/// sizes each and exit with all of them live; the test thread checks and
/// frees them (into abandoned segments and freed large blocks), then trims.
#[test]
fn blocks_of_exited_threads_are_freed_by_another() {
    let reg = Registry::default();
    for round in 0..50u64 {
        let blocks: Vec<Block> = thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let reg = &reg;
                    s.spawn(move || {
                        let mut rng = Rng(0x9E37_79B9 ^ (((round << 8) | t) * 0x1_0000_0001));
                        let mut seeds = (round << 32) | (t << 24);
                        let n = 180 + rng.below(41);
                        (0..n)
                            .map(|i| {
                                let size = match rng.below(100) {
                                    0..=59 => rng.below(1025) as usize,
                                    // Log-uniform over the mid tier.
                                    60..=97 => {
                                        let bits = 10 + rng.below(9);
                                        1025 + rng.below(1 << bits) as usize
                                    }
                                    _ => 256 * 1024 + 1 + rng.below(768 * 1024) as usize,
                                };
                                let (p, align, zeroed) = match i % 4 {
                                    0 => (api::calloc(1, size), 16, true),
                                    1 => {
                                        let align = 16 << rng.below(10);
                                        (api::memalign(align, size), align, false)
                                    }
                                    _ => (api::malloc(size), 16, false),
                                };
                                adopt(reg, p, size, align, zeroed, next_seed(&mut seeds))
                                    .unwrap_or_else(|e| panic!("round {round}, thread {t}, block {i}: {e}"))
                            })
                            .collect::<Vec<Block>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        // Every allocating thread has exited.
        for b in &blocks {
            release(&reg, b, "block of an exited thread").unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        api::malloc_trim(0);
        assert_eq!(reg.len(), 0);
    }
}

/// The overlap checker itself: the same range twice, or any overlap, fails.
#[test]
fn overlap_checker_rejects_a_range_handed_out_twice() {
    let r = Registry::default();
    r.insert(0x1000, 0x1040).unwrap();
    assert!(r.insert(0x1000, 0x1040).is_err(), "same block twice");
    assert!(r.insert(0x1030, 0x1050).is_err(), "overlaps the end");
    assert!(r.insert(0x0ff0, 0x1010).is_err(), "overlaps the start");
    assert!(r.insert(0x0f00, 0x2000).is_err(), "contains it");
    assert!(r.insert(0x1010, 0x1020).is_err(), "inside it");
    r.insert(0x1040, 0x1050).unwrap();
    r.insert(0x0ff0, 0x1000).unwrap();
    assert!(r.remove(0x2000, 0x2010).is_err(), "not live");
    assert!(r.remove(0x1000, 0x1010).is_err(), "wrong end");
    r.remove(0x1000, 0x1040).unwrap();
    r.insert(0x1000, 0x1040).unwrap();
    assert_eq!(r.len(), 3);
}

/// The content checker: the pattern reads back, and a changed byte or a
/// copy shifted by 256 bytes does not.
#[test]
fn pattern_checker_finds_a_changed_or_shifted_byte() {
    let mut buf = vec![0u8; 200_000];
    let p = buf.as_mut_ptr() as usize;
    fill(p, 0, buf.len(), 42);
    assert_eq!(first_bad(p, 0, buf.len(), 42), None);
    assert_eq!(first_bad(p, 0, buf.len(), 43), Some(0));
    buf[70_000] ^= 1;
    assert_eq!(first_bad(p, 0, buf.len(), 42), Some(70_000));
    assert_eq!(first_bad(p, 70_001, buf.len(), 42), None);
    buf.copy_within(0..1000, 256);
    assert_eq!(first_bad(p, 0, buf.len(), 42), Some(256));
}

/// The checker fires against the real engine when the model misses a free:
/// the freed block is handed out again while the model still holds it.
#[test]
fn a_free_the_model_missed_is_reported_as_an_overlap() {
    thread::spawn(|| {
        let reg = Registry::default();
        let mut seeds = 7;
        let forgotten = adopt(&reg, api::malloc(48), 48, 16, false, next_seed(&mut seeds)).unwrap();
        // SAFETY: a live block, freed behind the model's back.
        unsafe { api::free(forgotten.addr as *mut u8) };
        let mut fired = false;
        let mut blocks = Vec::new();
        for _ in 0..1000 {
            let p = api::malloc(48);
            match adopt(&reg, p, 48, 16, false, next_seed(&mut seeds)) {
                Ok(b) => blocks.push(b),
                Err(e) => {
                    assert!(e.contains("overlaps"), "{e}");
                    assert_eq!(p as usize, forgotten.addr);
                    fired = true;
                    // SAFETY: a live block given up.
                    unsafe { api::free(p) };
                }
            }
        }
        assert!(fired, "the engine never reused the freed block");
        for b in &blocks {
            release(&reg, b, "free").unwrap();
        }
    })
    .join()
    .unwrap();
}

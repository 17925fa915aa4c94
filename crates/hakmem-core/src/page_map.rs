//! The ownership map: for every 4 MiB chunk of the address space, what hakmem
//! has there. This is how a pointer is classified (ours or foreign, which
//! tier) without ever reading memory near it.
//!
//! A two-level radix table over the 47-bit user address space: a static top
//! level of 2048 pointers (16 KiB of BSS) and leaves of 16384 entries
//! (128 KiB, mapped on first use and never freed, so readers need no locks).
//! Entries are written only by the thread that maps or unmaps the chunk.
//!
//! `free` asks one question first, "is this chunk a slab segment?", and
//! asks it of a flat byte per chunk (`SEGMENT_CHUNKS`, 32 MiB of BSS over
//! the 2^25 chunks; only the pages around hakmem's own chunks are ever
//! written, the rest reads as the zero page): one load, where the radix
//! table takes two dependent ones.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use crate::os;

/// Chunks are the unit of ownership: segments are exactly one chunk, large
/// blocks are whole runs of chunks.
pub const CHUNK_SHIFT: usize = 22;
pub const CHUNK: usize = 1 << CHUNK_SHIFT;
pub const CHUNK_MASK: usize = CHUNK - 1;

const ADDRESS_BITS: usize = 47;
const LEAF_BITS: usize = 14;
const TOP_BITS: usize = ADDRESS_BITS - CHUNK_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const TOP_LEN: usize = 1 << TOP_BITS;

type Leaf = [AtomicUsize; LEAF_LEN];

static TOP: [AtomicPtr<Leaf>; TOP_LEN] = [const { AtomicPtr::new(ptr::null_mut()) }; TOP_LEN];

const CHUNKS: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);

/// Per chunk of the address space: 1 when it is a slab segment (mirrors
/// the radix table's `Segment` entries). One entry more than there are
/// chunks, always 0: the bound test is then a compare with the shifted
/// address that `free` computes anyway, where a power of two would be tested
/// on the address itself, shifted a second time.
static SEGMENT_CHUNKS: [AtomicU8; CHUNKS + 1] = [const { AtomicU8::new(0) }; CHUNKS + 1];

/// What a chunk holds. Encoded in one word; the low two bits are the tag.
///
/// A large block starts on a chunk boundary but maps only its own pages:
/// the rest of its last chunk is not hakmem's, and another mapping may sit
/// there. The entries therefore give the block's extent, so that a pointer
/// past the block's end is recognised as foreign (see [`large_block`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not hakmem's: foreign memory, or nothing.
    Foreign,
    /// A slab segment whose header sits at the chunk's base.
    Segment,
    /// The first chunk of a live large block that starts at the chunk's base,
    /// with its size in OS pages, whether it asked for transparent huge
    /// pages, and whether its free is to measure how much of it was touched
    /// (`large.rs`).
    LargeHead { pages: usize, huge: bool, probe: bool },
    /// A later chunk of a large block whose head is `back` chunks before.
    LargeTail { back: usize },
    /// The first chunk of a large block of `pages` pages that is free (held
    /// in the large cache).
    LargeFree { pages: usize },
}

const TAG_SEGMENT: usize = 1;
const TAG_HEAD: usize = 2;
/// Live heads: tag 2, the huge-page bit 2, the probe bit 3, pages from bit
/// 4. Tails and free heads: tag 3, told apart by bit 2, payload from bit 3.
const TAG_TAIL: usize = 3;
const TAG_FREE: usize = 7;

impl Entry {
    #[inline]
    fn decode(raw: usize) -> Entry {
        match raw & 3 {
            0 => Entry::Foreign,
            TAG_SEGMENT => Entry::Segment,
            TAG_HEAD => Entry::LargeHead { pages: raw >> 4, huge: raw & 4 != 0, probe: raw & 8 != 0 },
            _ if raw & 7 == TAG_FREE => Entry::LargeFree { pages: raw >> 3 },
            _ => Entry::LargeTail { back: raw >> 3 },
        }
    }

    fn encode(self) -> usize {
        match self {
            Entry::Foreign => 0,
            Entry::Segment => TAG_SEGMENT,
            Entry::LargeHead { pages, huge, probe } => {
                (pages << 4) | ((probe as usize) << 3) | ((huge as usize) << 2) | TAG_HEAD
            }
            Entry::LargeTail { back } => (back << 3) | TAG_TAIL,
            Entry::LargeFree { pages } => (pages << 3) | TAG_FREE,
        }
    }
}

/// The large block whose chunks cover an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargeBlock {
    pub base: usize,
    pub pages: usize,
    /// In the large cache, not live.
    pub free: bool,
}

/// The large block whose chunks cover `addr`, if any. The address may still
/// lie past the block's last page (then it is not hakmem's).
pub fn large_block(addr: usize) -> Option<LargeBlock> {
    let mut chunk = addr & !CHUNK_MASK;
    let mut e = lookup(chunk);
    if let Entry::LargeTail { back } = e {
        chunk = chunk.wrapping_sub(back << CHUNK_SHIFT);
        e = lookup(chunk);
    }
    match e {
        Entry::LargeHead { pages, .. } => Some(LargeBlock { base: chunk, pages, free: false }),
        Entry::LargeFree { pages } => Some(LargeBlock { base: chunk, pages, free: true }),
        _ => None,
    }
}

#[inline(always)]
fn split(addr: usize) -> (usize, usize) {
    ((addr >> (CHUNK_SHIFT + LEAF_BITS)), (addr >> CHUNK_SHIFT) & (LEAF_LEN - 1))
}

/// The raw entry for the chunk holding `addr`: two dependent loads.
#[inline(always)]
fn raw(addr: usize) -> usize {
    let (top, idx) = split(addr);
    if top >= TOP_LEN {
        return 0;
    }
    let leaf = TOP[top].load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: leaves are never freed once published, and `idx < LEAF_LEN`.
    unsafe { (*leaf)[idx].load(Ordering::Acquire) }
}

/// What the chunk holding `addr` is.
#[inline]
pub fn lookup(addr: usize) -> Entry {
    Entry::decode(raw(addr))
}

/// Fast test used by `free`: is `addr` inside a slab segment? One load.
#[inline(always)]
pub fn is_segment(addr: usize) -> bool {
    SEGMENT_CHUNKS.get(addr >> CHUNK_SHIFT).is_some_and(|b| b.load(Ordering::Acquire) == 1)
}

/// Record what the chunk holding `addr` is. Returns false when the leaf
/// covering it could not be mapped (out of memory); nothing changes then.
pub fn set(addr: usize, entry: Entry) -> bool {
    let (top, idx) = split(addr);
    if top >= TOP_LEN {
        return false;
    }
    let mut leaf = TOP[top].load(Ordering::Acquire);
    if leaf.is_null() {
        let fresh = os::map(core::mem::size_of::<Leaf>()) as *mut Leaf;
        if fresh.is_null() {
            return false;
        }
        match TOP[top].compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => leaf = fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never published.
                unsafe { os::unmap_unused(fresh as *mut u8, core::mem::size_of::<Leaf>()) };
                leaf = winner;
            }
        }
    }
    // SAFETY: the leaf is published and permanent; `idx < LEAF_LEN`.
    unsafe { (*leaf)[idx].store(entry.encode(), Ordering::Release) };
    // `top < TOP_LEN`, so the chunk index is below CHUNKS. Written only
    // when it changes, so large blocks do not touch the map's pages.
    let byte = &SEGMENT_CHUNKS[addr >> CHUNK_SHIFT];
    let is_segment = (entry == Entry::Segment) as u8;
    if byte.load(Ordering::Relaxed) != is_segment {
        byte.store(is_segment, Ordering::Release);
    }
    true
}

/// Mark `chunks` chunks from `base` as one large block (`head`, then tails
/// that point back to it), or all of them foreign when `head` is
/// `Entry::Foreign`.
pub fn set_large(base: usize, chunks: usize, head: Entry) -> bool {
    // Tails first, so that a head is never visible before its tails.
    for i in (1..chunks).rev() {
        let e = if head == Entry::Foreign { Entry::Foreign } else { Entry::LargeTail { back: i } };
        if !set(base + i * CHUNK, e) {
            for j in i + 1..chunks {
                set(base + j * CHUNK, Entry::Foreign);
            }
            return false;
        }
    }
    set(base, head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for e in [
            Entry::Foreign,
            Entry::Segment,
            Entry::LargeHead { pages: 1, huge: false, probe: false },
            Entry::LargeHead { pages: 123_456, huge: true, probe: false },
            Entry::LargeHead { pages: 77, huge: false, probe: true },
            Entry::LargeHead { pages: 1 << 34, huge: true, probe: true },
            Entry::LargeTail { back: 1 },
            Entry::LargeTail { back: 40_000 },
            Entry::LargeFree { pages: 77 },
        ] {
            assert_eq!(Entry::decode(e.encode()), e);
        }
    }

    #[test]
    fn set_and_lookup_by_any_address_in_the_chunk() {
        // An address range nothing else in the tests uses.
        let base = 0x3f00_0000_0000usize;
        assert_eq!(lookup(base), Entry::Foreign);
        assert!(set(base, Entry::Segment));
        assert_eq!(lookup(base + 12345), Entry::Segment);
        assert!(is_segment(base + CHUNK - 1));
        assert_eq!(lookup(base + CHUNK), Entry::Foreign);
        assert!(set(base, Entry::Foreign));
        assert!(!is_segment(base));
    }

    #[test]
    fn large_runs_mark_head_and_tails() {
        let base = 0x3e00_0000_0000usize;
        let head = Entry::LargeHead { pages: 2500, huge: false, probe: false };
        assert!(set_large(base, 3, head));
        assert_eq!(lookup(base), head);
        assert_eq!(lookup(base + CHUNK + 5), Entry::LargeTail { back: 1 });
        assert_eq!(lookup(base + 2 * CHUNK), Entry::LargeTail { back: 2 });
        assert_eq!(lookup(base + 3 * CHUNK), Entry::Foreign);
        let block = LargeBlock { base, pages: 2500, free: false };
        assert_eq!(large_block(base + 2 * CHUNK + 77), Some(block));
        assert_eq!(large_block(base + 3 * CHUNK), None);
        assert!(set(base, Entry::LargeFree { pages: 2500 }));
        assert_eq!(large_block(base + CHUNK), Some(LargeBlock { free: true, ..block }));
        assert!(set_large(base, 3, Entry::Foreign));
        assert_eq!(lookup(base + CHUNK), Entry::Foreign);
    }

    #[test]
    fn out_of_range_addresses_are_foreign() {
        assert_eq!(lookup(usize::MAX), Entry::Foreign);
        assert_eq!(lookup(1 << 47), Entry::Foreign);
        assert!(!set(1 << 48, Entry::Segment));
    }
}

//! Size classes: which block size serves a request, and how slabs of each
//! class are laid out.
//!
//! - tiny (classes 1..=20, up to 1 KiB): 16-byte steps to 128, then four
//!   classes per power of two; one 64 KiB slab page per slab.
//! - mid (classes 21..=52, up to 256 KiB): four classes per power of two;
//!   below 16 KiB, slabs of one or two slab pages holding at least eight
//!   blocks; from 16 KiB, the smallest page run that holds one block (one to
//!   four pages).
//!
//! Every stride is a multiple of 16 and slabs start on 64 KiB boundaries, so
//! every block is 16-byte aligned, and a block of a class whose stride is a
//! multiple of `a` (a power of two up to 64 KiB) is `a`-aligned. Class 0 means
//! "no class" in the page table. All tables are computed at compile time.

/// Bytes in one slab page; slabs are whole runs of these.
pub const SLAB_PAGE_SHIFT: usize = 16;
pub const SLAB_PAGE: usize = 1 << SLAB_PAGE_SHIFT;

/// Largest request served by the tiny tier.
pub const TINY_MAX: usize = 1024;
/// Largest request served from slabs at all; above is the large tier.
pub const MID_MAX: usize = 256 * 1024;

pub const FIRST_MID_CLASS: usize = 21;
/// Number of classes, including the unused class 0.
pub const NUM_CLASSES: usize = 53;
/// Per-class tables have this many slots (the rest are zero), so a class
/// taken from a page entry and masked with `CLASS_MASK` indexes them without
/// a bounds check on the free path.
pub const CLASS_SLOTS: usize = 64;
pub const CLASS_MASK: usize = CLASS_SLOTS - 1;

/// From this block size up, a slab is the smallest page run holding a block.
pub const ONE_BLOCK_SLAB_MIN: usize = 16 * 1024;

const fn compute_strides() -> [u32; CLASS_SLOTS] {
    let mut s = [0u32; CLASS_SLOTS];
    let mut c = 1;
    while c <= 8 {
        s[c] = (c * 16) as u32;
        c += 1;
    }
    // 4 per doubling: (128,256], (256,512], (512,1K], ... (128K,256K]
    let mut k = 7;
    while k < 18 {
        let mut q = 0;
        while q < 4 {
            s[c] = ((q + 5) << (k - 2)) as u32;
            c += 1;
            q += 1;
        }
        k += 1;
    }
    s
}

/// Block size of each class.
pub static STRIDE: [u32; CLASS_SLOTS] = compute_strides();

const fn compute_slab_pages() -> [u8; CLASS_SLOTS] {
    let s = compute_strides();
    let mut p = [0u8; CLASS_SLOTS];
    let mut c = 1;
    while c < NUM_CLASSES {
        // Tiny and small mid classes: at least eight blocks per slab, the slab
        // grown while its unusable tail is over an eighth of it. From 16 KiB
        // a slab is the smallest run of slab pages that holds one block (2-4
        // blocks fit in one page up to 32 KiB), close to how jemalloc and
        // tcmalloc serve such sizes: freed pages go back to the segment for
        // any class instead of staying stranded in a partly used slab. A
        // run's untouched tail costs address space only.
        let stride = s[c] as usize;
        let blocks = if stride >= ONE_BLOCK_SLAB_MIN { 1 } else { 8 };
        let mut pages = (blocks * stride).div_ceil(SLAB_PAGE);
        if pages < 1 {
            pages = 1;
        }
        // Ends by two pages: the tail is below one stride (< 16 KiB).
        while blocks > 1 && (pages * SLAB_PAGE) % stride * 8 > pages * SLAB_PAGE {
            pages += 1;
        }
        p[c] = pages as u8;
        c += 1;
    }
    p
}

/// Slab pages per slab of each class.
pub static SLAB_PAGES: [u8; CLASS_SLOTS] = compute_slab_pages();

const fn compute_capacity() -> [u32; CLASS_SLOTS] {
    let s = compute_strides();
    let p = compute_slab_pages();
    let mut cap = [0u32; CLASS_SLOTS];
    let mut c = 1;
    while c < NUM_CLASSES {
        cap[c] = ((p[c] as usize * SLAB_PAGE) / s[c] as usize) as u32;
        c += 1;
    }
    cap
}

/// Blocks per slab of each class.
pub static CAPACITY: [u32; CLASS_SLOTS] = compute_capacity();

const fn compute_divisibility() -> [u64; CLASS_SLOTS] {
    let s = compute_strides();
    let mut m = [0u64; CLASS_SLOTS];
    let mut c = 1;
    while c < NUM_CLASSES {
        m[c] = ((1u128 << 64) / s[c] as u128 + 1) as u64;
        c += 1;
    }
    m
}

/// Per class, `M = floor(2^64 / stride) + 1`: an offset `x < 2^32` is a
/// multiple of the stride exactly when `x * M mod 2^64 <= M - 1` (Lemire,
/// Kaser and Kurz, "Faster remainder by direct computation", 2019, with
/// `M` one above their `ceil` for the power-of-two strides). One multiply
/// tells `free` whether a pointer is a block start.
pub static DIVISIBILITY: [u64; CLASS_SLOTS] = compute_divisibility();

/// `e = stride * M - 2^64` for `class`, between 1 and the stride (the `+ 1`
/// in `M` keeps it above 0 for power-of-two strides; 0 for unused slots).
/// Block `k`'s offset times `M` is `k * e` (mod 2^64), while an offset
/// `k * stride + r` with `0 < r < stride` gives `r * M + k * e >= M`, far
/// above any `k * e` of a slab (below `MAX_SLAB_BYTES`): so
/// `x * M < carved * e` says at once that `x` is a block start and that the
/// block is one of the first `carved`.
#[inline]
fn divisibility_excess(class: usize) -> u64 {
    let c = class & CLASS_MASK;
    (STRIDE[c] as u64).wrapping_mul(DIVISIBILITY[c])
}

/// The bound of `free`'s block-start test for a slab of `class` with
/// `carved` blocks carved (see `divisibility_excess`); 0 matches nothing.
#[inline]
pub fn carve_limit(class: usize, carved: usize) -> u64 {
    carved as u64 * divisibility_excess(class)
}

/// The blocks carved in a slab of `class` whose limit is `limit`.
#[inline]
pub fn carved_blocks(class: usize, limit: u64) -> usize {
    match divisibility_excess(class) {
        0 => 0,
        e => (limit / e) as usize,
    }
}

const fn compute_slab_limit() -> [u32; CLASS_SLOTS] {
    let s = compute_strides();
    let cap = compute_capacity();
    let mut l = [0u32; CLASS_SLOTS];
    let mut c = 1;
    while c < NUM_CLASSES {
        l[c] = cap[c] * s[c];
        c += 1;
    }
    l
}

/// Per class, the bytes of a slab that blocks occupy: a block start lies
/// below it. Zero for unused slots, so they match nothing.
pub static SLAB_LIMIT: [u32; CLASS_SLOTS] = compute_slab_limit();

/// Is `off` (a byte offset into a slab of `class`) the start of a block?
#[inline(always)]
pub fn is_block_start(class: usize, off: usize) -> bool {
    (off as u64) < SLAB_LIMIT[class & CLASS_MASK] as u64 && is_stride_multiple(class, off)
}

/// Is `off` (below 2^32) a multiple of the stride of `class`? One multiply.
#[inline(always)]
pub fn is_stride_multiple(class: usize, off: usize) -> bool {
    let m = DIVISIBILITY[class & CLASS_MASK];
    (off as u64).wrapping_mul(m) <= m.wrapping_sub(1)
}

/// Bytes of the largest slab: what a slab's carve point can reach. A new
/// segment's first mapping covers its header and one slab this big
/// (`segment::FIRST_MAPPED_PAGES`), and `free`'s block-start test
/// (`DIVISIBILITY`) holds for offsets below 2^32.
pub const MAX_SLAB_BYTES: usize = 4 * SLAB_PAGE;
const _: () = assert!(MAX_SLAB_BYTES < 1 << 32, "Lemire's test covers offsets below 2^32");

/// Per `(size + 15) / 16`, the class of a tiny request of that size.
pub const fn compute_tiny_lookup() -> [u8; TINY_MAX / 16 + 1] {
    let s = compute_strides();
    let mut t = [0u8; TINY_MAX / 16 + 1];
    let mut i = 0;
    let mut c = 1;
    while i <= TINY_MAX / 16 {
        let need = if i == 0 { 1 } else { i * 16 };
        while (s[c] as usize) < need {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
}

/// Class for tiny sizes, indexed by `(size + 15) / 16`.
static TINY_LOOKUP: [u8; TINY_MAX / 16 + 1] = compute_tiny_lookup();

/// Class of a tiny request (`size <= TINY_MAX`). `malloc(0)` gets class 1.
#[inline(always)]
pub fn tiny_class(size: usize) -> usize {
    debug_assert!(size <= TINY_MAX);
    TINY_LOOKUP[(size + 15) >> 4] as usize
}

/// Class of a request of at most `MID_MAX` bytes.
#[inline]
pub fn class_of(size: usize) -> usize {
    if size <= TINY_MAX {
        return tiny_class(size);
    }
    debug_assert!(size <= MID_MAX);
    // size-1 lies in [2^k, 2^(k+1)); the four classes of that doubling are
    // (5,6,7,8) * 2^(k-2).
    let s = size - 1;
    let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
    let q = (s >> (k - 2)) - 4;
    FIRST_MID_CLASS + (k - 10) * 4 + q
}

/// Smallest class that serves `size` bytes at alignment `align` (a power of
/// two), or `None` when the large tier must serve it.
pub fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    if align > SLAB_PAGE {
        return None;
    }
    let need = if size > align { size } else { align };
    if need > MID_MAX {
        return None;
    }
    let mut c = class_of(need);
    // Power-of-two classes recur every four classes, so this ends quickly.
    while c < NUM_CLASSES {
        if STRIDE[c] as usize % align == 0 {
            return Some(c);
        }
        c += 1;
    }
    None
}

/// Is `c` a tiny class (as opposed to mid)?
#[inline]
pub fn is_tiny(c: usize) -> bool {
    c < FIRST_MID_CLASS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_sorted_multiples_of_16() {
        for c in 1..NUM_CLASSES {
            assert_eq!(STRIDE[c] % 16, 0, "class {c}");
            if c > 1 {
                assert!(STRIDE[c] > STRIDE[c - 1]);
            }
        }
        assert_eq!(STRIDE[FIRST_MID_CLASS - 1] as usize, TINY_MAX);
        assert_eq!(STRIDE[NUM_CLASSES - 1] as usize, MID_MAX);
    }

    #[test]
    fn class_of_is_the_smallest_fitting_class() {
        for size in 0..=MID_MAX {
            let c = class_of(size);
            assert!((1..NUM_CLASSES).contains(&c));
            assert!(STRIDE[c] as usize >= size, "size {size}");
            if c > 1 {
                assert!((STRIDE[c - 1] as usize) < size.max(1), "size {size} class {c}");
            }
        }
    }

    #[test]
    fn waste_is_bounded() {
        // Above 128 bytes, no request wastes more than 25% of its block.
        for size in 129..=MID_MAX {
            let s = STRIDE[class_of(size)] as usize;
            assert!(s * 4 <= size * 5 + 16, "size {size} stride {s}");
        }
    }

    #[test]
    fn block_start_test_is_exact_over_every_slab() {
        for c in 1..NUM_CLASSES {
            let stride = STRIDE[c] as usize;
            let span = SLAB_PAGES[c] as usize * SLAB_PAGE;
            for off in 0..span + SLAB_PAGE {
                let want = off % stride == 0 && off / stride < CAPACITY[c] as usize;
                assert_eq!(is_block_start(c, off), want, "class {c} off {off}");
            }
        }
        for c in NUM_CLASSES..CLASS_SLOTS {
            assert!(!is_block_start(c, 0) && !is_block_start(c, 4096));
        }
    }

    #[test]
    fn carve_limit_test_is_exact_for_every_carve_point() {
        for c in 1..NUM_CLASSES {
            let stride = STRIDE[c] as usize;
            let span = SLAB_PAGES[c] as usize * SLAB_PAGE;
            let cap = CAPACITY[c] as usize;
            let e = divisibility_excess(c);
            assert!(e >= 1 && e <= stride as u64, "class {c}");
            assert!(carve_limit(c, cap) < DIVISIBILITY[c], "class {c}");
            for carved in [0, 1, cap / 2, cap.saturating_sub(1), cap] {
                let limit = carve_limit(c, carved);
                assert_eq!(carved_blocks(c, limit), carved);
                for off in 0..span + SLAB_PAGE {
                    let want = off % stride == 0 && off / stride < carved;
                    let got = (off as u64).wrapping_mul(DIVISIBILITY[c]) < limit;
                    assert_eq!(got, want, "class {c} carved {carved} off {off}");
                }
            }
        }
    }

    #[test]
    fn every_slab_fits_the_first_mapping_and_the_block_start_test() {
        for (c, &pages) in SLAB_PAGES.iter().enumerate().take(NUM_CLASSES).skip(1) {
            assert!(pages as usize * SLAB_PAGE <= MAX_SLAB_BYTES, "class {c}");
        }
        // The bound of the packed page-table entry this layout replaced.
        assert!(MAX_SLAB_BYTES / 16 <= u16::MAX as usize);
    }

    #[test]
    fn slabs_hold_several_blocks_with_little_waste() {
        for c in 1..NUM_CLASSES {
            let stride = STRIDE[c] as usize;
            let span = SLAB_PAGES[c] as usize * SLAB_PAGE;
            if stride >= ONE_BLOCK_SLAB_MIN {
                // The smallest page run that holds one block.
                assert!(span >= stride && span - stride < SLAB_PAGE, "class {c}");
                assert!(CAPACITY[c] >= 1, "class {c}");
                continue;
            }
            assert!(CAPACITY[c] >= 4, "class {c}");
            let waste = span - CAPACITY[c] as usize * stride;
            assert!(waste * 8 <= span, "class {c} wastes {waste} of {span}");
        }
    }

    #[test]
    fn aligned_classes_are_aligned() {
        let mut align = 1;
        while align <= 2 * SLAB_PAGE {
            for size in [0, 1, 15, 16, 100, 1000, 4096, 5000, 70_000, MID_MAX] {
                match class_for_aligned(size, align) {
                    Some(c) => {
                        assert_eq!(STRIDE[c] as usize % align, 0);
                        assert!(STRIDE[c] as usize >= size);
                    }
                    None => assert!(align > SLAB_PAGE || size.max(align) > MID_MAX),
                }
            }
            align *= 2;
        }
    }
}

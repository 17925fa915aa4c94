//! Statistics (HAKMEM_STATS=1): global counters bumped only on slow paths,
//! and only when the flag is set, so the fast paths never pay for them.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{config, diag};

pub struct Stats {
    pub segments_mapped: AtomicUsize,
    pub segments_capped: AtomicUsize,
    pub segments_unmapped: AtomicUsize,
    pub segments_abandoned: AtomicUsize,
    pub segments_adopted: AtomicUsize,
    pub segments_reclaimed: AtomicUsize,
    pub slabs_created: AtomicUsize,
    pub slabs_released: AtomicUsize,
    pub refills: AtomicUsize,
    pub flushes: AtomicUsize,
    pub remote_frees: AtomicUsize,
    pub purges: AtomicUsize,
    pub large_allocs: AtomicUsize,
    pub large_cache_hits: AtomicUsize,
    pub large_frees: AtomicUsize,
    pub threads_started: AtomicUsize,
    pub threads_ended: AtomicUsize,
    pub heaps_created: AtomicUsize,
    pub heaps_reaped: AtomicUsize,
    pub idle_heaps_collected: AtomicUsize,
    pub trims: AtomicUsize,
    pub map_failures: AtomicUsize,
    pub foreign_frees: AtomicUsize,
    pub misuse: AtomicUsize,
}

pub static STATS: Stats = Stats {
    segments_mapped: AtomicUsize::new(0),
    segments_capped: AtomicUsize::new(0),
    segments_unmapped: AtomicUsize::new(0),
    segments_abandoned: AtomicUsize::new(0),
    segments_adopted: AtomicUsize::new(0),
    segments_reclaimed: AtomicUsize::new(0),
    slabs_created: AtomicUsize::new(0),
    slabs_released: AtomicUsize::new(0),
    refills: AtomicUsize::new(0),
    flushes: AtomicUsize::new(0),
    remote_frees: AtomicUsize::new(0),
    purges: AtomicUsize::new(0),
    large_allocs: AtomicUsize::new(0),
    large_cache_hits: AtomicUsize::new(0),
    large_frees: AtomicUsize::new(0),
    threads_started: AtomicUsize::new(0),
    threads_ended: AtomicUsize::new(0),
    heaps_created: AtomicUsize::new(0),
    heaps_reaped: AtomicUsize::new(0),
    idle_heaps_collected: AtomicUsize::new(0),
    trims: AtomicUsize::new(0),
    map_failures: AtomicUsize::new(0),
    foreign_frees: AtomicUsize::new(0),
    misuse: AtomicUsize::new(0),
};

/// Bump a counter when statistics are on.
#[inline]
pub fn count(c: &AtomicUsize) {
    add(c, 1);
}

#[inline]
pub fn add(c: &AtomicUsize, n: usize) {
    if config::stats_enabled() {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Print every counter, one `hakmem:` line each.
pub fn print() {
    let s = &STATS;
    let rows: [(&str, &AtomicUsize); 24] = [
        ("threads started", &s.threads_started),
        ("threads ended", &s.threads_ended),
        ("heaps created", &s.heaps_created),
        ("heaps reaped (thread gone)", &s.heaps_reaped),
        ("idle heaps collected", &s.idle_heaps_collected),
        ("segments mapped", &s.segments_mapped),
        ("segments capped by a neighbour", &s.segments_capped),
        ("segments unmapped", &s.segments_unmapped),
        ("segments abandoned", &s.segments_abandoned),
        ("segments adopted", &s.segments_adopted),
        ("segments reclaimed", &s.segments_reclaimed),
        ("slabs created", &s.slabs_created),
        ("slabs released", &s.slabs_released),
        ("thread-cache refills", &s.refills),
        ("thread-cache flushes", &s.flushes),
        ("remote frees", &s.remote_frees),
        ("purges (madvise)", &s.purges),
        ("large allocations", &s.large_allocs),
        ("large cache hits", &s.large_cache_hits),
        ("large frees", &s.large_frees),
        ("foreign frees", &s.foreign_frees),
        ("malloc_trim calls", &s.trims),
        ("mmap failures", &s.map_failures),
        ("misuse reports", &s.misuse),
    ];
    diag::line(format_args!("statistics:"));
    for (name, c) in rows {
        diag::line(format_args!("  {:<24} {}", name, c.load(Ordering::Relaxed)));
    }
}

//! The statistics report (HAKMEM_STATS, `malloc_stats`) and the figures
//! behind glibc's introspection calls (`mallinfo2`, `malloc_info`).
//!
//! A [`Snapshot`] sums the counters of `stats` over every registered heap
//! and the folded counts of destroyed ones. Counts of calls exist only in
//! counting mode (HAKMEM_STATS on); bytes in use are known either way: in
//! counting mode from the calls, otherwise from the blocks the slow paths
//! took out of slabs minus those sitting in thread caches (which other
//! threads may be changing: a figure of a moment, as glibc's are).
//!
//! The report goes to HAKMEM_STATS_FILE (`%p` replaced by the process id),
//! else to a duplicate of stderr taken at load time, so that a program that
//! closes stderr in its own exit handler (coreutils does) still reports.
//! Everything is formatted into stack buffers: no allocation.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::config;
use crate::heap::{self, Visited};
use crate::os;
use crate::size_class::{NUM_CLASSES, STRIDE};
use crate::stats::{clamp, HeapCounters, FOLDED, LARGE, LIVE, MISUSE, STATS};

/// Per size class.
#[derive(Clone, Copy, Default)]
pub struct ClassFigures {
    pub allocs: u64,
    pub frees: u64,
    pub remote_frees: u64,
    pub slabs: u64,
    pub in_use_bytes: u64,
    pub peak_bytes: u64,
    /// Bytes of free blocks in thread caches.
    pub cached_bytes: u64,
}

/// Everything a report says, at one moment.
pub struct Snapshot {
    pub counting: bool,
    pub classes: [ClassFigures; NUM_CLASSES],
    pub small_in_use: u64,
    pub small_cached: u64,
    pub allocs: u64,
    pub frees: u64,
    pub requested: u64,
    pub in_use: u64,
    pub peak: u64,
    pub mapped: u64,
    /// The process's resident memory (read by reports only, not by
    /// `mallinfo2`, which some programs call often).
    pub resident: u64,
    pub returned: u64,
    pub live_heaps: u64,
}

fn load(a: &core::sync::atomic::AtomicUsize) -> u64 {
    a.load(Ordering::Relaxed) as u64
}

/// Sum the counters now.
pub fn snapshot() -> Snapshot {
    let counting = config::stats_enabled();
    let mut out = [0u64; NUM_CLASSES];
    let mut allocs = [0u64; NUM_CLASSES];
    let mut frees = [0u64; NUM_CLASSES];
    let mut cached = [0u64; NUM_CLASSES];
    let mut requested = 0u64;
    let mut add = |k: &HeapCounters| {
        requested = requested.wrapping_add(k.requested.get());
        for c in 0..NUM_CLASSES {
            out[c] = out[c].wrapping_add(k.out[c].get());
            allocs[c] = allocs[c].wrapping_add(k.allocs[c].get());
            frees[c] = frees[c].wrapping_add(k.frees[c].get());
        }
    };
    let mut live_heaps = 0;
    heap::visit(usize::MAX, |h| {
        // The folded counts are read under the registry lock (here, at the
        // first visit), so that a heap destroyed meanwhile is counted once:
        // it is folded and unregistered together.
        if live_heaps == 0 {
            add(&FOLDED);
        }
        live_heaps += 1;
        // SAFETY: a registered heap (the registry is locked, so it is not
        // destroyed meanwhile). Its counters and its bins' counts are
        // atomics written by their owner: a figure of the moment.
        unsafe {
            add(&(*h).counters);
            for (n, bin) in cached.iter_mut().zip(&(*h).cache.bins) {
                *n += bin.count() as u64;
            }
        }
        Visited::Keep
    });
    if live_heaps == 0 {
        // No heap: none can be destroyed between the two reads either.
        add(&FOLDED);
    }
    let mut s = Snapshot {
        counting,
        classes: [ClassFigures::default(); NUM_CLASSES],
        small_in_use: 0,
        small_cached: 0,
        allocs: load(&LARGE.allocs),
        frees: load(&LARGE.frees),
        requested,
        in_use: 0,
        peak: clamp(LIVE.total_peak.load(Ordering::Relaxed)),
        mapped: load(&os::MAPPED),
        resident: 0,
        returned: load(&os::RETURNED),
        live_heaps,
    };
    for c in 1..NUM_CLASSES {
        let stride = STRIDE[c] as u64;
        let in_use_blocks = if counting {
            clamp(allocs[c].wrapping_sub(frees[c]))
        } else {
            clamp(out[c].wrapping_sub(cached[c]))
        };
        let f = ClassFigures {
            allocs: allocs[c],
            frees: frees[c],
            remote_frees: load(&STATS.remote_frees[c]),
            slabs: load(&STATS.slabs_created[c]).saturating_sub(load(&STATS.slabs_released[c])),
            in_use_bytes: in_use_blocks * stride,
            peak_bytes: clamp(LIVE.class_peak[c].load(Ordering::Relaxed)),
            cached_bytes: cached[c] * stride,
        };
        s.allocs += f.allocs;
        s.frees += f.frees;
        s.small_in_use += f.in_use_bytes;
        s.small_cached += f.cached_bytes;
        s.classes[c] = f;
    }
    s.in_use = s.small_in_use + load(&LARGE.live_bytes);
    s
}

// ---------------------------------------------------------------------------
// Output.

/// Where a report is written.
enum Sink {
    Fd(i32),
    /// A stdio stream (`malloc_info`); valid for the writer's life.
    Stream(*mut libc::FILE),
}

/// A buffered writer of reports (formatting never allocates; a stream may
/// allocate its own buffer when written, outside any hakmem lock).
pub struct ReportWriter {
    sink: Sink,
    buf: [u8; 2048],
    len: usize,
    /// False once a write to the stream failed.
    ok: bool,
}

impl ReportWriter {
    pub fn to_fd(fd: i32) -> Self {
        ReportWriter { sink: Sink::Fd(fd), buf: [0; 2048], len: 0, ok: true }
    }

    /// # Safety
    /// `stream` is a valid `FILE*` open for writing, for the writer's life.
    pub unsafe fn to_stream(stream: *mut libc::FILE) -> Self {
        ReportWriter { sink: Sink::Stream(stream), buf: [0; 2048], len: 0, ok: true }
    }

    /// Write out what is buffered; false if anything could not be written
    /// to a stream (a descriptor's write errors are not reported).
    pub fn flush(&mut self) -> bool {
        let bytes = &self.buf[..self.len];
        match self.sink {
            Sink::Fd(fd) => os::write_fd(fd, bytes),
            // SAFETY: the constructor's contract.
            Sink::Stream(f) => self.ok &= unsafe { os::write_stream(f, bytes) },
        }
        self.len = 0;
        self.ok
    }
}

impl Write for ReportWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// stderr as it was at load time (fd, device, inode; fd -1: none kept).
static KEPT_FD: AtomicI32 = AtomicI32::new(-1);
static KEPT_DEV: AtomicU64 = AtomicU64::new(0);
static KEPT_INO: AtomicU64 = AtomicU64::new(0);

/// At load time: keep a duplicate of stderr for the report.
pub fn keep_stderr() {
    if KEPT_FD.load(Ordering::Relaxed) >= 0 {
        return;
    }
    if let Some(id) = os::keep_fd(2) {
        KEPT_DEV.store(id.dev, Ordering::Relaxed);
        KEPT_INO.store(id.ino, Ordering::Relaxed);
        KEPT_FD.store(id.fd, Ordering::Relaxed);
    }
}

/// Where the report goes: (fd, close it afterwards); None when stderr was
/// closed and its number reused for something else (the report is dropped
/// rather than written into the program's file).
fn destination() -> Option<(i32, bool)> {
    let mut path = [0u8; config::PATH_MAX + 1];
    if let Some(p) = config::stats_file(&mut path) {
        let mut expanded = [0u8; config::PATH_MAX + 24];
        match expand_pid(p, os::getpid(), &mut expanded).and_then(os::create_file) {
            Some(fd) => return Some((fd, true)),
            None => crate::diag::line(format_args!(
                "HAKMEM_STATS_FILE={}: cannot create the file; reporting to stderr",
                core::str::from_utf8(&p[..p.len() - 1]).unwrap_or("<not UTF-8>")
            )),
        }
    }
    let fd = KEPT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return Some((2, false)); // nothing kept: stderr as it is
    }
    let (dev, ino) = (KEPT_DEV.load(Ordering::Relaxed), KEPT_INO.load(Ordering::Relaxed));
    [fd, 2].into_iter().find(|&fd| os::fd_unchanged(os::FdIdentity { fd, dev, ino })).map(|fd| (fd, false))
}

/// `path` (NUL-terminated) with every `%p` replaced by `pid` (and `%%` by
/// `%`), NUL-terminated in `out`; None if it does not fit.
pub fn expand_pid<'a>(path: &[u8], pid: i32, out: &'a mut [u8]) -> Option<&'a [u8]> {
    let mut pid_buf = [0u8; 20];
    let pid_str = decimal(pid.max(0) as u64, &mut pid_buf);
    let mut n = 0;
    let mut i = 0;
    let body = path.strip_suffix(&[0]).unwrap_or(path);
    while i < body.len() {
        let piece: &[u8] = match (body[i], body.get(i + 1)) {
            (b'%', Some(b'p')) => {
                i += 2;
                pid_str
            }
            (b'%', Some(b'%')) => {
                i += 2;
                b"%"
            }
            _ => {
                i += 1;
                &body[i - 1..i]
            }
        };
        if n + piece.len() + 1 > out.len() {
            return None;
        }
        out[n..n + piece.len()].copy_from_slice(piece);
        n += piece.len();
    }
    out[n] = 0;
    Some(&out[..=n])
}

fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Print the report where it goes (text or JSON, per HAKMEM_STATS).
pub fn print() {
    let mut s = snapshot();
    s.resident = os::resident_bytes() as u64;
    let Some((fd, close)) = destination() else { return };
    let mut w = ReportWriter::to_fd(fd);
    let mut exe = [0u8; 256];
    let exe = os::exe_path(&mut exe).unwrap_or("?");
    let _ = if config::stats_json() { json(&mut w, &s, exe, true) } else { text(&mut w, &s, exe) };
    w.flush();
    if close {
        os::close(fd);
    }
}

/// In guest mode (another allocator serves the process): a report that
/// says so, for tools that check which allocator served a program.
pub fn print_guest() {
    let Some((fd, close)) = destination() else { return };
    let mut w = ReportWriter::to_fd(fd);
    let pid = os::getpid();
    let _ = if config::stats_json() {
        writeln!(
            w,
            "{{\"hakmem\":{{\"version\":\"{}\",\"pid\":{pid},\"mode\":\"guest\"}},\"totals\":{{\"allocs\":0}}}}",
            env!("CARGO_PKG_VERSION")
        )
    } else {
        writeln!(
            w,
            "hakmem: statistics of pid {pid}: none (guest mode: another allocator serves this process)"
        )
    };
    w.flush();
    if close {
        os::close(fd);
    }
}

/// A line of the report past the classes: its JSON object's name, its text
/// (each `{}` stands for the next value) and its fields' JSON keys.
struct Group {
    name: &'static str,
    text: &'static str,
    keys: &'static [&'static str],
    values: [u64; 9],
}

/// The large tier, threads, slow paths and misuse, for both formats.
fn groups(s: &Snapshot) -> [Group; 4] {
    let (l, t, m) = (&LARGE, &STATS, &MISUSE);
    [
        Group {
            name: "large",
            text: "large: {} allocations, {} frees, {} in use ({} bytes, peak {}); cache {} hits, {} misses; realloc {} grown in place, {} moved",
            keys: &["allocs", "frees", "in_use", "in_use_bytes", "peak_in_use_bytes", "cache_hits", "cache_misses", "grown_in_place", "moved"],
            values: [
                load(&l.allocs),
                load(&l.frees),
                load(&l.live_blocks),
                load(&l.live_bytes),
                load(&l.peak_bytes),
                load(&l.cache_hits),
                load(&l.cache_misses),
                load(&l.grown_in_place),
                load(&l.moved),
            ],
        },
        Group {
            name: "threads",
            text: "threads: {} heaps created, {} live, {} threads ended, {} heaps reaped after their thread died; segments {} abandoned, {} adopted",
            keys: &["heaps_created", "heaps_live", "threads_ended", "heaps_reaped", "segments_abandoned", "segments_adopted"],
            values: [
                load(&t.heaps_created),
                s.live_heaps,
                load(&t.threads_ended),
                load(&t.heaps_reaped),
                load(&t.segments_abandoned),
                load(&t.segments_adopted),
                0,
                0,
                0,
            ],
        },
        Group {
            name: "slow_paths",
            text: "slow paths: {} refills, {} flushes, {} purges, {} segments mapped, {} unmapped, {} malloc_trim calls, {} foreign frees, {} mmap failures",
            keys: &["refills", "flushes", "purges", "segments_mapped", "segments_unmapped", "trims", "foreign_frees", "map_failures"],
            values: [
                load(&t.refills),
                load(&t.flushes),
                load(&t.purges),
                load(&t.segments_mapped),
                load(&t.segments_unmapped),
                load(&t.trims),
                load(&t.foreign_frees),
                load(&t.map_failures),
                0,
            ],
        },
        Group {
            name: "misuse",
            text: "misuse: {} invalid pointers, {} double frees, {} uses after free, {} writes after free, {} size mismatches",
            keys: &["invalid_pointer", "double_free", "use_after_free", "write_after_free", "size_mismatch"],
            values: [
                load(&m.invalid_pointer),
                load(&m.double_free),
                load(&m.use_after_free),
                load(&m.write_after_free),
                load(&m.size_mismatch),
                0,
                0,
                0,
                0,
            ],
        },
    ]
}

fn text(w: &mut ReportWriter, s: &Snapshot, exe: &str) -> fmt::Result {
    let pid = os::getpid();
    writeln!(w, "hakmem: statistics of pid {pid} ({exe})")?;
    if s.counting {
        writeln!(
            w,
            "hakmem:   calls: {} allocations ({} bytes requested), {} frees",
            s.allocs, s.requested, s.frees
        )?;
        writeln!(w, "hakmem:   in use: {} bytes (peak {})", s.in_use, s.peak)?;
    } else {
        writeln!(w, "hakmem:   in use: {} bytes (calls are counted with HAKMEM_STATS=1)", s.in_use)?;
    }
    writeln!(
        w,
        "hakmem:   memory: {} bytes mapped, {} resident (whole process), {} returned to the OS so far",
        s.mapped, s.resident, s.returned
    )?;
    writeln!(
        w,
        "hakmem:   {:>5} {:>7} {:>10} {:>10} {:>9} {:>6} {:>12} {:>12}",
        "class", "size", "allocs", "frees", "remote", "slabs", "in use", "peak"
    )?;
    for (c, f) in s.classes.iter().enumerate() {
        if f.allocs == 0 && f.frees == 0 && f.slabs == 0 && f.in_use_bytes == 0 && f.remote_frees == 0 {
            continue;
        }
        writeln!(
            w,
            "hakmem:   {:>5} {:>7} {:>10} {:>10} {:>9} {:>6} {:>12} {:>12}",
            c, STRIDE[c], f.allocs, f.frees, f.remote_frees, f.slabs, f.in_use_bytes, f.peak_bytes
        )?;
    }
    for g in groups(s) {
        w.write_str("hakmem:   ")?;
        for (i, piece) in g.text.split("{}").enumerate() {
            if i > 0 {
                write!(w, "{}", g.values[i - 1])?;
            }
            w.write_str(piece)?;
        }
        w.write_char('\n')?;
    }
    Ok(())
}

/// A JSON string value (quotes, backslashes and control bytes escaped).
struct JsonStr<'a>(&'a str);

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for ch in self.0.chars() {
            match ch {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

fn json(w: &mut ReportWriter, s: &Snapshot, exe: &str, newline: bool) -> fmt::Result {
    write!(
        w,
        "{{\"hakmem\":{{\"version\":\"{}\",\"pid\":{},\"exe\":{},\"mode\":\"active\",\"counting\":{}}}",
        env!("CARGO_PKG_VERSION"),
        os::getpid(),
        JsonStr(exe),
        s.counting
    )?;
    write!(
        w,
        ",\"totals\":{{\"allocs\":{},\"frees\":{},\"requested_bytes\":{},\"in_use_bytes\":{},\"peak_in_use_bytes\":{},\"mapped_bytes\":{},\"resident_bytes\":{},\"returned_bytes\":{}}}",
        s.allocs, s.frees, s.requested, s.in_use, s.peak, s.mapped, s.resident, s.returned
    )?;
    w.write_str(",\"classes\":[")?;
    let mut first = true;
    for (c, f) in s.classes.iter().enumerate() {
        if f.allocs == 0 && f.frees == 0 && f.slabs == 0 && f.in_use_bytes == 0 && f.remote_frees == 0 {
            continue;
        }
        if !first {
            w.write_char(',')?;
        }
        first = false;
        write!(
            w,
            "{{\"class\":{},\"size\":{},\"allocs\":{},\"frees\":{},\"remote_frees\":{},\"slabs\":{},\"in_use_bytes\":{},\"peak_in_use_bytes\":{}}}",
            c, STRIDE[c], f.allocs, f.frees, f.remote_frees, f.slabs, f.in_use_bytes, f.peak_bytes
        )?;
    }
    w.write_char(']')?;
    for g in groups(s) {
        write!(w, ",\"{}\":{{", g.name)?;
        for (i, (k, v)) in g.keys.iter().zip(g.values).enumerate() {
            write!(w, "{}\"{k}\":{v}", if i > 0 { "," } else { "" })?;
        }
        w.write_char('}')?;
    }
    w.write_char('}')?;
    if newline {
        w.write_char('\n')?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// glibc's introspection calls.

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// hakmem's figures in glibc's fields: `arena` the bytes mapped for slabs
/// (everything mapped but live large blocks), `uordblks` the bytes of small
/// blocks in use, `fordblks` the rest of `arena`, `hblks`/`hblkhd` the live
/// large blocks and their bytes, `fsmblks` the bytes of free blocks in
/// thread caches, `smblks` the size classes with blocks in use, `ordblks`
/// the live thread heaps, `usmblks` the peak bytes in use (counting mode;
/// glibc leaves it 0), `keepcost` 0.
pub fn mallinfo2() -> MallInfo2 {
    let s = snapshot();
    let hblkhd = load(&LARGE.live_bytes) as usize;
    let arena = (s.mapped as usize).saturating_sub(hblkhd);
    MallInfo2 {
        arena,
        ordblks: s.live_heaps as usize,
        smblks: s.classes.iter().filter(|f| f.in_use_bytes > 0).count(),
        hblks: load(&LARGE.live_blocks) as usize,
        hblkhd,
        usmblks: s.peak as usize,
        fsmblks: s.small_cached as usize,
        uordblks: s.small_in_use as usize,
        fordblks: arena.saturating_sub(s.small_in_use as usize),
        keepcost: 0,
    }
}

/// `malloc_info(0, stream)`'s XML, in glibc's shape with hakmem's figures:
/// one `<heap>` for all of hakmem, a `<size>` per class with blocks in use
/// (from/to: the request sizes the class serves; total/count: bytes and
/// blocks in use), totals and the system memory.
pub fn malloc_info_xml(w: &mut impl Write) -> fmt::Result {
    let s = snapshot();
    let l = &LARGE;
    w.write_str("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n")?;
    let mut blocks = 0u64;
    for c in 1..NUM_CLASSES {
        let f = &s.classes[c];
        if f.in_use_bytes == 0 {
            continue;
        }
        let from = if c == 1 { 0 } else { STRIDE[c - 1] + 1 };
        let count = f.in_use_bytes / STRIDE[c] as u64;
        blocks += count;
        writeln!(
            w,
            "  <size from=\"{from}\" to=\"{}\" total=\"{}\" count=\"{count}\"/>",
            STRIDE[c], f.in_use_bytes
        )?;
    }
    w.write_str("</sizes>\n")?;
    writeln!(w, "<total type=\"fast\" count=\"0\" size=\"{}\"/>", s.small_cached)?;
    writeln!(w, "<total type=\"rest\" count=\"{blocks}\" size=\"{}\"/>", s.small_in_use)?;
    writeln!(w, "<system type=\"current\" size=\"{}\"/>", s.mapped)?;
    writeln!(w, "<system type=\"max\" size=\"{}\"/>", s.peak.max(s.in_use))?;
    writeln!(w, "<aspace type=\"total\" size=\"{}\"/>", s.mapped)?;
    w.write_str("<aspace type=\"mprotect\" size=\"0\"/>\n</heap>\n")?;
    writeln!(w, "<total type=\"fast\" count=\"0\" size=\"{}\"/>", s.small_cached)?;
    writeln!(w, "<total type=\"rest\" count=\"{blocks}\" size=\"{}\"/>", s.small_in_use)?;
    writeln!(
        w,
        "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>",
        load(&l.live_blocks),
        load(&l.live_bytes)
    )?;
    writeln!(w, "<system type=\"current\" size=\"{}\"/>", s.mapped)?;
    writeln!(w, "<system type=\"max\" size=\"{}\"/>", s.peak.max(s.in_use))?;
    writeln!(w, "<aspace type=\"total\" size=\"{}\"/>", s.mapped)?;
    w.write_str("<aspace type=\"mprotect\" size=\"0\"/>\n</malloc>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_is_expanded_in_the_stats_file_name() {
        let mut out = [0u8; 64];
        assert_eq!(expand_pid(b"/tmp/s.%p.json\0", 4242, &mut out), Some(&b"/tmp/s.4242.json\0"[..]));
        assert_eq!(expand_pid(b"a%%p%p\0", 7, &mut out), Some(&b"a%p7\0"[..]));
        assert_eq!(expand_pid(b"%q%\0", 7, &mut out), Some(&b"%q%\0"[..]));
        let mut small = [0u8; 8];
        assert_eq!(expand_pid(b"/tmp/%p%p\0", 123456, &mut small), None);
    }
}

//! Configuration: the one table of `HAKMEM_*` flags.
//!
//! Each flag is a row (name, default, range, unit, meaning). The table is read
//! once, with `getenv` (which does not allocate), into atomics that the rest
//! of the allocator reads. Flags tune numbers; they never switch code paths
//! off. A bad value gets one `hakmem:` line on stderr and the default.
//!
//! The first `malloc` may come before the C runtime has set up `environ`
//! (from ld.so or an early constructor); the table is then filled with
//! defaults and read for real as soon as the environment is ready, at the
//! latest in hakmem's load-time constructor.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Longest HAKMEM_STATS_FILE accepted, in bytes.
pub const PATH_MAX: usize = 512;

use crate::diag;
use crate::os;

pub struct Flag {
    /// Variable name, NUL-terminated for `getenv`.
    pub name: &'static str,
    pub default: usize,
    pub max: usize,
    /// Words accepted besides the numbers, each standing for a number.
    pub words: &'static [(&'static str, usize)],
    /// A file path, not a number (its value reads as 1 when set).
    pub path: bool,
    pub unit: &'static str,
    pub meaning: &'static str,
}

impl Flag {
    pub fn display_name(&self) -> &'static str {
        &self.name[..self.name.len() - 1]
    }
}

pub const TCACHE_TINY: usize = 0;
pub const TCACHE_MID: usize = 1;
pub const LARGE_CACHE_MB: usize = 2;
pub const PURGE_KB: usize = 3;
pub const PURGE_DELAY_MS: usize = 4;
pub const STATS: usize = 5;
pub const VERBOSE: usize = 6;
pub const ABORT_ON_ERROR: usize = 7;
pub const CHECK: usize = 8;
pub const STATS_FILE: usize = 9;
pub const CRASH_REPORT: usize = 10;
pub const THP_MB: usize = 11;

/// HAKMEM_STATS values.
pub const STATS_TEXT: usize = 1;
pub const STATS_JSON: usize = 2;

/// Every flag hakmem reads. docs/ENV.md documents the same rows.
pub static FLAGS: [Flag; 12] = [
    Flag {
        name: "HAKMEM_TCACHE_TINY\0",
        default: 128,
        max: 65535,
        words: &[],
        path: false,
        unit: "blocks",
        meaning: "thread-cache capacity of each tiny class (blocks <= 1 KiB)",
    },
    Flag {
        name: "HAKMEM_TCACHE_MID\0",
        default: 64,
        max: 65535,
        words: &[],
        path: false,
        unit: "blocks",
        meaning:
            "thread-cache capacity of each mid class (1 KiB < blocks <= 256 KiB), at most 256 KiB of blocks per class",
    },
    Flag {
        name: "HAKMEM_LARGE_CACHE_MB\0",
        default: 64,
        max: 65536,
        words: &[],
        path: false,
        unit: "MiB",
        meaning: "freed large blocks (> 256 KiB) kept mapped for reuse",
    },
    Flag {
        name: "HAKMEM_PURGE_KB\0",
        default: 32768,
        max: 1 << 20,
        words: &[],
        path: false,
        unit: "KiB",
        meaning: "free slab memory a thread keeps at most; past it, memory goes back to the OS at once",
    },
    Flag {
        name: "HAKMEM_PURGE_DELAY_MS\0",
        default: 100,
        max: 60_000,
        words: &[],
        path: false,
        unit: "ms",
        meaning: "free slab memory unused for at least this long goes back to the OS",
    },
    Flag {
        name: "HAKMEM_STATS\0",
        default: 0,
        max: 1,
        words: &[("json", STATS_JSON)],
        path: false,
        unit: "0|1|json",
        meaning: "count every call and print a statistics report at exit (1: text, json: one JSON object)",
    },
    Flag {
        name: "HAKMEM_VERBOSE\0",
        default: 0,
        max: 1,
        words: &[],
        path: false,
        unit: "0|1",
        meaning: "print this table to stderr at start",
    },
    Flag {
        name: "HAKMEM_ABORT_ON_ERROR\0",
        default: 0,
        max: 1,
        words: &[],
        path: false,
        unit: "0|1",
        meaning: "abort() after reporting an invalid or double free",
    },
    Flag {
        name: "HAKMEM_CHECK\0",
        default: 0,
        max: 1,
        words: &[],
        path: false,
        unit: "0|1",
        meaning: "thorough checks for debugging: no thread cache, every free and free list verified, freed blocks filled and verified on reuse",
    },
    Flag {
        name: "HAKMEM_STATS_FILE\0",
        default: 0,
        max: 1,
        words: &[],
        path: true,
        unit: "path",
        meaning: "write the statistics report to this file instead of stderr (%p: the process id)",
    },
    Flag {
        name: "HAKMEM_CRASH_REPORT\0",
        default: 0,
        max: 1,
        words: &[],
        path: false,
        unit: "0|1",
        meaning: "on SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, print what hakmem knows of the fault address, then let the signal go on",
    },
    Flag {
        name: "HAKMEM_THP_MB\0",
        default: 32,
        max: 1 << 20,
        words: &[],
        path: false,
        unit: "MiB",
        meaning: "large blocks of at least this size ask for transparent huge pages (MADV_HUGEPAGE), blocks from 4 MiB once freed ones were seen mostly touched; 0: never",
    },
];

/// The flags' values, the defaults until the environment is read.
static VALUES: [AtomicUsize; FLAGS.len()] = {
    let mut v = [const { AtomicUsize::new(0) }; FLAGS.len()];
    let mut i = 0;
    while i < FLAGS.len() {
        v[i] = AtomicUsize::new(FLAGS[i].default);
        i += 1;
    }
    v
};

/// The HAKMEM_STATS_FILE value, NUL-terminated (written once, by the reader
/// of the table).
static PATH: [AtomicU8; PATH_MAX + 1] = [const { AtomicU8::new(0) }; PATH_MAX + 1];

const UNREAD: u8 = 0;
const READING: u8 = 1;
const PROVISIONAL: u8 = 2;
const FINAL: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNREAD);

/// Why a flag value was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BadValue {
    NotANumber,
    OutOfRange,
}

/// Parse a flag value: decimal digits only, within `0..=max`.
pub fn parse(value: &[u8], max: usize) -> Result<usize, BadValue> {
    if value.is_empty() || value.len() > 20 {
        return Err(if value.iter().all(u8::is_ascii_digit) && !value.is_empty() {
            BadValue::OutOfRange
        } else {
            BadValue::NotANumber
        });
    }
    let mut n: usize = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(BadValue::NotANumber);
        }
        n = match n.checked_mul(10).and_then(|n| n.checked_add((b - b'0') as usize)) {
            Some(n) => n,
            None => return Err(BadValue::OutOfRange),
        };
    }
    if n > max {
        return Err(BadValue::OutOfRange);
    }
    Ok(n)
}

/// Read the table if it has not been read for real yet. Cheap when it has.
#[inline]
pub fn ensure_read() {
    if STATE.load(Ordering::Acquire) != FINAL {
        read_slow();
    }
}

/// Never waits for another reader: a thread that finds the table being
/// read goes on with the values there (defaults or already read; every value
/// keeps the allocator correct). Waiting could hang a signal handler that
/// interrupted the reader, or a forked child whose reader was left behind.
#[cold]
fn read_slow() {
    loop {
        let s = STATE.load(Ordering::Acquire);
        match s {
            FINAL | READING => return,
            PROVISIONAL if !os::environment_ready() => return,
            _ => {
                if STATE.compare_exchange(s, READING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                    continue;
                }
                if !os::environment_ready() {
                    // Defaults are already in VALUES; read again later.
                    STATE.store(PROVISIONAL, Ordering::Release);
                    return;
                }
                for (i, flag) in FLAGS.iter().enumerate() {
                    VALUES[i].store(read_flag(flag), Ordering::Relaxed);
                }
                STATE.store(FINAL, Ordering::Release);
                if get(VERBOSE) != 0 {
                    print_table();
                }
                return;
            }
        }
    }
}

fn read_flag(flag: &Flag) -> usize {
    let Some(raw) = os::getenv(flag.name.as_bytes()) else {
        return flag.default;
    };
    if flag.path {
        return keep_path(flag, raw);
    }
    if let Some(&(_, v)) = flag.words.iter().find(|(w, _)| w.as_bytes() == raw) {
        return v;
    }
    match parse(raw, flag.max) {
        Ok(v) => v,
        Err(why) => {
            let value = core::str::from_utf8(raw).unwrap_or("<not UTF-8>");
            let reason = match why {
                BadValue::NotANumber => "not a decimal number",
                BadValue::OutOfRange => "out of range",
            };
            if flag.words.is_empty() {
                diag::line(format_args!(
                    "{}={}: {} (expected 0..={} {}); using default {}",
                    flag.display_name(),
                    value,
                    reason,
                    flag.max,
                    flag.unit,
                    flag.default
                ));
            } else {
                diag::line(format_args!(
                    "{}={}: not one of {}; using default {}",
                    flag.display_name(),
                    value,
                    flag.unit,
                    flag.default
                ));
            }
            flag.default
        }
    }
}

/// Keep a path flag's value; 1 if kept, 0 if refused (empty, too long, or
/// a set-user-ID process, where whoever set the environment must not get
/// files created with the process's rights).
fn keep_path(flag: &Flag, raw: &[u8]) -> usize {
    if os::secure_mode() {
        diag::line(format_args!("{}: ignored in a set-user-ID or set-group-ID process", flag.display_name()));
        return 0;
    }
    if raw.is_empty() || raw.len() > PATH_MAX {
        diag::line(format_args!(
            "{}: {} (expected a path of 1..={} bytes); ignored",
            flag.display_name(),
            if raw.is_empty() { "empty" } else { "too long" },
            PATH_MAX
        ));
        return 0;
    }
    for (i, &b) in raw.iter().enumerate() {
        PATH[i].store(b, Ordering::Relaxed);
    }
    PATH[raw.len()].store(0, Ordering::Relaxed);
    1
}

/// HAKMEM_STATS_FILE, NUL-terminated, into `buf`; None when unset.
pub fn stats_file(buf: &mut [u8; PATH_MAX + 1]) -> Option<&[u8]> {
    if get(STATS_FILE) == 0 {
        return None;
    }
    let mut n = 0;
    while n < PATH_MAX {
        let b = PATH[n].load(Ordering::Relaxed);
        if b == 0 {
            break;
        }
        buf[n] = b;
        n += 1;
    }
    buf[n] = 0;
    Some(&buf[..=n])
}

/// Print the table as read (HAKMEM_VERBOSE=1).
pub fn print_table() {
    diag::line(format_args!("configuration ({} flags):", FLAGS.len()));
    for (i, flag) in FLAGS.iter().enumerate() {
        if flag.path {
            let mut buf = [0u8; PATH_MAX + 1];
            let value = stats_file(&mut buf).map(|p| &p[..p.len() - 1]).unwrap_or(b"");
            diag::line(format_args!(
                "  {}={} (default unset): {}",
                flag.display_name(),
                core::str::from_utf8(value).unwrap_or("<not UTF-8>"),
                flag.meaning
            ));
            continue;
        }
        let word = flag.words.iter().find(|&&(_, v)| v == get(i)).map(|&(w, _)| w);
        let mut num = [0u8; 20];
        let value = match word {
            Some(w) => w,
            None => decimal(get(i), &mut num),
        };
        diag::line(format_args!(
            "  {}={} {} (default {}): {}",
            flag.display_name(),
            value,
            flag.unit,
            flag.default,
            flag.meaning
        ));
    }
}

#[inline]
pub fn get(flag: usize) -> usize {
    VALUES[flag].load(Ordering::Relaxed)
}

/// Override a flag (tests, and `mallopt`).
pub fn set(flag: usize, value: usize) {
    VALUES[flag].store(value, Ordering::Relaxed);
}

/// Override a flag (tests). The environment is read first, so that a later
/// first read cannot undo the override.
#[cfg(test)]
pub fn set_for_test(flag: usize, value: usize) {
    ensure_read();
    set(flag, value);
}

/// In a forked child: a read that another thread of the parent had begun
/// will never finish there; start it again.
pub fn after_fork_in_child() {
    let _ = STATE.compare_exchange(READING, UNREAD, Ordering::Relaxed, Ordering::Relaxed);
}

/// HAKMEM_CHECK=1: thorough checking (debugging).
#[inline]
pub fn check_mode() -> bool {
    get(CHECK) != 0
}

/// HAKMEM_PURGE_KB in bytes: the most free slab memory a heap, and the
/// segment cache, keep committed.
pub fn purge_limit() -> usize {
    get(PURGE_KB).saturating_mul(1024)
}

/// HAKMEM_STATS on: counting mode, report at exit.
#[inline]
pub fn stats_enabled() -> bool {
    get(STATS) != 0
}

/// HAKMEM_STATS=json.
pub fn stats_json() -> bool {
    get(STATS) == STATS_JSON
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).unwrap_or("?")
}

pub fn abort_on_error() -> bool {
    ensure_read();
    get(ABORT_ON_ERROR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/ENV.md documents exactly the flags of the table, each in one
    /// row with its default and range.
    #[test]
    fn env_md_matches_the_flag_table() {
        let doc = include_str!("../../../docs/ENV.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `HAKMEM_")).collect();
        assert_eq!(
            rows.len(),
            FLAGS.len(),
            "docs/ENV.md has {} flag rows, the table {}",
            rows.len(),
            FLAGS.len()
        );
        for f in &FLAGS {
            let name = f.name.trim_end_matches('\0');
            let row = rows
                .iter()
                .find(|r| r.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("{name} is read by the code but not documented in docs/ENV.md"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let default = if f.path { "unset".to_string() } else { f.default.to_string() };
            assert_eq!(cells[2], default, "{name}: default in docs/ENV.md");
            let mut range = if f.path {
                "a path".to_string()
            } else if f.max == 1 {
                "0, 1".to_string()
            } else {
                format!("0..={}", f.max)
            };
            for (w, _) in f.words {
                range += &format!(", {w}");
            }
            assert_eq!(cells[3], range, "{name}: range in docs/ENV.md");
        }
    }

    #[test]
    fn parse_accepts_decimal_in_range() {
        assert_eq!(parse(b"0", 10), Ok(0));
        assert_eq!(parse(b"10", 10), Ok(10));
        assert_eq!(parse(b"007", 10), Ok(7));
    }

    #[test]
    fn parse_refuses_garbage_and_out_of_range() {
        assert_eq!(parse(b"", 10), Err(BadValue::NotANumber));
        assert_eq!(parse(b"abc", 10), Err(BadValue::NotANumber));
        assert_eq!(parse(b"-1", 10), Err(BadValue::NotANumber));
        assert_eq!(parse(b"1k", 10), Err(BadValue::NotANumber));
        assert_eq!(parse(b" 1", 10), Err(BadValue::NotANumber));
        assert_eq!(parse(b"11", 10), Err(BadValue::OutOfRange));
        assert_eq!(parse(b"99999999999999999999999", 10), Err(BadValue::OutOfRange));
    }

    #[test]
    fn a_read_left_unfinished_by_fork_starts_again_in_the_child() {
        // A reader that never finishes (its thread did not survive fork):
        // other threads do not wait for it, and the child reads again.
        let before = STATE.swap(READING, Ordering::Relaxed);
        ensure_read();
        assert_eq!(STATE.load(Ordering::Relaxed), READING, "no one waits for a reader");
        after_fork_in_child();
        assert_eq!(STATE.load(Ordering::Relaxed), UNREAD);
        // (Not read again here: other tests hold flags set for them.)
        STATE.store(before, Ordering::Relaxed);
    }

    #[test]
    fn table_and_defaults_agree() {
        for f in FLAGS.iter() {
            assert!(f.name.starts_with("HAKMEM_") && f.name.ends_with('\0'));
            assert!(f.default <= f.max);
            assert!(f.words.iter().all(|&(_, v)| v > f.max), "{}: a word shadows a number", f.display_name());
            // (Not the live values: tests running beside this one override
            // some, and `VALUES` is built from the defaults.)
        }
    }
}

//! `hakmem check`: read the statistics files the command's processes wrote
//! (`HAKMEM_STATS=json`, `HAKMEM_STATS_FILE=DIR/hakmem.%p.json`) and say
//! whether hakmem served it.
//!
//! The file is one JSON object; the fields read here are `"pid"`, `"mode"`
//! (`"active"`: hakmem is the process's malloc; `"guest"`: it was loaded
//! behind another allocator and forwarded every call), `"exe"` (optional) and
//! `"totals"` with `"allocs"`, `"in_use_bytes"` and `"peak_in_use_bytes"`.
//! Each is looked for at the top level, then in a `"hakmem"` header object
//! (`{"hakmem":{"pid":..,"mode":..},"totals":{..}}`). Everything else in the
//! file is ignored.

use std::fmt::Write as _;

use crate::json::{self, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Active,
    Guest,
    Unknown(String),
}

/// What one process's statistics file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStats {
    pub pid: Option<u64>,
    pub mode: Mode,
    pub exe: Option<String>,
    pub allocs: Option<u64>,
    pub in_use: Option<u64>,
    pub peak: Option<u64>,
}

impl ProcStats {
    /// hakmem was this process's malloc and served at least one allocation.
    pub fn served(&self) -> bool {
        self.mode == Mode::Active && self.allocs.is_some_and(|a| a > 0)
    }
}

/// Parse the contents of one statistics file.
pub fn read_stats(text: &str) -> Result<ProcStats, String> {
    let v = json::parse(text)?;
    if !matches!(v, Value::Object(_)) {
        return Err("not a JSON object".into());
    }
    // Each field at the top level, or in a "hakmem" header object.
    let header = v.get("hakmem");
    let field = |k: &str| v.get(k).or_else(|| header.and_then(|h| h.get(k)));
    let mode = match field("mode").and_then(Value::as_str) {
        Some("active") => Mode::Active,
        Some("guest") => Mode::Guest,
        Some(other) => Mode::Unknown(other.to_string()),
        None => return Err("no \"mode\" field".into()),
    };
    let totals = field("totals");
    let total = |k: &str| totals.and_then(|t| t.get(k)).and_then(Value::as_u64);
    Ok(ProcStats {
        pid: field("pid").and_then(Value::as_u64),
        mode,
        exe: field("exe").and_then(Value::as_str).map(str::to_string),
        allocs: total("allocs"),
        in_use: total("in_use_bytes"),
        peak: total("peak_in_use_bytes"),
    })
}

/// One file found in the statistics directory.
#[derive(Debug, Clone)]
pub struct StatsFile {
    pub name: String,
    pub stats: Result<ProcStats, String>,
}

impl StatsFile {
    /// The pid from the file, else from its name `hakmem.PID.json`.
    fn pid(&self) -> Option<u64> {
        let from_name = || self.name.strip_prefix("hakmem.")?.strip_suffix(".json")?.parse().ok();
        self.stats.as_ref().ok().and_then(|s| s.pid).or_else(from_name)
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Outcome::Exited(code) => write!(f, "exit status {code}"),
            Outcome::Signaled(sig) => match signal_name(sig) {
                Some(name) => write!(f, "killed by {name}, signal {sig}"),
                None => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes for people: "512 B", "4.0 KiB", "12.3 MiB", "1.5 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A word as a shell would need it written.
pub fn shell_quote(word: &str) -> String {
    let plain =
        !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%^".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line for messages, shortened past `max` characters.
pub fn display_command(args: &[String], max: usize) -> String {
    let full = args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    if full.chars().count() <= max {
        full
    } else {
        let cut: String = full.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

/// The verdict: the text to print (stderr) and check's exit status.
#[derive(Debug)]
pub struct Summary {
    pub text: String,
    pub exit: i32,
}

/// Most processes listed by `check`.
const MAX_LINES: usize = 20;
/// Longest program path shown (longer ones lose their start).
const MAX_EXE: usize = 40;

/// `s`, or "..." and its last `max - 3` characters when longer than `max`.
fn shorten_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        format!("...{}", s.chars().skip(n - (max - 3)).collect::<String>())
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Judge the files of a run. `lib_hint` is added when no file at all was
/// written (e.g. that the library looks too old to write them).
pub fn summarize(cmd: &str, outcome: Outcome, files: &[StatsFile], lib_hint: Option<&str>) -> Summary {
    let mut files: Vec<&StatsFile> = files.iter().collect();
    files.sort_by_key(|f| (f.pid().unwrap_or(u64::MAX), f.name.clone()));
    let parsed: Vec<&ProcStats> = files.iter().filter_map(|f| f.stats.as_ref().ok()).collect();
    let served = parsed.iter().filter(|s| s.served()).count();
    let active = parsed.iter().filter(|s| s.mode == Mode::Active).count();
    let guests = parsed.iter().filter(|s| s.mode == Mode::Guest).count();

    let mut text = String::new();
    let exit = if served > 0 {
        let _ = write!(
            text,
            "hakmem check: hakmem served {} of `{cmd}` ({outcome})",
            plural(served, "process", "processes")
        );
        0
    } else if files.is_empty() {
        match outcome {
            Outcome::Signaled(_) => {
                let _ = write!(
                    text,
                    "hakmem check: hakmem was not loaded, or no process exited normally: `{cmd}` was {outcome}, \
                     and statistics are written at a normal exit only"
                );
            }
            Outcome::Exited(_) => {
                let _ = write!(
                    text,
                    "hakmem check: hakmem was not loaded: no process of `{cmd}` wrote statistics ({outcome}); \
                     is it statically linked or setuid, does it clear LD_PRELOAD, \
                     or did it end without exiting normally (_exit, a signal)?"
                );
            }
        }
        if let Some(hint) = lib_hint {
            let _ = write!(text, "\nhakmem check: note: {hint}");
        }
        1
    } else if active == 0 && guests > 0 {
        let _ = write!(
            text,
            "hakmem check: hakmem was loaded but another allocator serves malloc \
             (is something before it in LD_PRELOAD?): `{cmd}` ({outcome})"
        );
        1
    } else if active > 0 {
        let _ = write!(
            text,
            "hakmem check: hakmem was the malloc of {} of `{cmd}` but served no allocation ({outcome})",
            plural(active, "process", "processes")
        );
        1
    } else {
        let _ = write!(
            text,
            "hakmem check: could not tell whether hakmem served `{cmd}` ({outcome}): no usable statistics file"
        );
        1
    };

    // One line per file, columns aligned; past MAX_LINES, the files with the
    // most allocations (problems first), the rest counted.
    let mut shown = files.clone();
    if shown.len() > MAX_LINES {
        shown.sort_by_key(|f| {
            std::cmp::Reverse(f.stats.as_ref().map_or(u64::MAX, |s| match s.mode {
                Mode::Active => s.allocs.unwrap_or(0),
                _ => u64::MAX,
            }))
        });
        shown.truncate(MAX_LINES);
        shown.sort_by_key(|f| (f.pid().unwrap_or(u64::MAX), f.name.clone()));
    }
    let exes: Vec<Option<String>> = shown
        .iter()
        .map(|f| f.stats.as_ref().ok().and_then(|s| s.exe.as_deref()).map(|e| shorten_left(e, MAX_EXE)))
        .collect();
    let pid_w = shown.iter().map(|f| f.pid().map_or(1, |p| p.to_string().len())).max().unwrap_or(1);
    let exe_w = exes.iter().flatten().map(|e| e.chars().count()).max();
    for (f, exe) in shown.iter().zip(&exes) {
        let pid = f.pid().map_or("?".to_string(), |p| p.to_string());
        let _ = write!(text, "\n  pid {pid:<pid_w$}");
        let s = match &f.stats {
            Ok(s) => s,
            Err(e) => {
                let _ = write!(text, "  unreadable statistics file {}: {e}", f.name);
                continue;
            }
        };
        if let Some(w) = exe_w {
            let exe = exe.as_deref().unwrap_or("?");
            let _ = write!(text, "  {exe:<w$}");
        }
        match &s.mode {
            Mode::Active => {
                let num = |v: Option<u64>| v.map_or("?".to_string(), thousands);
                let bytes = |v: Option<u64>| v.map_or("?".to_string(), human_bytes);
                let _ = write!(
                    text,
                    "  allocs {:>11}   peak {:>10}   in use at exit {}",
                    num(s.allocs),
                    bytes(s.peak),
                    bytes(s.in_use)
                );
            }
            Mode::Guest => {
                let _ = write!(text, "  guest: loaded, but another allocator served malloc");
            }
            Mode::Unknown(m) => {
                let _ = write!(text, "  mode {m:?} (not understood)");
            }
        }
    }
    if files.len() > shown.len() {
        let _ = write!(
            text,
            "\n  ... and {} with fewer allocations",
            plural(files.len() - shown.len(), "more process", "more processes")
        );
    }
    Summary { text, exit }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: &str = r#"{"version":1,"pid":4242,"mode":"active","exe":"/usr/bin/python3.11",
        "totals":{"requested_bytes":999,"allocs":104223,"frees":100000,"in_use_bytes":1258291,
                  "peak_in_use_bytes":12897484,"mapped_bytes":33554432},
        "classes":[{"size":16,"allocs":10,"frees":9}],"large":{"cache_hits":0}}"#;
    const GUEST: &str =
        r#"{"pid":4243,"mode":"guest","totals":{"allocs":0,"in_use_bytes":0,"peak_in_use_bytes":0}}"#;
    const IDLE: &str =
        r#"{"pid":7,"mode":"active","totals":{"allocs":0,"in_use_bytes":0,"peak_in_use_bytes":0}}"#;

    fn file(name: &str, text: &str) -> StatsFile {
        StatsFile { name: name.to_string(), stats: read_stats(text) }
    }

    #[test]
    fn reads_the_stats_contract() {
        let s = read_stats(ACTIVE).unwrap();
        assert_eq!(
            s,
            ProcStats {
                pid: Some(4242),
                mode: Mode::Active,
                exe: Some("/usr/bin/python3.11".into()),
                allocs: Some(104_223),
                in_use: Some(1_258_291),
                peak: Some(12_897_484),
            }
        );
        assert!(s.served());
        let g = read_stats(GUEST).unwrap();
        assert_eq!(g.mode, Mode::Guest);
        assert!(!g.served());
        assert!(!read_stats(IDLE).unwrap().served());
        assert!(read_stats("[1]").unwrap_err().contains("object"));
        assert!(read_stats(r#"{"pid":1}"#).unwrap_err().contains("mode"));
        assert!(read_stats(r#"{"pid":1,"mode":"active","tot"#).is_err());
        // The header fields may sit in a "hakmem" object.
        let h = read_stats(
            r#"{"hakmem":{"version":"0.1.0","pid":13124,"exe":"/usr/bin/python3.11","mode":"active","counting":true},
                "totals":{"allocs":1198,"frees":1175,"in_use_bytes":399920,"peak_in_use_bytes":946320},
                "classes":[{"class":1,"size":16,"allocs":69}]}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            ProcStats {
                pid: Some(13124),
                mode: Mode::Active,
                exe: Some("/usr/bin/python3.11".into()),
                allocs: Some(1198),
                in_use: Some(399_920),
                peak: Some(946_320),
            }
        );
        // Missing totals: readable, but not proof of service.
        let bare = read_stats(r#"{"mode":"active"}"#).unwrap();
        assert_eq!((bare.pid, bare.allocs), (None, None));
        assert!(!bare.served());
    }

    #[test]
    fn served_summary() {
        let files = [
            file("hakmem.4243.json", GUEST),
            file("hakmem.4242.json", ACTIVE),
            file("hakmem.99.json", "{\"mode\":"),
        ];
        let s = summarize("sh -c 'python3 x.py'", Outcome::Exited(0), &files, None);
        assert_eq!(s.exit, 0);
        let lines: Vec<&str> = s.text.lines().collect();
        assert_eq!(
            lines[0],
            "hakmem check: hakmem served 1 process of `sh -c 'python3 x.py'` (exit status 0)"
        );
        // Sorted by pid; the unreadable file named, with its pid from the name.
        assert!(
            lines[1].starts_with("  pid 99  ")
                && lines[1].contains("unreadable statistics file hakmem.99.json"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("pid 4242") && lines[2].contains("/usr/bin/python3.11"), "{}", lines[2]);
        assert!(lines[2].contains("allocs     104,223"), "{}", lines[2]);
        assert!(
            lines[2].contains("peak   12.3 MiB") && lines[2].contains("in use at exit 1.2 MiB"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("pid 4243") && lines[3].contains("guest"), "{}", lines[3]);
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn not_loaded_summaries() {
        let s = summarize("prog", Outcome::Exited(3), &[], Some("old library"));
        assert_eq!(s.exit, 1);
        assert!(
            s.text.starts_with(
                "hakmem check: hakmem was not loaded: no process of `prog` wrote statistics (exit status 3)"
            ),
            "{}",
            s.text
        );
        assert!(s.text.contains("\nhakmem check: note: old library"));

        let s = summarize("prog", Outcome::Signaled(9), &[], None);
        assert_eq!(s.exit, 1);
        assert!(s.text.contains("was killed by SIGKILL, signal 9"), "{}", s.text);
        assert!(s.text.contains("normal exit"), "{}", s.text);
    }

    #[test]
    fn guest_and_idle_summaries() {
        let s = summarize("prog", Outcome::Exited(0), &[file("hakmem.4243.json", GUEST)], None);
        assert_eq!(s.exit, 1);
        assert!(
            s.text.starts_with("hakmem check: hakmem was loaded but another allocator serves malloc (is something before it in LD_PRELOAD?)"),
            "{}",
            s.text
        );
        let s = summarize("prog", Outcome::Exited(0), &[file("hakmem.7.json", IDLE)], None);
        assert_eq!(s.exit, 1);
        assert!(s.text.contains("served no allocation"), "{}", s.text);
        let s = summarize("prog", Outcome::Exited(0), &[file("hakmem.8.json", "garbage")], None);
        assert_eq!(s.exit, 1);
        assert!(s.text.contains("no usable statistics file"), "{}", s.text);
    }

    #[test]
    fn long_listings_are_cut() {
        let mut files = Vec::new();
        for pid in 1..=30u64 {
            let exe =
                if pid == 5 { "/a/very/long/path/that/goes/on/and/on/to/bin/python3.11" } else { "/bin/sh" };
            let text = format!(
                r#"{{"pid":{pid},"mode":"active","exe":"{exe}","totals":{{"allocs":{},"in_use_bytes":1,"peak_in_use_bytes":1}}}}"#,
                pid * 10
            );
            files.push(file(&format!("hakmem.{pid}.json"), &text));
        }
        files.push(file("hakmem.1000.json", GUEST.replace("4243", "1000").as_str()));
        let s = summarize("x", Outcome::Exited(0), &files, None);
        let lines: Vec<&str> = s.text.lines().collect();
        assert!(lines[0].contains("served 30 processes"), "{}", lines[0]);
        assert_eq!(lines.len(), 1 + MAX_LINES + 1, "{}", s.text);
        // The 19 busiest (pids 12..=30) and the guest, in pid order.
        assert!(lines[1].starts_with("  pid 12   "), "{}", lines[1]);
        assert!(lines[19].starts_with("  pid 30   "), "{}", lines[19]);
        assert!(lines[20].starts_with("  pid 1000 ") && lines[20].contains("guest"), "{}", lines[20]);
        assert_eq!(lines[21], "  ... and 11 more processes with fewer allocations");
        assert_eq!(
            shorten_left("/a/very/long/path/that/goes/on/and/on/to/bin/python3.11", 20),
            "...to/bin/python3.11"
        );
        assert_eq!(shorten_left("/bin/sh", 20), "/bin/sh");
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(104_223), "104,223");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(12_897_484), "12.3 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(shell_quote("abc-1.2/x"), "abc-1.2/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let long: Vec<String> = vec!["x".repeat(100)];
        assert_eq!(display_command(&long, 20), format!("{}...", "x".repeat(17)));
        assert_eq!(
            display_command(&["sh".into(), "-c".into(), "seq 3 | sort".into()], 60),
            "sh -c 'seq 3 | sort'"
        );
        assert_eq!(Outcome::Signaled(15).to_string(), "killed by SIGTERM, signal 15");
        assert_eq!(Outcome::Signaled(40).to_string(), "killed by signal 40");
    }
}

//! Command-line parsing and the help text.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

pub const HELP: &str = "\
hakmem — run programs with the hakmem allocator (libhakmem.so through LD_PRELOAD)

Usage:
  hakmem run [OPTIONS] [--] CMD [ARGS...]    run CMD with hakmem as its malloc
  hakmem check [OPTIONS] [--] CMD [ARGS...]  run CMD, then say whether hakmem served it
  hakmem env [OPTIONS]                       print the variables `run` would set, for eval
  hakmem help | --help | -h                  this text
  hakmem --version                           the version and the library that would be used

Options:
  --stats              statistics on stderr when each process exits (HAKMEM_STATS=1)
  --json               the same as one JSON object (HAKMEM_STATS=json)
  --verbose            the flag table on stderr at start (HAKMEM_VERBOSE=1)
  --flag NAME=VALUE    set HAKMEM_NAME=VALUE; NAME with or without the HAKMEM_ prefix,
                       any case (--flag tcache_tiny=64); hakmem checks the value itself.
                       Flags: docs/ENV.md, or `hakmem run --verbose -- true`
  --lib PATH           the libhakmem.so to preload
  check takes --verbose, --flag and --lib; it sets HAKMEM_STATS=json and
  HAKMEM_STATS_FILE itself.

The library is --lib PATH, else $HAKMEM_LIB, else libhakmem.so in this
executable's directory, else ../lib/libhakmem.so from there. It goes first in
LD_PRELOAD (hakmem must be the first allocator there); entries already in
LD_PRELOAD are kept after it, in their order.

CMD is found through PATH as execvp does. Refused before anything runs, because
LD_PRELOAD cannot work for them: statically linked programs (static-pie too),
set-user-ID / set-group-ID programs and ones with file capabilities that the
loader would run in secure-execution mode, 32-bit or foreign-architecture
programs, and #! scripts whose interpreter (or the program `#!/usr/bin/env`
runs) is one of these.

check gives the command a fresh temporary directory for its statistics files
(one per process that exits normally), prints one line per process to stderr
after the command ends, and removes the directory. The command's own output
passes through untouched.

Signals: the command runs in hakmem's process group, so ^C and ^\\ from the
terminal reach it directly; hakmem ignores SIGINT and SIGQUIT while it waits.
SIGTERM and SIGHUP sent to hakmem are passed on to the command.

Exit status:
  run      the command's status, or 128+N if a signal N killed it
  check    0: hakmem was the malloc of at least one process and served
           allocations; 1: it did not (the reason is printed)
  2        usage error
  125      hakmem itself failed (temporary directory, waiting for the command)
  126      CMD cannot be run or is refused (not executable, static, setuid,
           other architecture), or the library is not a usable shared object
  127      CMD, its interpreter or libhakmem.so not found
";

pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERNAL: i32 = 125;
pub const EXIT_CANNOT_RUN: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Run,
    Check,
    Env,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Opts {
    pub sub: Sub,
    pub lib: Option<PathBuf>,
    /// Variables to set, in order (a later one wins).
    pub env: Vec<(String, String)>,
    /// CMD ARGS... (empty for `env`).
    pub cmd: Vec<OsString>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Help,
    Version,
    Go(Opts),
}

/// `--flag NAME=VALUE` -> ("HAKMEM_NAME", "VALUE"). The prefix is optional
/// and matched in any case; the name is upper-cased and must be made of
/// letters, digits and '_'. The value is not checked (hakmem does that).
pub fn parse_flag(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("--flag {s}: expected NAME=VALUE, e.g. --flag TCACHE_TINY=64"))?;
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("HAKMEM_").unwrap_or(&upper);
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "--flag {s}: '{name}' is not a flag name (letters, digits and '_', e.g. TCACHE_TINY)"
        ));
    }
    Ok((format!("HAKMEM_{bare}"), value.to_string()))
}

/// Parse the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Parsed, String> {
    let Some(first) = args.first() else {
        return Err("no subcommand given (run, check or env)".into());
    };
    let sub = match first.to_str() {
        Some("help" | "--help" | "-h") => return Ok(Parsed::Help),
        Some("--version" | "-V" | "version") => return Ok(Parsed::Version),
        Some("run") => Sub::Run,
        Some("check") => Sub::Check,
        Some("env") => Sub::Env,
        _ => {
            return Err(format!("unknown subcommand '{}' (run, check, env or help)", first.to_string_lossy()))
        }
    };
    let mut opts = Opts { sub, lib: None, env: Vec::new(), cmd: Vec::new() };
    let mut i = 1;
    // The value of `--opt VALUE` or `--opt=VALUE`.
    let value_of = |i: &mut usize, opt: &str, inline: Option<&OsStr>| -> Result<OsString, String> {
        if let Some(v) = inline {
            return Ok(v.to_os_string());
        }
        *i += 1;
        args.get(*i).cloned().ok_or_else(|| format!("{opt} needs a value"))
    };
    while i < args.len() {
        let arg = &args[i];
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(arg.as_os_str());
        if bytes == b"--" {
            opts.cmd = args[i + 1..].to_vec();
            break;
        }
        if !bytes.starts_with(b"-") || bytes == b"-" {
            opts.cmd = args[i..].to_vec();
            break;
        }
        // Split "--opt=value".
        let (opt, inline) = match bytes.iter().position(|&b| b == b'=') {
            Some(eq) => (
                String::from_utf8_lossy(&bytes[..eq]).into_owned(),
                Some(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes[eq + 1..])),
            ),
            None => (String::from_utf8_lossy(bytes).into_owned(), None),
        };
        let no_value = |opts: &mut Opts, k: &str, v: &str| {
            if inline.is_some() {
                return Err(format!("{opt} takes no value"));
            }
            opts.env.push((k.to_string(), v.to_string()));
            Ok(())
        };
        match opt.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--stats" | "--json" if sub == Sub::Check => {
                return Err(format!("check collects the statistics itself; {opt} is for run"))
            }
            "--stats" => no_value(&mut opts, "HAKMEM_STATS", "1")?,
            "--json" => no_value(&mut opts, "HAKMEM_STATS", "json")?,
            "--verbose" => no_value(&mut opts, "HAKMEM_VERBOSE", "1")?,
            "--flag" => {
                let v = value_of(&mut i, &opt, inline)?;
                let v = v.to_str().ok_or_else(|| format!("--flag {}: not UTF-8", v.to_string_lossy()))?;
                let (k, v) = parse_flag(v)?;
                if sub == Sub::Check && (k == "HAKMEM_STATS" || k == "HAKMEM_STATS_FILE") {
                    return Err(format!("check sets {k} itself"));
                }
                opts.env.push((k, v));
            }
            "--lib" => opts.lib = Some(PathBuf::from(value_of(&mut i, &opt, inline)?)),
            _ => return Err(format!("unknown option '{}'", arg.to_string_lossy())),
        }
        i += 1;
    }
    match sub {
        Sub::Env if !opts.cmd.is_empty() => {
            Err("env takes no command (it prints the variables; use run to run one)".into())
        }
        Sub::Run | Sub::Check if opts.cmd.is_empty() => {
            Err("no command given: hakmem run [OPTIONS] -- CMD [ARGS...]".into())
        }
        _ => Ok(Parsed::Go(opts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn go(list: &[&str]) -> Opts {
        match parse(&args(list)) {
            Ok(Parsed::Go(o)) => o,
            other => panic!("{list:?} parsed as {other:?}"),
        }
    }

    fn err(list: &[&str]) -> String {
        match parse(&args(list)) {
            Err(e) => e,
            other => panic!("{list:?} accepted: {other:?}"),
        }
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn flag_names() {
        let f = |s| parse_flag(s).unwrap();
        assert_eq!(f("TCACHE_TINY=64"), ("HAKMEM_TCACHE_TINY".into(), "64".into()));
        assert_eq!(f("tcache_tiny=64"), ("HAKMEM_TCACHE_TINY".into(), "64".into()));
        assert_eq!(f("HAKMEM_PURGE_KB=0"), ("HAKMEM_PURGE_KB".into(), "0".into()));
        assert_eq!(f("hakmem_purge_kb=0"), ("HAKMEM_PURGE_KB".into(), "0".into()));
        assert_eq!(f("Hakmem_Stats=json"), ("HAKMEM_STATS".into(), "json".into()));
        // The value is passed as is, '=' and all; hakmem validates it.
        assert_eq!(f("X=a=b"), ("HAKMEM_X".into(), "a=b".into()));
        assert_eq!(f("TCACHE_TINY="), ("HAKMEM_TCACHE_TINY".into(), "".into()));
        assert_eq!(f("TCACHE_TINY=abc"), ("HAKMEM_TCACHE_TINY".into(), "abc".into()));
        for bad in ["TCACHE_TINY", "=1", "HAKMEM_=1", "hakmem_=1", "A B=1", "A-B=1", "é=1"] {
            assert!(parse_flag(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn run_options() {
        let o = go(&[
            "run",
            "--stats",
            "--verbose",
            "--flag",
            "tcache_tiny=7",
            "--flag=HAKMEM_PURGE_KB=0",
            "--lib",
            "/x/libhakmem.so",
            "--",
            "python3",
            "-c",
            "print(1)",
        ]);
        assert_eq!(o.sub, Sub::Run);
        assert_eq!(o.lib, Some(PathBuf::from("/x/libhakmem.so")));
        assert_eq!(
            o.env,
            kv(&[
                ("HAKMEM_STATS", "1"),
                ("HAKMEM_VERBOSE", "1"),
                ("HAKMEM_TCACHE_TINY", "7"),
                ("HAKMEM_PURGE_KB", "0")
            ])
        );
        assert_eq!(o.cmd, args(&["python3", "-c", "print(1)"]));
        // --json after --stats: the later setting wins when applied in order.
        let o = go(&["run", "--stats", "--json", "--lib=/l.so", "ls", "-l", "--", "x"]);
        assert_eq!(o.env, kv(&[("HAKMEM_STATS", "1"), ("HAKMEM_STATS", "json")]));
        assert_eq!(o.lib, Some(PathBuf::from("/l.so")));
        // Without "--", CMD starts at the first non-option; its options are its own.
        assert_eq!(o.cmd, args(&["ls", "-l", "--", "x"]));
        // After "--", even option-looking words are the command.
        assert_eq!(go(&["run", "--", "--stats"]).cmd, args(&["--stats"]));
        assert_eq!(go(&["run", "-"]).cmd, args(&["-"]));
    }

    #[test]
    fn check_and_env_options() {
        let o = go(&["check", "--lib", "/l.so", "--flag", "CHECK=1", "--", "true"]);
        assert_eq!(
            (o.sub, o.env.clone(), o.cmd.clone()),
            (Sub::Check, kv(&[("HAKMEM_CHECK", "1")]), args(&["true"]))
        );
        assert!(err(&["check", "--stats", "--", "true"]).contains("check collects"));
        assert!(err(&["check", "--flag", "stats_file=/x", "--", "true"]).contains("HAKMEM_STATS_FILE"));
        assert!(err(&["check", "--flag", "STATS=1", "true"]).contains("HAKMEM_STATS"));
        let o = go(&["env", "--flag", "TCACHE_MID=0"]);
        assert_eq!((o.sub, o.env, o.cmd.len()), (Sub::Env, kv(&[("HAKMEM_TCACHE_MID", "0")]), 0));
        assert!(err(&["env", "--", "true"]).contains("env takes no command"));
    }

    #[test]
    fn usage_errors_and_help() {
        assert!(err(&[]).contains("no subcommand"));
        assert!(err(&["frobnicate"]).contains("unknown subcommand 'frobnicate'"));
        assert!(err(&["run"]).contains("no command given"));
        assert!(err(&["run", "--"]).contains("no command given"));
        assert!(err(&["run", "--bogus", "true"]).contains("unknown option '--bogus'"));
        assert!(err(&["run", "--flag"]).contains("--flag needs a value"));
        assert!(err(&["run", "--lib"]).contains("--lib needs a value"));
        assert!(err(&["run", "--flag", "NOPE", "true"]).contains("NAME=VALUE"));
        assert!(err(&["run", "--stats=1", "true"]).contains("takes no value"));
        for h in [&["help"][..], &["--help"], &["-h"], &["run", "--help"], &["check", "-h", "x"]] {
            assert_eq!(parse(&args(h)), Ok(Parsed::Help), "{h:?}");
        }
        assert_eq!(parse(&args(&["--version"])), Ok(Parsed::Version));
    }
}

//! Vetting the command, then `run`, `check` and `env`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{Opts, Sub, EXIT_CANNOT_RUN, EXIT_INTERNAL, EXIT_NOT_FOUND};
use crate::elf::{self, ElfType, Kind, NotRunnable};
use crate::preload;
use crate::report::{self, Outcome, StatsFile};
use crate::sys;

/// Why a command is not run: one `hakmem:` line and an exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub message: String,
}

fn refuse(code: i32, message: String) -> Refusal {
    Refusal { code, message }
}

/// How deep `#!` interpreters are followed (Linux stops at 4 levels too).
const MAX_SCRIPT_DEPTH: usize = 4;

const NO_LOADER: &str = "there is no dynamic loader, so LD_PRELOAD has no effect and it keeps its own malloc";
const SECURE: &str = "the dynamic loader runs it in secure-execution mode and ignores LD_PRELOAD";

/// Would the kernel run `path` in secure-execution mode (AT_SECURE), where
/// ld.so ignores LD_PRELOAD? When the set-user-ID bit changes the effective
/// user, the set-group-ID bit (with group execute) the effective group, or
/// file capabilities are granted to a non-root user; never on a `nosuid`
/// file system, where the kernel ignores all three.
fn secure_exec_reason(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.mode();
    let suid = mode & 0o4000 != 0;
    let sgid = mode & 0o2010 == 0o2010;
    let (euid, egid) = sys::effective_ids();
    let uid_change = suid && meta.uid() != euid;
    let gid_change = sgid && meta.gid() != egid;
    // Root gains nothing from file capabilities, so they do not make it secure.
    let caps = !uid_change && !gid_change && sys::real_uid() != 0 && sys::has_file_capabilities(path);
    if !(uid_change || gid_change || caps) || sys::mounted_nosuid(path) {
        return None;
    }
    Some(if uid_change {
        format!("is set-user-ID (owner uid {}): {SECURE}", meta.uid())
    } else if gid_change {
        format!("is set-group-ID (group gid {}): {SECURE}", meta.gid())
    } else {
        format!("has file capabilities: {SECURE}")
    })
}

/// Check that hakmem can be preloaded into the program at `path` (`shown`
/// is how the user named the command, `subject` what is being examined:
/// "it", or "its interpreter X"). Unreadable or unknown files pass: exec
/// decides.
pub fn vet(
    path: &Path,
    shown: &str,
    subject: &str,
    lib_machine: u16,
    path_var: Option<&OsStr>,
    depth: usize,
) -> Result<(), Refusal> {
    let cannot =
        |why: String| refuse(EXIT_CANNOT_RUN, format!("cannot use hakmem for {shown}: {subject} {why}"));
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if let Some(why) = secure_exec_reason(path, &meta) {
        return Err(cannot(why));
    }
    let kind = match elf::classify(path) {
        Ok(k) => k,
        Err(_) => return Ok(()),
    };
    match kind {
        Kind::Elf32 { .. } => {
            Err(cannot(format!("is a 32-bit program: 64-bit {} cannot be loaded into it", preload::LIB_NAME)))
        }
        Kind::Elf64 { machine, .. } if machine != lib_machine => Err(cannot(format!(
            "is built for {}, {} for {}",
            elf::machine_name(machine),
            preload::LIB_NAME,
            elf::machine_name(lib_machine)
        ))),
        Kind::Elf64 { ty: ElfType::Static, .. } => Err(cannot(format!("is statically linked: {NO_LOADER}"))),
        Kind::Elf64 { ty: ElfType::StaticPie, .. } => {
            Err(cannot(format!("is statically linked (static-pie): {NO_LOADER}")))
        }
        Kind::Elf64 { .. } | Kind::Other => Ok(()),
        Kind::Script { .. } if depth >= MAX_SCRIPT_DEPTH => Ok(()),
        Kind::Script { interp, arg } => {
            let interp_path = PathBuf::from(OsStr::from_bytes(&interp));
            let interp_shown = interp_path.display().to_string();
            if !interp_path.exists() {
                return Err(refuse(
                    EXIT_NOT_FOUND,
                    format!("cannot run {shown}: its interpreter {interp_shown} was not found"),
                ));
            }
            let sub = format!("its interpreter {interp_shown}");
            vet(&interp_path, shown, &sub, lib_machine, path_var, depth + 1)?;
            let is_env = interp_path.file_name() == Some(OsStr::new("env"));
            if let Some(prog) = arg.filter(|_| is_env).and_then(|a| elf::env_program(&a)) {
                let prog = OsStr::from_bytes(&prog);
                let p = elf::resolve_command(prog, path_var).map_err(|_| {
                    refuse(
                        EXIT_NOT_FOUND,
                        format!(
                            "cannot run {shown}: its interpreter {} (run by {interp_shown}) was not found in PATH",
                            prog.to_string_lossy()
                        ),
                    )
                })?;
                let sub = format!("its interpreter {} ({})", prog.to_string_lossy(), p.display());
                vet(&p, shown, &sub, lib_machine, path_var, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Resolve CMD through PATH and vet it.
pub fn prepare(cmd: &OsStr, lib_machine: u16, path_var: Option<&OsStr>) -> Result<PathBuf, Refusal> {
    let shown = cmd.to_string_lossy();
    let path = elf::resolve_command(cmd, path_var).map_err(|e| match e {
        NotRunnable::NotFound if cmd.as_bytes().contains(&b'/') => {
            refuse(EXIT_NOT_FOUND, format!("{shown}: no such file"))
        }
        NotRunnable::NotFound => refuse(EXIT_NOT_FOUND, format!("{shown}: command not found")),
        NotRunnable::NotExecutable(p) => {
            refuse(EXIT_CANNOT_RUN, format!("{}: permission denied (not executable)", p.display()))
        }
        NotRunnable::Directory(p) => refuse(EXIT_CANNOT_RUN, format!("{}: is a directory", p.display())),
    })?;
    vet(&path, &shown, "it", lib_machine, path_var, 0)?;
    Ok(path)
}

/// Spawn, wait (SIGINT/SIGQUIT ignored, SIGTERM/SIGHUP passed on) and say how it ended.
fn spawn_and_wait(mut command: Command, shown: &str) -> Result<Outcome, Refusal> {
    let mut child = command.spawn().map_err(|e| {
        let code = match e.kind() {
            io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_RUN,
        };
        refuse(code, format!("{shown}: {e}"))
    })?;
    let signals = sys::WaitSignals::install(child.id());
    let status = child.wait();
    drop(signals);
    let status = status.map_err(|e| refuse(EXIT_INTERNAL, format!("waiting for {shown}: {e}")))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::Exited(EXIT_INTERNAL),
    })
}

fn exit_code(o: Outcome) -> i32 {
    match o {
        Outcome::Exited(c) => c,
        Outcome::Signaled(s) => 128 + s,
    }
}

/// A fresh private directory for check's statistics files.
fn make_temp_dir() -> io::Result<PathBuf> {
    let mut base = std::env::temp_dir();
    // The library expands %p in HAKMEM_STATS_FILE; keep other '%' out of it.
    if !base.is_absolute() || base.as_os_str().as_bytes().contains(&b'%') {
        base = PathBuf::from("/tmp");
    }
    let mut n = 0u32;
    loop {
        let dir = base.join(format!("hakmem-check.{}.{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Every `*.json` file of the directory, parsed.
fn read_stats_dir(dir: &Path) -> Vec<StatsFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".json").then(|| StatsFile {
                stats: std::fs::read_to_string(e.path())
                    .map_err(|err| err.to_string())
                    .and_then(|t| report::read_stats(&t)),
                name,
            })
        })
        .collect()
}

/// Does the library's file contain `needle` (e.g. the name of a variable it reads)?
fn library_mentions(lib: &Path, needle: &[u8]) -> bool {
    std::fs::read(lib).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
}

fn check(mut command: Command, opts: &Opts, lib: &Path) -> i32 {
    let shown = opts.cmd[0].to_string_lossy().into_owned();
    let dir = match make_temp_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hakmem: cannot create a temporary directory for the statistics: {e}");
            return EXIT_INTERNAL;
        }
    };
    command.env("HAKMEM_STATS", "json").env("HAKMEM_STATS_FILE", dir.join("hakmem.%p.json"));
    let outcome = spawn_and_wait(command, &shown);
    let files = read_stats_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = match outcome {
        Ok(o) => o,
        Err(r) => {
            eprintln!("hakmem: {}", r.message);
            return r.code;
        }
    };
    let hint = (files.is_empty() && !library_mentions(lib, b"HAKMEM_STATS_FILE")).then(|| {
        format!(
            "{} does not mention HAKMEM_STATS_FILE, so it cannot write statistics files: it is older than `hakmem check`; rebuild it (./build.sh)",
            lib.display()
        )
    });
    let words: Vec<String> = opts.cmd.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let summary = report::summarize(&report::display_command(&words, 60), outcome, &files, hint.as_deref());
    eprintln!("{}", summary.text);
    summary.exit
}

/// `hakmem run`, `check` and `env`.
pub fn go(opts: Opts) -> i32 {
    let exe = std::env::current_exe().ok();
    let lib = match preload::find_library(
        opts.lib.as_deref(),
        std::env::var_os("HAKMEM_LIB").as_deref(),
        exe.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hakmem: {e}");
            return EXIT_NOT_FOUND;
        }
    };
    let lib_machine = match preload::library_machine(&lib) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hakmem: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    let ld_preload = preload::compose_preload(&lib, std::env::var_os("LD_PRELOAD").as_deref());

    if opts.sub == Sub::Env {
        let mut vars: Vec<(String, OsString)> = vec![("LD_PRELOAD".into(), ld_preload)];
        for (k, v) in &opts.env {
            vars.retain(|(name, _)| name != k);
            vars.push((k.clone(), v.into()));
        }
        for (k, v) in vars {
            println!("export {k}={}", report::shell_quote(&v.to_string_lossy()));
        }
        return 0;
    }

    let path_var = std::env::var_os("PATH");
    let resolved = match prepare(&opts.cmd[0], lib_machine, path_var.as_deref()) {
        Ok(p) => p,
        Err(r) => {
            eprintln!("hakmem: {}", r.message);
            return r.code;
        }
    };
    // Run the resolved file (what execvp would pick), with argv[0] as given.
    let mut command = Command::new(&resolved);
    command.arg0(&opts.cmd[0]).args(&opts.cmd[1..]).env("LD_PRELOAD", &ld_preload);
    for (k, v) in &opts.env {
        command.env(k, v);
    }
    match opts.sub {
        Sub::Check => check(command, &opts, &lib),
        _ => match spawn_and_wait(command, &opts.cmd[0].to_string_lossy()) {
            Ok(o) => exit_code(o),
            Err(r) => {
                eprintln!("hakmem: {}", r.message);
                r.code
            }
        },
    }
}

/// The library `run` would use, for `--version`.
pub fn library_status() -> String {
    let exe = std::env::current_exe().ok();
    match preload::find_library(None, std::env::var_os("HAKMEM_LIB").as_deref(), exe.as_deref()) {
        Ok(l) => format!("library: {}", l.display()),
        Err(e) => format!("library: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const X86_64: u16 = 62;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hakmem-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn script(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn static_binary(dir: &Path) -> Option<PathBuf> {
        let src = dir.join("s.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let out = dir.join("static-prog");
        let ok = Command::new("cc")
            .arg("-static")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: cc -static failed (no static libc? /usr/lib/x86_64-linux-gnu/libc.a)");
        }
        ok.then_some(out)
    }

    #[test]
    fn dynamic_programs_and_scripts_pass() {
        let dir = scratch("vet-ok");
        let path = std::env::var_os("PATH");
        let p = prepare(OsStr::new("true"), X86_64, path.as_deref()).unwrap();
        assert!(p.ends_with("true"));
        script(&dir.join("a.sh"), "#!/bin/sh\necho a\n");
        assert!(prepare(dir.join("a.sh").as_os_str(), X86_64, path.as_deref()).is_ok());
        script(&dir.join("b.sh"), "#!/usr/bin/env sh\necho b\n");
        assert!(prepare(dir.join("b.sh").as_os_str(), X86_64, path.as_deref()).is_ok());
        // A script running a script: followed, and fine.
        script(&dir.join("c"), &format!("#!{}\n", dir.join("a.sh").display()));
        assert!(prepare(dir.join("c").as_os_str(), X86_64, path.as_deref()).is_ok());
        // Not ELF, not a script: left to exec.
        script(&dir.join("plain"), "echo plain\n");
        assert!(prepare(dir.join("plain").as_os_str(), X86_64, path.as_deref()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_found_and_not_executable() {
        let dir = scratch("vet-nf");
        let path = Some(dir.as_os_str());
        let r = prepare(OsStr::new("no-such-command-xyz"), X86_64, path).unwrap_err();
        assert_eq!(r, refuse(127, "no-such-command-xyz: command not found".into()));
        std::fs::write(dir.join("noexec"), "x").unwrap();
        let r = prepare(dir.join("noexec").as_os_str(), X86_64, path).unwrap_err();
        assert_eq!(r.code, 126);
        assert!(r.message.contains("not executable"), "{}", r.message);
        let r = prepare(OsStr::new("noexec"), X86_64, path).unwrap_err();
        assert_eq!(r.code, 126);
        let r = prepare(dir.as_os_str(), X86_64, path).unwrap_err();
        assert_eq!((r.code, r.message.contains("directory")), (126, true));
        script(&dir.join("bad-interp"), "#!/nonexistent/interp\n");
        let r = prepare(dir.join("bad-interp").as_os_str(), X86_64, path).unwrap_err();
        assert_eq!(r.code, 127);
        assert!(r.message.contains("interpreter /nonexistent/interp was not found"), "{}", r.message);
        script(&dir.join("bad-env"), "#!/usr/bin/env no-such-interp-xyz\n");
        let r = prepare(dir.join("bad-env").as_os_str(), X86_64, path).unwrap_err();
        assert_eq!(r.code, 127);
        assert!(r.message.contains("no-such-interp-xyz"), "{}", r.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn static_programs_and_their_scripts_are_refused() {
        let dir = scratch("vet-static");
        let Some(st) = static_binary(&dir) else { return };
        let r = prepare(st.as_os_str(), X86_64, None).unwrap_err();
        assert_eq!(r.code, 126);
        assert!(
            r.message
                .starts_with(&format!("cannot use hakmem for {}: it is statically linked", st.display())),
            "{}",
            r.message
        );
        // A script whose interpreter is static, directly and through env.
        script(&dir.join("direct"), &format!("#!{} -x\n", st.display()));
        let r = prepare(dir.join("direct").as_os_str(), X86_64, None).unwrap_err();
        assert!(
            r.message.contains(&format!("its interpreter {} is statically linked", st.display())),
            "{}",
            r.message
        );
        script(&dir.join("via-env"), "#!/usr/bin/env -S static-prog --opt\n");
        let path = std::env::join_paths([dir.as_path(), Path::new("/usr/bin"), Path::new("/bin")]).unwrap();
        let r = prepare(dir.join("via-env").as_os_str(), X86_64, Some(&path)).unwrap_err();
        assert!(
            r.message.contains("its interpreter static-prog (") && r.message.contains("statically linked"),
            "{}",
            r.message
        );
        // Wrong architecture (as if the library were AArch64).
        let r = prepare(OsStr::new("/bin/true"), 183, None).unwrap_err();
        assert!(r.message.contains("is built for x86-64, libhakmem.so for AArch64"), "{}", r.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secure_mode_programs_are_refused() {
        if sys::real_uid() != 0 {
            eprintln!("skipped: needs root to give a file to another owner");
            return;
        }
        let dir = scratch("vet-suid");
        let prog = dir.join("suid-true");
        std::fs::copy("/bin/true", &prog).unwrap();
        if sys::mounted_nosuid(&prog) {
            eprintln!("skipped: {} is on a nosuid file system", dir.display());
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        // Set-user-ID but owned by us (root): no id change, no secure mode.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert!(prepare(prog.as_os_str(), X86_64, None).is_ok());
        // Owned by nobody: the effective uid changes, secure mode.
        std::os::unix::fs::chown(&prog, Some(65534), None).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let r = prepare(prog.as_os_str(), X86_64, None).unwrap_err();
        assert_eq!(r.code, 126);
        assert!(r.message.contains("it is set-user-ID (owner uid 65534)"), "{}", r.message);
        // Set-group-ID to another group.
        std::os::unix::fs::chown(&prog, Some(0), Some(65534)).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o2755)).unwrap();
        let r = prepare(prog.as_os_str(), X86_64, None).unwrap_err();
        assert!(r.message.contains("it is set-group-ID (group gid 65534)"), "{}", r.message);
        // Set-group-ID without group execute is not set-group-ID execution.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o2745)).unwrap();
        assert!(prepare(prog.as_os_str(), X86_64, None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_codes_of_outcomes() {
        assert_eq!(exit_code(Outcome::Exited(7)), 7);
        assert_eq!(exit_code(Outcome::Signaled(15)), 143);
    }
}

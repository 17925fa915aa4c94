//! What a command is, from its first bytes: a dynamically linked ELF program
//! (the dynamic loader runs it and honours `LD_PRELOAD`), a static or
//! static-pie one (no loader: `LD_PRELOAD` means nothing), a `#!` script (its
//! interpreter decides), or anything else (left to `exec`).
//!
//! An ELF file has a dynamic loader exactly when it has a `PT_INTERP` program
//! header. Without one, `ET_EXEC` is a static executable; `ET_DYN` is either
//! a static-pie executable (`DF_1_PIE` in `DT_FLAGS_1`, which is how `file`
//! and glibc tell them apart) or a shared object run directly, such as the
//! dynamic loader itself (`ld-linux-x86-64.so.2 PROG`, which does honour
//! `LD_PRELOAD`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const ELFMAG: &[u8; 4] = b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2MSB: u8 = 2;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PN_XNUM: u16 = 0xffff;
const DT_NULL: u64 = 0;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;
/// Bytes of a `#!` line the kernel looks at (BINPRM_BUF_SIZE since Linux 5.1).
const SHEBANG_MAX: usize = 256;

/// An ELF64 program's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfType {
    /// Has a `PT_INTERP`: the dynamic loader named there runs it.
    /// `executable`: `ET_EXEC` or PIE, not a shared library that happens to
    /// be runnable too (like libc.so.6).
    Dynamic { interp: PathBuf, executable: bool },
    /// `ET_EXEC` without `PT_INTERP`.
    Static,
    /// `ET_DYN` without `PT_INTERP`, flagged `DF_1_PIE`.
    StaticPie,
    /// `ET_DYN` without `PT_INTERP` and not PIE: a shared object (the dynamic
    /// loader, or a library such as `libhakmem.so`).
    SharedObject,
    /// Another `e_type` (relocatable object, core file): `exec` refuses it.
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Elf64 {
        machine: u16,
        ty: ElfType,
    },
    /// A 32-bit ELF file (not examined further: a 64-bit library cannot be
    /// loaded into it whatever it is).
    Elf32 {
        machine: u16,
    },
    /// `#!INTERP [ARG]`.
    Script {
        interp: Vec<u8>,
        arg: Option<Vec<u8>>,
    },
    /// Neither ELF nor `#!` (or a truncated ELF file): left to `exec`.
    Other,
}

/// Name of an ELF `e_machine` for messages.
pub fn machine_name(m: u16) -> String {
    match m {
        3 => "i386".into(),
        40 => "ARM".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        243 => "RISC-V".into(),
        _ => format!("ELF machine {m}"),
    }
}

struct Endian(bool);

impl Endian {
    fn u16(&self, b: &[u8], off: usize) -> u16 {
        let a = [b[off], b[off + 1]];
        if self.0 {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(&self, b: &[u8], off: usize) -> u32 {
        let a: [u8; 4] = b[off..off + 4].try_into().unwrap();
        if self.0 {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64(&self, b: &[u8], off: usize) -> u64 {
        let a: [u8; 8] = b[off..off + 8].try_into().unwrap();
        if self.0 {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}

fn read_at(f: &mut File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    // A malformed header may claim gigabytes: never allocate past the file.
    let size = f.metadata()?.len();
    if off.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(malformed("a header points past the end of the file"));
    }
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Read as much of the file's start as there is, up to `buf.len()` bytes.
fn read_prefix(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Classify the file at `path`. An error means it could not be read (or is a
/// malformed ELF file); callers then leave the decision to `exec`.
pub fn classify(path: &Path) -> io::Result<Kind> {
    let mut f = File::open(path)?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = read_prefix(&mut f, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(match parse_shebang(head) {
            Some((interp, arg)) => Kind::Script { interp, arg },
            None => Kind::Other,
        });
    }
    if n < 64 || &head[..4] != ELFMAG {
        return Ok(Kind::Other);
    }
    let e = Endian(head[5] == ELFDATA2MSB);
    let machine = e.u16(head, 0x12);
    match head[4] {
        ELFCLASS64 => {}
        ELFCLASS32 => return Ok(Kind::Elf32 { machine }),
        _ => return Ok(Kind::Other),
    }
    let e_type = e.u16(head, 0x10);
    let phoff = e.u64(head, 0x20);
    let shoff = e.u64(head, 0x28);
    let phentsize = usize::from(e.u16(head, 0x36));
    let mut phnum = usize::from(e.u16(head, 0x38));
    if phnum == usize::from(PN_XNUM) {
        // The real count is in section header 0's sh_info.
        let sh0 = read_at(&mut f, shoff, 64)?;
        phnum = e.u32(&sh0, 44) as usize;
    }
    if phentsize < 56 || phnum > 1 << 16 {
        return Err(malformed("bad program header table"));
    }
    let phdrs = read_at(&mut f, phoff, phentsize * phnum)?;
    let mut interp = None;
    let mut dynamic = None;
    for ph in phdrs.chunks_exact(phentsize) {
        let (offset, filesz) = (e.u64(ph, 8), e.u64(ph, 32));
        match e.u32(ph, 0) {
            PT_INTERP if interp.is_none() => interp = Some((offset, filesz)),
            PT_DYNAMIC if dynamic.is_none() => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let pie = e_type == ET_DYN
        && match dynamic {
            Some((offset, filesz)) => {
                let len = filesz.min(1 << 20) as usize / 16 * 16;
                let d = read_at(&mut f, offset, len)?;
                d.chunks_exact(16)
                    .map(|ent| (e.u64(ent, 0), e.u64(ent, 8)))
                    .take_while(|&(tag, _)| tag != DT_NULL)
                    .any(|(tag, val)| tag == DT_FLAGS_1 && val & DF_1_PIE != 0)
            }
            None => false,
        };
    let ty = if let Some((offset, filesz)) = interp {
        let len = filesz.min(4096) as usize;
        let mut s = read_at(&mut f, offset, len)?;
        if let Some(nul) = s.iter().position(|&b| b == 0) {
            s.truncate(nul);
        }
        ElfType::Dynamic {
            interp: PathBuf::from(OsStr::from_bytes(&s)),
            executable: e_type == ET_EXEC || pie,
        }
    } else {
        match e_type {
            ET_EXEC => ElfType::Static,
            ET_DYN if pie => ElfType::StaticPie,
            ET_DYN => ElfType::SharedObject,
            other => ElfType::Other(other),
        }
    };
    Ok(Kind::Elf64 { machine, ty })
}

/// `#!INTERP [ARG]` as Linux reads it: the first line (within the first 256
/// bytes), blanks after `#!` skipped, INTERP up to the next blank, the rest
/// (trimmed) as one argument. None when there is no interpreter.
pub fn parse_shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let line = head.strip_prefix(b"#!")?;
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !blank(b))?;
    let line = &line[start..];
    let end = line.iter().position(blank).unwrap_or(line.len());
    let interp = line[..end].to_vec();
    let rest = trim_blanks(&line[end..]);
    let arg = (!rest.is_empty()).then(|| rest.to_vec());
    Some((interp, arg))
}

fn trim_blanks(s: &[u8]) -> &[u8] {
    let blank = |b: &u8| matches!(*b, b' ' | b'\t' | b'\r');
    let start = s.iter().position(|b| !blank(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// For `#!/usr/bin/env ARG`: the program `env` will run. ARG is split on
/// blanks (as `env -S` does); options and NAME=VALUE assignments are skipped
/// (`-u NAME` and `-C DIR` take the next word; `-SWORD` starts the command).
pub fn env_program(arg: &[u8]) -> Option<Vec<u8>> {
    let mut words = arg.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
    while let Some(w) = words.next() {
        match w {
            b"-u" | b"--unset" | b"-C" | b"--chdir" => {
                words.next();
            }
            _ if w.starts_with(b"-S") && w.len() > 2 => return Some(w[2..].to_vec()),
            _ if w.starts_with(b"-") => {}
            _ if w.contains(&b'=') => {}
            _ => return Some(w.to_vec()),
        }
    }
    None
}

/// Why a command cannot be resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRunnable {
    NotFound,
    /// Found, but without execute permission.
    NotExecutable(PathBuf),
    /// A directory.
    Directory(PathBuf),
}

fn executable_file(p: &Path) -> Result<(), NotRunnable> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Err(_) => Err(NotRunnable::NotFound),
        Ok(m) if m.is_dir() => Err(NotRunnable::Directory(p.to_path_buf())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(NotRunnable::NotExecutable(p.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// The file `execvp(cmd)` would run: `cmd` itself if it contains a `/`,
/// else the first executable `DIR/cmd` for DIR in `path_var` (an empty entry
/// is the current directory; glibc's default `/bin:/usr/bin` when unset).
/// Like execvp, a match without execute permission is passed over but
/// reported when nothing better is found.
pub fn resolve_command(cmd: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, NotRunnable> {
    let bytes = cmd.as_bytes();
    if bytes.is_empty() {
        return Err(NotRunnable::NotFound);
    }
    if bytes.contains(&b'/') {
        let p = PathBuf::from(cmd);
        executable_file(&p)?;
        return Ok(p);
    }
    let path_var = path_var.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    let mut denied = None;
    for dir in path_var.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(cmd);
        match executable_file(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(NotRunnable::NotExecutable(p)) => {
                denied.get_or_insert(p);
            }
            Err(_) => {}
        }
    }
    Err(denied.map_or(NotRunnable::NotFound, NotRunnable::NotExecutable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hakmem-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bin_true_is_dynamic() {
        let p = resolve_command(OsStr::new("true"), Some(OsStr::new("/usr/bin:/bin"))).unwrap();
        match classify(&p).unwrap() {
            Kind::Elf64 { ty: ElfType::Dynamic { interp, executable: true }, .. } => {
                assert!(interp.to_string_lossy().contains("ld-"), "unexpected PT_INTERP {interp:?}")
            }
            k => panic!("{} classified as {k:?}, expected a dynamic ELF", p.display()),
        }
    }

    #[test]
    fn runnable_shared_library_is_not_an_executable() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !libc.exists() {
            eprintln!("skipped: no {}", libc.display());
            return;
        }
        assert!(
            matches!(
                classify(libc).unwrap(),
                Kind::Elf64 { ty: ElfType::Dynamic { executable: false, .. }, .. }
            ),
            "{:?}",
            classify(libc)
        );
    }

    #[test]
    fn dynamic_loader_is_a_shared_object() {
        let ld = Path::new("/lib64/ld-linux-x86-64.so.2");
        if !ld.exists() {
            eprintln!("skipped: no {}", ld.display());
            return;
        }
        assert_eq!(classify(ld).unwrap(), Kind::Elf64 { machine: 62, ty: ElfType::SharedObject });
    }

    /// Compile `int main(){return 0;}` with `cc FLAGS`; None (with a note) when
    /// the toolchain cannot (e.g. no static libc).
    fn compile(dir: &Path, name: &str, flags: &[&str]) -> Option<PathBuf> {
        let src = dir.join("prog.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let out = dir.join(name);
        let st = Command::new("cc").args(flags).arg(&src).arg("-o").arg(&out).output();
        match st {
            Ok(o) if o.status.success() => Some(out),
            Ok(o) => {
                eprintln!(
                    "skipped: cc {flags:?} failed (static libc missing? check /usr/lib/x86_64-linux-gnu/libc.a): {}",
                    String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run cc: {e}");
                None
            }
        }
    }

    #[test]
    fn static_and_static_pie_binaries() {
        let dir = scratch("static");
        if let Some(p) = compile(&dir, "static", &["-static"]) {
            assert!(
                matches!(classify(&p).unwrap(), Kind::Elf64 { ty: ElfType::Static, .. }),
                "cc -static output not classified static: {:?}",
                classify(&p)
            );
        }
        if let Some(p) = compile(&dir, "static-pie", &["-static-pie", "-fPIE"]) {
            assert!(
                matches!(classify(&p).unwrap(), Kind::Elf64 { ty: ElfType::StaticPie, .. }),
                "cc -static-pie output not classified static-pie: {:?}",
                classify(&p)
            );
        }
        if let Some(p) = compile(&dir, "pie", &["-pie", "-fPIE"]) {
            assert!(
                matches!(
                    classify(&p).unwrap(),
                    Kind::Elf64 { ty: ElfType::Dynamic { executable: true, .. }, .. }
                ),
                "cc -pie output not classified dynamic: {:?}",
                classify(&p)
            );
        }
        if let Some(p) = compile(&dir, "nopie", &["-no-pie"]) {
            assert!(
                matches!(
                    classify(&p).unwrap(),
                    Kind::Elf64 { ty: ElfType::Dynamic { executable: true, .. }, .. }
                ),
                "cc -no-pie output not classified dynamic: {:?}",
                classify(&p)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scripts_and_other_files() {
        let dir = scratch("scripts");
        let s = dir.join("s");
        std::fs::write(&s, "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(
            classify(&s).unwrap(),
            Kind::Script { interp: b"/bin/sh".to_vec(), arg: Some(b"-e".to_vec()) }
        );
        std::fs::write(&s, "echo no shebang\n").unwrap();
        assert_eq!(classify(&s).unwrap(), Kind::Other);
        std::fs::write(&s, "\x7fELF").unwrap();
        assert_eq!(classify(&s).unwrap(), Kind::Other);
        std::fs::write(&s, "").unwrap();
        assert_eq!(classify(&s).unwrap(), Kind::Other);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shebang_parsing() {
        assert_eq!(
            parse_shebang(b"#!/usr/bin/python3\nprint(1)"),
            Some((b"/usr/bin/python3".to_vec(), None))
        );
        assert_eq!(
            parse_shebang(b"#! \t/usr/bin/env  python3 -u \r\nx"),
            Some((b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec())))
        );
        assert_eq!(parse_shebang(b"#!   \n"), None);
        assert_eq!(parse_shebang(b"#!/bin/sh"), Some((b"/bin/sh".to_vec(), None)));
    }

    #[test]
    fn env_program_resolution() {
        assert_eq!(env_program(b"python3"), Some(b"python3".to_vec()));
        assert_eq!(env_program(b"-S python3 -u"), Some(b"python3".to_vec()));
        assert_eq!(env_program(b"-Spython3 -u"), Some(b"python3".to_vec()));
        assert_eq!(env_program(b"-i FOO=1 perl -w"), Some(b"perl".to_vec()));
        assert_eq!(env_program(b"-u HOME -C /tmp bash"), Some(b"bash".to_vec()));
        assert_eq!(env_program(b"-i"), None);
    }

    #[test]
    fn command_resolution_like_execvp() {
        let dir = scratch("resolve");
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mk = |p: &Path, mode: u32| {
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mk(&a.join("tool"), 0o644); // not executable: passed over
        mk(&b.join("tool"), 0o755);
        mk(&a.join("only-plain"), 0o644);
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(resolve_command(OsStr::new("tool"), Some(&path)), Ok(b.join("tool")));
        assert_eq!(
            resolve_command(OsStr::new("only-plain"), Some(&path)),
            Err(NotRunnable::NotExecutable(a.join("only-plain")))
        );
        assert_eq!(resolve_command(OsStr::new("missing"), Some(&path)), Err(NotRunnable::NotFound));
        assert_eq!(resolve_command(OsStr::new(""), Some(&path)), Err(NotRunnable::NotFound));
        // With a slash: used as is, PATH not consulted.
        let direct = b.join("tool");
        assert_eq!(resolve_command(direct.as_os_str(), None), Ok(direct.clone()));
        assert_eq!(resolve_command(a.as_os_str(), None), Err(NotRunnable::Directory(a.clone())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

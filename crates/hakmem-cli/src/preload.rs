//! Where libhakmem.so is, and the `LD_PRELOAD` value that puts it first.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::elf::{self, ElfType, Kind};

pub const LIB_NAME: &str = "libhakmem.so";

/// The library: `--lib PATH`, else `$HAKMEM_LIB`, else libhakmem.so in the
/// executable's directory, else `../lib/libhakmem.so` from it. Returned
/// absolute and with symbolic links resolved, so the command can change
/// directory and its children still find it.
pub fn find_library(
    explicit: Option<&Path>,
    env_lib: Option<&OsStr>,
    exe: Option<&Path>,
) -> Result<PathBuf, String> {
    let chosen = if let Some(p) = explicit {
        (p.to_path_buf(), "--lib")
    } else if let Some(p) = env_lib.filter(|p| !p.is_empty()) {
        (PathBuf::from(p), "$HAKMEM_LIB")
    } else {
        let dir = exe.and_then(Path::parent).ok_or_else(|| {
            format!("cannot tell where this executable is, so cannot find {LIB_NAME}; give --lib PATH or set HAKMEM_LIB")
        })?;
        let candidates = [dir.join(LIB_NAME), dir.join("../lib").join(LIB_NAME)];
        match candidates.iter().find(|c| c.exists()) {
            Some(c) => (c.clone(), "next to the executable"),
            None => {
                return Err(format!(
                    "{LIB_NAME} not found: looked for {} and {}; build it with ./build.sh, or give --lib PATH or set HAKMEM_LIB",
                    candidates[0].display(),
                    candidates[1].display()
                ))
            }
        }
    };
    let (path, source) = chosen;
    let abs = std::fs::canonicalize(&path).map_err(|e| format!("{} (from {source}): {e}", path.display()))?;
    if !abs.is_file() {
        return Err(format!("{} (from {source}): not a file", path.display()));
    }
    let bytes = abs.as_os_str().as_bytes();
    if bytes.iter().any(|&b| b == b':' || b.is_ascii_whitespace()) {
        return Err(format!(
            "{}: LD_PRELOAD cannot hold a path containing ':' or blanks; use a copy or symbolic link elsewhere",
            abs.display()
        ));
    }
    Ok(abs)
}

/// The library's ELF class/machine, checked to be a 64-bit shared object.
pub fn library_machine(lib: &Path) -> Result<u16, String> {
    match elf::classify(lib) {
        Ok(Kind::Elf64 {
            machine,
            ty: ElfType::SharedObject | ElfType::Dynamic { executable: false, .. },
        }) => Ok(machine),
        Ok(_) => Err(format!("{}: not a 64-bit ELF shared library", lib.display())),
        Err(e) => Err(format!("{}: {e}", lib.display())),
    }
}

fn is_sep(b: u8) -> bool {
    // ld.so splits LD_PRELOAD at ':' and at blanks (space, tab, newline).
    b == b':' || b == b' ' || b == b'\t' || b == b'\n'
}

/// Does an existing `LD_PRELOAD` entry name this library? Same string, or
/// (for a path, not a bare name ld.so searches for) the same file.
fn same_library(entry: &[u8], lib: &Path) -> bool {
    if entry == lib.as_os_str().as_bytes() {
        return true;
    }
    entry.contains(&b'/') && std::fs::canonicalize(OsStr::from_bytes(entry)).is_ok_and(|c| c == lib)
}

/// The `LD_PRELOAD` value: `lib` first, then the existing entries in their
/// order with their own separators, without other mentions of `lib`.
pub fn compose_preload(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut out = lib.as_os_str().as_bytes().to_vec();
    let existing = existing.map_or(&[][..], |e| e.as_bytes());
    // (separators before the entry, entry)
    let mut pieces: Vec<(&[u8], &[u8])> = Vec::new();
    let mut i = 0;
    while i < existing.len() {
        let sep_start = i;
        while i < existing.len() && is_sep(existing[i]) {
            i += 1;
        }
        let entry_start = i;
        while i < existing.len() && !is_sep(existing[i]) {
            i += 1;
        }
        if entry_start < i {
            pieces.push((&existing[sep_start..entry_start], &existing[entry_start..i]));
        }
    }
    let mut first = true;
    for (sep, entry) in pieces {
        if same_library(entry, lib) {
            continue;
        }
        if first {
            out.push(b':');
            first = false;
        } else {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(entry);
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(lib: &str, existing: Option<&str>) -> String {
        compose_preload(Path::new(lib), existing.map(OsStr::new)).into_string().unwrap()
    }

    #[test]
    fn preload_composition() {
        let lib = "/opt/h/libhakmem.so";
        assert_eq!(compose(lib, None), lib);
        assert_eq!(compose(lib, Some("")), lib);
        assert_eq!(compose(lib, Some("  : ")), lib);
        assert_eq!(compose(lib, Some("libjemalloc.so.2")), format!("{lib}:libjemalloc.so.2"));
        // Separators of the existing entries are kept as they were.
        assert_eq!(
            compose(lib, Some("/a/liba.so /b/libb.so:/c/libc.so")),
            format!("{lib}:/a/liba.so /b/libb.so:/c/libc.so")
        );
        assert_eq!(compose(lib, Some(" /a/liba.so\t/b/libb.so ")), format!("{lib}:/a/liba.so\t/b/libb.so"));
        // Already present: moved to the front, never twice.
        assert_eq!(compose(lib, Some(lib)), lib);
        assert_eq!(
            compose(lib, Some(&format!("/a/liba.so:{lib} /b/libb.so"))),
            format!("{lib}:/a/liba.so /b/libb.so")
        );
        assert_eq!(compose(lib, Some(&format!("{lib}:{lib}"))), lib);
        // Another libhakmem.so (a different file) is left alone.
        assert_eq!(compose(lib, Some("/elsewhere/libhakmem.so")), format!("{lib}:/elsewhere/libhakmem.so"));
    }

    #[test]
    fn preload_recognises_the_same_file_by_another_path() {
        let dir = std::env::temp_dir().join(format!("hakmem-cli-test-{}-same", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let lib = dir.join("libhakmem.so");
        std::fs::write(&lib, b"x").unwrap();
        let lib = std::fs::canonicalize(&lib).unwrap();
        std::os::unix::fs::symlink(&lib, dir.join("link.so")).unwrap();
        let other = format!(
            "{}:{}:{}",
            dir.join("sub/../libhakmem.so").display(),
            dir.join("link.so").display(),
            "/x/liby.so"
        );
        assert_eq!(
            compose_preload(&lib, Some(OsStr::new(&other))),
            OsString::from(format!("{}:/x/liby.so", lib.display()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn library_must_be_a_shared_library() {
        assert!(library_machine(Path::new("/bin/true"))
            .unwrap_err()
            .contains("not a 64-bit ELF shared library"));
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if libc.exists() {
            assert_eq!(library_machine(libc), Ok(62));
        }
    }

    #[test]
    fn library_lookup_order() {
        let dir = std::env::temp_dir().join(format!("hakmem-cli-test-{}-find", std::process::id()));
        let bin = dir.join("bin");
        let libdir = dir.join("lib");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&libdir).unwrap();
        let exe = bin.join("hakmem");
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap();

        // Nothing there: a message naming both places.
        let e = find_library(None, None, Some(&exe)).unwrap_err();
        assert!(e.contains("bin/libhakmem.so") && e.contains("lib/libhakmem.so"), "{e}");

        std::fs::write(libdir.join(LIB_NAME), b"x").unwrap();
        assert_eq!(find_library(None, None, Some(&exe)).unwrap(), canon(&libdir.join(LIB_NAME)));
        std::fs::write(bin.join(LIB_NAME), b"x").unwrap();
        assert_eq!(find_library(None, None, Some(&exe)).unwrap(), canon(&bin.join(LIB_NAME)));
        let env_lib = dir.join("env.so");
        std::fs::write(&env_lib, b"x").unwrap();
        assert_eq!(find_library(None, Some(env_lib.as_os_str()), Some(&exe)).unwrap(), canon(&env_lib));
        // An empty HAKMEM_LIB counts as unset.
        assert_eq!(find_library(None, Some(OsStr::new("")), Some(&exe)).unwrap(), canon(&bin.join(LIB_NAME)));
        let explicit = dir.join("lib/../lib/libhakmem.so");
        assert_eq!(
            find_library(Some(&explicit), Some(env_lib.as_os_str()), Some(&exe)).unwrap(),
            canon(&libdir.join(LIB_NAME))
        );
        // A named library that is missing is an error, not a fallback.
        let e = find_library(Some(&dir.join("nope.so")), None, Some(&exe)).unwrap_err();
        assert!(e.contains("nope.so") && e.contains("--lib"), "{e}");
        let e = find_library(None, Some(OsStr::new("/nonexistent/x.so")), Some(&exe)).unwrap_err();
        assert!(e.contains("HAKMEM_LIB"), "{e}");
        // A path LD_PRELOAD cannot carry.
        let spaced = dir.join("with space.so");
        std::fs::write(&spaced, b"x").unwrap();
        let e = find_library(Some(&spaced), None, None).unwrap_err();
        assert!(e.contains("blanks"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

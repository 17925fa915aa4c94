//! The launcher's few calls into libc; everything else is std.
//!
//! - the process's ids and two facts about a file (is its file system mounted
//!   `nosuid`, does it carry file capabilities), for the secure-mode check;
//! - the signal dispositions while the command runs: SIGINT and SIGQUIT are
//!   ignored (the terminal sends them to the whole foreground process group,
//!   so the command gets them itself, as with `system(3)`), SIGTERM and SIGHUP
//!   are passed on to the command (they are usually sent to the launcher
//!   alone, e.g. by `timeout` or a closing terminal).

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// Effective user and group id of this process.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments, cannot fail and touch no memory of ours.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Real user id of this process.
pub fn real_uid() -> u32 {
    // SAFETY: getuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// Is `path` on a file system mounted `nosuid` (where the kernel ignores the
/// set-user-ID and set-group-ID bits and file capabilities)? False when unknown.
pub fn mounted_nosuid(path: &Path) -> bool {
    let Some(c) = c_path(path) else { return false };
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string alive for the call; `st` is a
    // writable statvfs that the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it initialised every field of `st`.
    let st = unsafe { st.assume_init() };
    st.f_flag & libc::ST_NOSUID != 0
}

/// Does `path` carry file capabilities (a `security.capability` attribute)?
pub fn has_file_capabilities(path: &Path) -> bool {
    let Some(c) = c_path(path) else { return false };
    let name = c"security.capability";
    // SAFETY: both strings are NUL-terminated and alive for the call; with a
    // size of 0 getxattr only returns the value's length and writes nothing,
    // so a null buffer is allowed.
    let len = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    len > 0
}

/// The command's pid while [`WaitSignals`] is installed, 0 otherwise.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and only sends a signal; `pid` is
        // the launcher's own child, not yet reaped while the handler is
        // installed (the guard is dropped right after the wait returns).
        // errno is saved around it: the interrupted code may be reading it.
        unsafe {
            let saved = *libc::__errno_location();
            libc::kill(pid, sig);
            *libc::__errno_location() = saved;
        }
    }
}

const IGNORED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGQUIT];
const FORWARDED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGHUP];

/// Signal dispositions for the time the launcher waits for its command;
/// dropping it restores the previous ones.
pub struct WaitSignals {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl WaitSignals {
    /// Install them for the running child `pid`. Called after the spawn, so
    /// the command starts with the dispositions the launcher was given.
    pub fn install(pid: u32) -> WaitSignals {
        CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::Relaxed);
        let forward: extern "C" fn(libc::c_int) = forward_signal;
        let mut old = Vec::new();
        for (sig, handler) in IGNORED
            .iter()
            .map(|&s| (s, libc::SIG_IGN))
            .chain(FORWARDED.iter().map(|&s| (s, forward as libc::sighandler_t)))
        {
            // SAFETY: sigaction is a plain C struct for which all-zero bytes
            // are a valid value (empty mask, no flags, SIG_DFL).
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = handler;
            act.sa_flags = libc::SA_RESTART;
            let mut prev = MaybeUninit::<libc::sigaction>::uninit();
            // SAFETY: `act` is initialised and `prev` writable for the call;
            // the handler only loads an atomic and calls kill, both
            // async-signal-safe.
            let rc = unsafe { libc::sigaction(sig, &act, prev.as_mut_ptr()) };
            if rc == 0 {
                // SAFETY: sigaction returned 0, so it stored the previous action in `prev`.
                old.push((sig, unsafe { prev.assume_init() }));
            }
        }
        WaitSignals { old }
    }
}

impl Drop for WaitSignals {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: `prev` is the action sigaction returned for `sig`; a
            // null old-action pointer is allowed.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
        CHILD.store(0, Ordering::Relaxed);
    }
}

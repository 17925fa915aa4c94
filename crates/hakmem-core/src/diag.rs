//! Diagnostics: one line on stderr, written with `write(2)` from a stack
//! buffer (formatting with `core::fmt` never allocates).

use core::fmt::{self, Write};

use crate::{config, os, stats};

/// A fixed buffer that formats into itself and truncates when full.
pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf { buf: [0; 512], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Write the line (a newline is added) to stderr.
    pub fn emit(&mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        os::write_stderr(self.as_bytes());
        self.len = 0;
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Print `hakmem: <args>` as one line.
pub fn line(args: fmt::Arguments<'_>) {
    let mut b = LineBuf::new();
    let _ = b.write_str("hakmem: ");
    let _ = b.write_fmt(args);
    b.emit();
}

/// What was wrong with a pointer passed to the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// Not a block hakmem or glibc handed out (wild, interior, unmapped).
    InvalidPointer,
    /// A block that is already free.
    DoubleFree,
}

/// Report misuse of `ptr` by C function `func` ("free", "realloc", ...).
/// Returns (the call is then ignored) unless HAKMEM_ABORT_ON_ERROR=1.
#[cold]
#[inline(never)]
pub fn misuse(func: &str, what: Misuse, ptr: *const u8) {
    stats::count(&stats::STATS.misuse);
    match what {
        Misuse::InvalidPointer => line(format_args!("{func}(): invalid pointer {ptr:p}")),
        Misuse::DoubleFree => line(format_args!("{func}(): double free of {ptr:p}")),
    }
    if config::abort_on_error() {
        os::abort();
    }
}

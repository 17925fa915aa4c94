//! Diagnostics: one line on stderr, written with `write(2)` from a stack
//! buffer (formatting with `core::fmt` never allocates). The bottom of the
//! reporting stack: it uses only `os`.

use core::fmt::{self, Write};

use crate::os;

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

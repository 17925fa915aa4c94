//! The crash report (HAKMEM_CRASH_REPORT=1): when the program dies of
//! SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, one block of `hakmem:` lines
//! on stderr says what the faulting address is to hakmem (which tier, which
//! class, which block and whether it is free) and the state of the thread's
//! heap; then the previous disposition is put back and the signal takes its
//! course (core dump, or the program's own handler).
//!
//! Handlers are installed at load time, and only over the default
//! disposition: a handler installed before hakmem's constructor is kept,
//! and one the program installs later simply replaces hakmem's. The report
//! is written with `write(2)` from stack buffers and reads only hakmem's
//! metadata and mapped memory (never the faulting address itself), so it is
//! safe in a signal handler. No alternate stack is set up: a stack overflow
//! dies without the report.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::diag;
use crate::os::{self, SavedAction};
use crate::page_map::{self, Entry};
use crate::segment::Segment;
use crate::size_class::STRIDE;
use crate::slab::Block;
use crate::thread;

const SIGNALS: [i32; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT];

/// The dispositions hakmem replaced, one per entry of `SIGNALS`.
struct Saved {
    action: UnsafeCell<MaybeUninit<SavedAction>>,
    /// 0: not installed; 1: being installed; 2: installed, `action` valid.
    state: AtomicU8,
}

// SAFETY: `action` is written once, before `state` says it is valid
// (release), and only read after seeing that (acquire).
unsafe impl Sync for Saved {}

static SAVED: [Saved; 5] =
    [const { Saved { action: UnsafeCell::new(MaybeUninit::uninit()), state: AtomicU8::new(0) } }; 5];

/// Set once a report has been written: the process is dying, and a second
/// signal (another thread's, or the re-raised one) needs no second report.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Install the handlers over default dispositions (HAKMEM_CRASH_REPORT=1).
pub fn install() {
    for (i, &sig) in SIGNALS.iter().enumerate() {
        let s = &SAVED[i];
        if s.state.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            continue;
        }
        // Someone else handles it already: leave theirs in place (looked
        // at first, so a live handler is never displaced, even briefly).
        if !os::signal_is_default(sig) {
            s.state.store(0, Ordering::Relaxed);
            continue;
        }
        match os::install_signal_handler(sig, on_fatal_signal) {
            Some(old) => {
                // SAFETY: state 1 is ours alone; nobody reads `action` yet.
                unsafe { (*s.action.get()).write(old) };
                s.state.store(2, Ordering::Release);
            }
            None => s.state.store(0, Ordering::Relaxed),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV (invalid memory access)",
        libc::SIGBUS => "SIGBUS (bus error)",
        libc::SIGILL => "SIGILL (illegal instruction)",
        libc::SIGFPE => "SIGFPE (arithmetic error)",
        libc::SIGABRT => "SIGABRT (abort)",
        _ => "signal",
    }
}

extern "C" fn on_fatal_signal(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else { return };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (addr, code) = unsafe { os::siginfo_fault(info) };
    // A fault raised by the kernel for an instruction (si_code > 0) carries
    // an address; abort() and kill() do not.
    let kernel_fault = code > 0 && sig != libc::SIGABRT;
    if !REPORTING.swap(true, Ordering::Relaxed) {
        report(sig, kernel_fault.then_some(addr));
    }
    let s = &SAVED[i];
    if s.state.load(Ordering::Acquire) == 2 {
        // SAFETY: state 2: `action` holds what sigaction returned.
        os::restore_signal_handler(sig, unsafe { (*s.action.get()).assume_init_ref() });
    }
    if !kernel_fault {
        // Pending until this handler returns, then handled as before.
        os::raise(sig);
    }
    // A kernel fault: returning re-runs the instruction, which faults again
    // under the previous disposition (the core dump shows the real place).
}

fn report(sig: i32, addr: Option<usize>) {
    diag::line(format_args!(
        "crash report (HAKMEM_CRASH_REPORT=1): {} in thread {} of pid {}",
        signal_name(sig),
        os::gettid(),
        os::getpid()
    ));
    if let Some(a) = addr {
        describe_address(a);
    }
    let h = thread::own();
    if thread::has_heap() {
        // SAFETY: this thread's own heap, alive while the thread is.
        let inside = unsafe { (*h).lock().held_by_me() };
        diag::line(format_args!(
            "  this thread's heap: {:p}; {}",
            h,
            if inside {
                "the thread was inside hakmem (it holds its heap's lock): after a hakmem: diagnostic above, the program corrupted its heap; without one, please report a hakmem bug"
            } else {
                "the thread was not inside a hakmem slow path"
            }
        ));
    } else {
        diag::line(format_args!("  this thread has no hakmem heap (it has allocated no small block)"));
    }
    diag::line(format_args!("  the signal now goes to the program's previous handler (or the core dump)"));
}

/// What hakmem knows about `a`, from its own metadata.
fn describe_address(a: usize) {
    match page_map::lookup(a) {
        Entry::Foreign => diag::line(format_args!(
            "  fault address {a:#x}: not hakmem's memory (a freed large block is unmapped unless cached; or another mapping, or none)"
        )),
        Entry::Segment => describe_in_segment(a),
        _ => match page_map::large_block(a) {
            Some(b) if a - b.base < b.pages * os::PAGE => diag::line(format_args!(
                "  fault address {a:#x}: {} large block {:#x} of {} bytes, offset {}",
                if b.free { "inside a FREED (cached)" } else { "inside the live" },
                b.base,
                b.pages * os::PAGE,
                a - b.base
            )),
            Some(b) => diag::line(format_args!(
                "  fault address {a:#x}: past the end of large block {:#x} ({} bytes): not hakmem's",
                b.base,
                b.pages * os::PAGE
            )),
            None => diag::line(format_args!("  fault address {a:#x}: in a large block being mapped or unmapped")),
        },
    }
}

fn describe_in_segment(a: usize) {
    let seg = Segment::of(a);
    // SAFETY: the page map says this chunk is a segment: its header is
    // mapped (readable even while being released: it is sealed first).
    let (maps, info) = unsafe { ((*seg).maps(a), (*seg).info_at(a)) };
    if !maps {
        return diag::line(format_args!(
            "  fault address {a:#x}: in hakmem segment {:#x}, past its mapped part: no hakmem block (another mapping may sit there)",
            seg as usize
        ));
    }
    let class = info.class();
    if class == 0 {
        return diag::line(format_args!(
            "  fault address {a:#x}: in hakmem segment {:#x}, on a page that holds no slab (free, or the header)",
            seg as usize
        ));
    }
    let stride = STRIDE[class] as usize;
    let off = info.slab_offset(a);
    let block = a - off % stride;
    if off >= info.carved_bytes() {
        return diag::line(format_args!(
            "  fault address {a:#x}: in a slab of {stride}-byte blocks (class {class}), past its carved blocks: never handed out"
        ));
    }
    // The block's tag word is read through the kernel: the page may be the
    // one that faulted (a guard page the program protected).
    let state = match os::read_foreign_word(block + 8) {
        Some(tag) if tag as u64 == Block::free_tag(block as *const Block) => "FREE (use after free?)",
        Some(_) => "in use",
        None => "not readable",
    };
    diag::line(format_args!(
        "  fault address {a:#x}: {stride}-byte block {block:#x} (class {class}), offset {}, which is {state}",
        a - block
    ));
}

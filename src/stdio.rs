//! Standard descriptors that were closed when the process started.
//!
//! A closed descriptor 0, 1 or 2 is the lowest free number, so the next file
//! opened (the bus lock, a chunk, an inotify instance) would take it, and
//! whatever the program then writes to "standard error" or "standard output"
//! would land in that file. Rust's runtime prevents this by opening
//! `/dev/null` on them before `main`, but that hides the fact: a consumer
//! started with `>&-` then delivers into `/dev/null`, and in lossless mode
//! removes chunks nobody received. So the descriptors are checked here, by
//! a constructor that runs before the runtime's start-up code, which fills
//! the gaps itself and remembers which ones it filled.

use std::sync::atomic::{AtomicU8, Ordering};

use nix::libc;

/// Bit `fd` is set when descriptor `fd` was closed at start-up.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

/// Run by the dynamic loader's start-up sequence (`.init_array`), before
/// Rust's runtime initialisation and before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static OPEN_MISSING_STANDARD_DESCRIPTORS: extern "C" fn() = open_missing_standard_descriptors;

extern "C" fn open_missing_standard_descriptors() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // Every lower descriptor is open by now, so open(2) returns `fd`.
        // If /dev/null cannot be opened, the runtime's own attempt fails too
        // and aborts before anything is opened.
        // SAFETY: a plain open of a constant, NUL-terminated path.
        if unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == fd {
            CLOSED_AT_START.fetch_or(1 << fd, Ordering::Relaxed);
        }
    }
}

/// Whether descriptor `fd` (0, 1 or 2) was closed when the process started
/// (it now holds `/dev/null`).
pub fn was_closed(fd: u8) -> bool {
    CLOSED_AT_START.load(Ordering::Relaxed) & (1 << fd) != 0
}

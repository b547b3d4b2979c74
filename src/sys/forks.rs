//! Telling, without a system call, whether this process is a child made by
//! `fork(2)` since something was made: a child shares its parent's open
//! file descriptions, and a `flock(2)` lock or an inotify queue shared with
//! the parent is no lock and no queue of the child's own. `getpid(2)`
//! tells too, but it is a system call, and those are dear on a publish's
//! path after an idle pause (docs/design/shared-memory-log.md, "Measured").
//!
//! A handler registered with `pthread_atfork(3)` counts the forks in the
//! child. What `fork(2)` of the C library (and so Python's `os.fork`)
//! makes runs it; a child made by a raw `clone(2)` does not, and is not
//! told.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::libc;

/// Forks counted in this process's line: each child adds one at birth.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Whether the handler could not be registered: then the process's id
/// stands for the count (a system call each time).
static UNCOUNTED: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A value that differs in a child made by `fork(2)` from what it was in
/// the parent before the fork: what an [`Origin`] records and compares.
fn generation() -> u64 {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: pthread_atfork(3) takes three optional handlers; the one
        // given is a plain function that lives as long as the process and
        // only adds to an atomic, which a child handler may do.
        if unsafe { libc::pthread_atfork(None, None, Some(forked)) } != 0 {
            UNCOUNTED.store(1, Ordering::Relaxed);
        }
    });
    if UNCOUNTED.load(Ordering::Relaxed) != 0 {
        return u64::from(std::process::id());
    }
    FORKS.load(Ordering::Relaxed)
}

/// The process something was made in, to tell later whether this is still
/// that process or a child made by `fork(2)` since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin(u64);

impl Origin {
    /// This process, now.
    pub(crate) fn here() -> Origin {
        Origin(generation())
    }

    /// Whether this is still the process it names.
    pub(crate) fn is_here(self) -> bool {
        self.0 == generation()
    }
}

/// A value that belongs to the process that made it, such as a descriptor
/// whose open file description a child made by `fork(2)` would share with
/// its parent: the child gets nothing from it.
#[derive(Debug)]
pub(crate) struct Owned<T> {
    value: T,
    origin: Origin,
}

impl<T> Owned<T> {
    pub(crate) fn new(value: T) -> Owned<T> {
        Owned {
            value,
            origin: Origin::here(),
        }
    }

    /// The value, or `None` in a child made since it was made (where it is
    /// dropped: closing a child's copy of a descriptor leaves the parent's
    /// open file description as it is).
    pub(crate) fn take(self) -> Option<T> {
        self.origin.is_here().then_some(self.value)
    }
}

/// For tests: runs `child` in a child made by `fork(2)`, which exits 0 if
/// it returned true and 1 otherwise (a panic too), never returning into the
/// test harness; the parent gets the child's process id.
#[cfg(test)]
pub(crate) fn fork_child(child: impl FnOnce() -> bool) -> nix::unistd::Pid {
    use nix::unistd::{ForkResult, fork};
    // SAFETY: the child runs `child` only, on the one thread fork(2) gives
    // it, and leaves with _exit(2).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let passed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
            // SAFETY: ends the child at once, as a child of a threaded
            // process must.
            unsafe { libc::_exit(if passed.unwrap_or(false) { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => child,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count moves in the child, not in the parent.
    #[test]
    fn a_child_made_by_fork_has_another_generation() {
        use nix::sys::wait::{WaitStatus, waitpid};

        let before = generation();
        let child = fork_child(|| generation() != before);
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        assert_eq!(generation(), before);
    }
}

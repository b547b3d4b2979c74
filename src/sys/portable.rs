//! The portable path of [`crate::sys`]: what POSIX alone offers. No file
//! events (waits poll), no unnamed files (chunks are written into
//! `F.__new__` under the lock), no zero-copy transfers (chunks are read
//! and written), no pipe sizes and no private non-blocking descriptors
//! (pipes and terminals are written with blocking writes), no filesystem
//! magic numbers (no filesystem is recognised as shared), no allocation
//! of a file's blocks ahead of writing it. It is the path
//! on systems other than Linux, and on Linux when `FILEBUS_PORTABLE` asks
//! for it.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

/// No file events: there is nothing to construct.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub(crate) enum Events {}

#[cfg(not(target_os = "linux"))]
impl Events {
    pub(super) fn new() -> io::Result<Events> {
        events()
    }

    pub(crate) fn watch_dir(&self, _: &Path, _: Option<super::Awaited>) -> io::Result<super::Wd> {
        match *self {}
    }

    pub(crate) fn watch_file(&self, _: &Path) -> io::Result<super::Wd> {
        match *self {}
    }

    pub(crate) fn unwatch(&self, _: super::Wd) {
        match *self {}
    }

    pub(crate) fn watch_doorbell(&self, _: &Path) -> io::Result<super::Wd> {
        match *self {}
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match *self {}
    }

    pub(crate) fn drain(&self, _: &super::Interest<'_>) -> super::Seen {
        match *self {}
    }

    pub(crate) fn watch_names(&self, _: &Path) -> io::Result<super::Wd> {
        match *self {}
    }

    pub(crate) fn drain_names(&self, _: super::Wd, _: impl FnMut(super::NameEvent<'_>)) {
        match *self {}
    }
}

pub(super) fn events<T>() -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the portable path has no file events",
    ))
}

pub(super) fn open_unnamed(_: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

pub(super) fn preallocate(_: &File, _: u64) -> bool {
    false
}

pub(super) fn allocate(_: &File, _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// No shared-memory log on the portable path: nothing is mapped.
pub(super) fn map(_: &File, _: usize, _: bool) -> io::Result<super::SharedMap> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the portable path maps nothing",
    ))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn unmap(_: std::ptr::NonNull<u8>, _: usize, _: usize) {}

#[cfg(not(target_os = "linux"))]
pub(super) fn guard_hit(_: usize) -> bool {
    false
}

pub(super) fn name_unnamed(_: &File, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(super) fn splice_from_pipe(_: BorrowedFd<'_>, _: &File, _: usize) -> nix::Result<usize> {
    Err(Errno::ENOSYS)
}

pub(super) fn sendfile(_: BorrowedFd<'_>, _: &File, _: &mut i64, _: usize) -> nix::Result<usize> {
    Err(Errno::ENOSYS)
}

pub(super) fn splice_to_pipe(
    _: &File,
    _: &mut i64,
    _: BorrowedFd<'_>,
    _: usize,
) -> nix::Result<usize> {
    Err(Errno::ENOSYS)
}

/// A one-shot alarm one thread sleeps on and others set: a condition
/// variable (setting it wakes the sleeper, which sleeps again until the
/// time set). Only systems other than Linux use it: on Linux its unit test
/// walks it.
#[cfg_attr(target_os = "linux", allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    /// When it goes off, while it is set.
    at: std::sync::Mutex<Option<std::time::Instant>>,
    set: std::sync::Condvar,
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
impl Alarm {
    pub(crate) fn new() -> io::Result<Alarm> {
        Ok(Alarm::default())
    }

    /// Makes the alarm go off `after` from now (at once for zero), in
    /// place of any time set before.
    pub(crate) fn set(&self, after: std::time::Duration) -> io::Result<()> {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at = Some(std::time::Instant::now() + after);
        self.set.notify_one();
        Ok(())
    }

    /// Sleeps until the alarm goes off (at once if it went off since the
    /// last wait).
    pub(crate) fn wait(&self) -> io::Result<()> {
        let mut at = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let left = match *at {
                None => None,
                Some(when) => match when.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        *at = None;
                        return Ok(());
                    }
                },
            };
            at = match left {
                None => self
                    .set
                    .wait(at)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(left) => {
                    self.set
                        .wait_timeout(at, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

pub(super) fn wait_readable_for(
    fd: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // Whole milliseconds, rounded down: never later than asked.
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn pipe_capacity(_: BorrowedFd<'_>) -> Option<usize> {
    None
}

pub(super) fn set_pipe_capacity(_: BorrowedFd<'_>, _: usize) -> nix::Result<usize> {
    Err(Errno::ENOSYS)
}

pub(super) fn reopen_nonblocking(_: BorrowedFd<'_>) -> Option<OwnedFd> {
    None
}

pub(super) fn write_nowait(_: BorrowedFd<'_>, _: &[u8]) -> nix::Result<usize> {
    Err(Errno::ENOSYS)
}

pub(super) fn send_memory(_: BorrowedFd<'_>) -> Option<(usize, usize)> {
    None
}

pub(super) fn force_send_buffer(_: BorrowedFd<'_>, _: i32) -> bool {
    false
}

pub(super) fn filesystem_magic(_: &Path) -> Option<u32> {
    None
}

#[cfg(not(target_os = "linux"))]
pub(super) fn removal_facts(file: &File) -> io::Result<super::RemovalFacts> {
    Ok(facts(&nix::sys::stat::fstat(file)?))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn removal_facts_at(path: &Path) -> io::Result<super::RemovalFacts> {
    Ok(facts(&nix::sys::stat::stat(path)?))
}

/// The file flags of the BSDs and macOS (chflags(1)): the user's and the
/// system's append-only and immutable flags both forbid removal.
#[cfg(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_vendor = "apple"
))]
#[allow(clippy::unnecessary_cast)] // the flags' types differ between these systems
fn facts(stat: &nix::libc::stat) -> super::RemovalFacts {
    use nix::libc;
    let flags = stat.st_flags as u64;
    let has = |flag: u64| flags & flag != 0;
    super::RemovalFacts {
        sticky: stat.st_mode & libc::S_ISVTX != 0,
        uid: stat.st_uid,
        append_only: has((libc::UF_APPEND | libc::SF_APPEND) as u64),
        immutable: has((libc::UF_IMMUTABLE | libc::SF_IMMUTABLE) as u64),
        id: super::file_id(stat),
        mode: stat.st_mode as u32,
        gid: stat.st_gid,
        size: stat.st_size as u64,
    }
}

/// Elsewhere nothing tells of such attributes: a chunk that cannot be
/// removed after all is reported when its removal fails.
#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_vendor = "apple"
)))]
#[allow(clippy::unnecessary_cast)] // the types differ between systems
fn facts(stat: &nix::libc::stat) -> super::RemovalFacts {
    super::RemovalFacts {
        sticky: stat.st_mode & nix::libc::S_ISVTX != 0,
        uid: stat.st_uid,
        append_only: false,
        immutable: false,
        id: super::file_id(stat),
        mode: stat.st_mode as u32,
        gid: stat.st_gid,
        size: stat.st_size as u64,
    }
}

/// Root may, having no finer-grained privileges to ask about.
#[cfg(not(target_os = "linux"))]
pub(super) fn overrides_sticky_bit() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(not(target_os = "linux"))]
pub(super) fn packet_mode(_: BorrowedFd<'_>) -> bool {
    false
}

//! Every system call that only some systems have, behind one seam. The
//! rest of the crate asks this module for file events, unnamed staging
//! files allocated ahead of writing, zero-copy transfers, pipe sizes,
//! non-blocking writes on a shared output, alarms that a thread sets for
//! another without waking it, whether the process is a child forked since
//! (`forks.rs`), the kind of filesystem a path
//! is on and the file attributes that forbid removal, and gets either the
//! Linux way (`linux.rs`) or an answer that sends it down its portable
//! path (`portable.rs`): polling, named staging, read/write copies,
//! blocking writes.
//!
//! Which one a process uses is decided once: the Linux calls on Linux,
//! unless the environment variable `FILEBUS_PORTABLE` is set to anything
//! but `0` or nothing, which forces the portable path so that the test
//! suite can walk it on Linux too; the portable path everywhere else.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

mod forks;
#[cfg(target_os = "linux")]
mod linux;
mod portable;
mod shared_map;

#[cfg(target_os = "linux")]
use linux as native;
#[cfg(not(target_os = "linux"))]
use portable as native;

#[cfg(test)]
pub(crate) use forks::fork_child;
pub(crate) use forks::{Origin, Owned};
pub(crate) use native::{Alarm, Events};
pub(crate) use shared_map::SharedMap;

/// The environment variable that forces the portable path.
pub const PORTABLE_VAR: &str = "FILEBUS_PORTABLE";

/// Whether this process takes the portable path.
pub(crate) fn portable() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| {
        let forced = std::env::var_os(PORTABLE_VAR).is_some_and(|v| !v.is_empty() && v != "0");
        forced || cfg!(not(target_os = "linux"))
    })
}

/// The change to `F` (or, for a producer held back by a subscriber, to the
/// subscribers' records) a wait is for. Each process watches only for its own,
/// because every queued event wakes it: a consumer woken also by the
/// producer's creation of `F.__new__` pays a second wake-up per chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaited {
    /// A chunk being published: every implementation renames it into place.
    Publication,
    /// The chunk being taken away (lossless consumers remove it).
    Removal,
    /// A subscriber's record being replaced (by rename, as it advances) or
    /// removed (unsubscribed): what a producer held back by it waits for.
    Records,
}

/// A watch, as the events source numbers them.
pub(crate) type Wd = i32;

/// The watches a batch of events is read for: the directory of `F` (whose
/// entry events concern `name` alone, or any entry for `None`), the
/// one-shot watch on the file named `F`, and the log's doorbell, when
/// there are those.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only inotify's events are read for it
pub(crate) struct Interest<'a> {
    pub(crate) dir: Option<Wd>,
    pub(crate) name: Option<&'a [u8]>,
    pub(crate) file: Option<Wd>,
    /// The watch on the shared-memory log's doorbell, whose every event
    /// is news.
    pub(crate) doorbell: Option<Wd>,
}

/// What a batch of inotify events says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// An event concerned `F` (or may have: the queue overflowed, or the
    /// watch went away); the condition waited for may hold now.
    pub(crate) relevant: bool,
    /// The watch on the directory went away (it was removed or moved); it
    /// must be added again.
    pub(crate) lost_watch: bool,
    /// The one-shot watch on the file named `F` fired (or may have: the
    /// queue overflowed), and so is gone.
    pub(crate) file_fired: bool,
    /// Events came that concern none of the watches' subjects: the
    /// directory's other entries, or watches given up.
    pub(crate) other: bool,
}

impl Seen {
    #[cfg(target_os = "linux")] // only inotify's events come in batches
    pub(crate) fn add(&mut self, other: Seen) {
        self.relevant |= other.relevant;
        self.lost_watch |= other.lost_watch;
        self.file_fired |= other.file_fired;
        self.other |= other.other;
    }
}

/// What an event says of a directory watched for its names
/// ([`Events::watch_names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only inotify's events are read for it
pub(crate) enum NameEvent<'a> {
    /// The entry with this name was made, removed, renamed or touched.
    Changed(&'a [u8]),
    /// Events were lost (the queue overflowed, or could not be read), or
    /// the watch went away with its directory: nothing can be vouched for.
    Lost,
    /// An event of some other watch.
    Other,
}

/// A source of file events (inotify), or an error saying why there is
/// none: the portable path has none, and the system may refuse one (past
/// `fs.inotify.max_user_instances`).
pub(crate) fn events() -> io::Result<Events> {
    if portable() {
        return portable::events();
    }
    Events::new()
}

/// An unnamed file in `dir` to write a chunk into before it gets a name, or
/// `None` where there are none (the portable path, or a filesystem without
/// them): the chunk is then written into `F.__new__` under the lock.
pub(crate) fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    if portable() {
        return portable::open_unnamed(dir);
    }
    native::open_unnamed(dir)
}

/// Allocates the blocks of the first `len` bytes of `file` without changing
/// its size (`fallocate(2)` with `FALLOC_FL_KEEP_SIZE`). Only saves time,
/// so failures are not reported; returns `false` where the system or the
/// filesystem cannot do it at all, so that the caller stops asking. The
/// portable path never does.
pub(crate) fn preallocate(file: &File, len: u64) -> bool {
    if portable() {
        return portable::preallocate(file, len);
    }
    native::preallocate(file, len)
}

/// Whether `path` is on a filesystem that keeps files in memory (tmpfs,
/// ramfs), where allocating blocks ahead of writing saves nothing.
pub(crate) fn in_memory(path: &Path) -> bool {
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    filesystem_magic(path).is_some_and(|m| m == TMPFS_MAGIC || m == RAMFS_MAGIC)
}

/// Allocates the first `len` bytes of `file` and makes that its size
/// (`fallocate(2)`, mode 0): writing them later cannot fail for want of
/// space, which for a mapping would be SIGBUS. Unsupported on the portable
/// path.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    if portable() {
        return portable::allocate(file, len);
    }
    native::allocate(file, len)
}

/// Maps the first `len` bytes of `file` shared (read-only unless
/// `writable`), guarded against SIGBUS; unsupported on the portable path,
/// which has no shared-memory log.
pub(crate) fn map_shared(file: &File, len: usize, writable: bool) -> io::Result<SharedMap> {
    if portable() {
        return portable::map(file, len, writable);
    }
    native::map(file, len, writable)
}

/// Gives the unnamed `file` the name `path`; fails if anything is there.
pub(crate) fn name_unnamed(file: &File, path: &Path) -> io::Result<()> {
    if portable() {
        return portable::name_unnamed(file, path);
    }
    native::name_unnamed(file, path)
}

/// Whether bytes can be moved from an input pipe into a file without
/// passing through user space ([`splice_from_pipe`]).
pub(crate) fn splices_input() -> bool {
    !portable()
}

/// Moves up to `len` bytes that `input` (a pipe) holds now into `file`,
/// without blocking; `EAGAIN` when it holds none.
pub(crate) fn splice_from_pipe(
    input: BorrowedFd<'_>,
    file: &File,
    len: usize,
) -> nix::Result<usize> {
    if portable() {
        return portable::splice_from_pipe(input, file, len);
    }
    native::splice_from_pipe(input, file, len)
}

/// Sends up to `count` bytes of `file` from `offset` (advanced) to `out`
/// without passing through user space; `ENOSYS` on the portable path, where
/// the caller reads and writes instead.
pub(crate) fn sendfile(
    out: BorrowedFd<'_>,
    file: &File,
    offset: &mut i64,
    count: usize,
) -> nix::Result<usize> {
    if portable() {
        return portable::sendfile(out, file, offset, count);
    }
    native::sendfile(out, file, offset, count)
}

/// Moves up to `count` bytes of `file` from `offset` (advanced) into the
/// pipe `out`, page by page, without blocking; `ENOSYS` on the portable
/// path.
pub(crate) fn splice_to_pipe(
    file: &File,
    offset: &mut i64,
    out: BorrowedFd<'_>,
    count: usize,
) -> nix::Result<usize> {
    if portable() {
        return portable::splice_to_pipe(file, offset, out, count);
    }
    native::splice_to_pipe(file, offset, out, count)
}

/// Waits at most `timeout` for `fd` to have bytes (or its writers to be
/// gone); whether it has.
pub(crate) fn wait_readable_for(
    fd: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    if portable() {
        return portable::wait_readable_for(fd, timeout);
    }
    native::wait_readable_for(fd, timeout)
}

/// The size of the pipe `fd` in bytes, where the system tells.
pub(crate) fn pipe_capacity(fd: BorrowedFd<'_>) -> Option<usize> {
    if portable() {
        return portable::pipe_capacity(fd);
    }
    native::pipe_capacity(fd)
}

/// Asks for the pipe `fd` to hold `bytes`; returns the size it has now, or
/// `None` where pipes cannot be resized.
pub(crate) fn set_pipe_capacity(fd: BorrowedFd<'_>, bytes: usize) -> nix::Result<usize> {
    if portable() {
        return portable::set_pipe_capacity(fd, bytes);
    }
    native::set_pipe_capacity(fd, bytes)
}

/// A private, non-blocking open file description of the terminal or pipe
/// `fd` refers to, so that writes to it never block and the flag never
/// reaches the other processes sharing `fd`; `None` where there is no way
/// to get one.
pub(crate) fn reopen_nonblocking(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    if portable() {
        return portable::reopen_nonblocking(fd);
    }
    native::reopen_nonblocking(fd)
}

/// Writes what `fd` takes of `buf` now without waiting, and without
/// changing flags shared with other processes; `ENOSYS` where the system
/// cannot.
pub(crate) fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> nix::Result<usize> {
    if portable() {
        return portable::write_nowait(fd, buf);
    }
    native::write_nowait(fd, buf)
}

/// The memory a socket's queued data holds, counting its overhead, and its
/// send buffer's size, where the system tells.
pub(crate) fn send_memory(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    if portable() {
        return portable::send_memory(fd);
    }
    native::send_memory(fd)
}

/// Sets a socket's send buffer past the system's limit for unprivileged
/// processes, where this process may.
pub(crate) fn force_send_buffer(fd: BorrowedFd<'_>, half: i32) -> bool {
    if portable() {
        return portable::force_send_buffer(fd, half);
    }
    native::force_send_buffer(fd, half)
}

/// The `statfs(2)` magic number of the filesystem holding `path`, where the
/// system tells (Linux's `f_type`; other systems name filesystems instead).
pub(crate) fn filesystem_magic(path: &Path) -> Option<u32> {
    if portable() {
        return portable::filesystem_magic(path);
    }
    native::filesystem_magic(path)
}

/// The longest file name, in bytes, that the directory `dir` takes
/// (`statvfs(3)`'s `f_namemax`, POSIX's `NAME_MAX`); `None` where it cannot
/// be asked (no such directory yet) or does not say (0).
pub(crate) fn name_max(dir: &Path) -> Option<usize> {
    let fs = nix::sys::statvfs::statvfs(dir).ok()?;
    usize::try_from(fs.name_max()).ok().filter(|&max| max > 0)
}

/// What unlink(2) asks of a file or a directory besides permission bits:
/// the sticky bit and the owner, and the attributes that forbid removal
/// even to root; with what else one stat tells, so that it is the only
/// one: which file it is, its type and mode, group and size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemovalFacts {
    pub(crate) sticky: bool,
    pub(crate) uid: u32,
    pub(crate) append_only: bool,
    pub(crate) immutable: bool,
    /// Device and inode numbers.
    pub(crate) id: (u64, u64),
    /// `st_mode`: the type and the permission bits.
    pub(crate) mode: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
}

// The calls below answer with the system's own calls on either path:
// there is nothing slower but portable to fall back on, and a wrong answer
// would make a lossless consumer deliver a chunk it then cannot remove.
// Their portable versions serve the systems other than Linux.

/// [`RemovalFacts`] of an open file.
pub(crate) fn removal_facts(file: &File) -> io::Result<RemovalFacts> {
    native::removal_facts(file)
}

/// [`RemovalFacts`] of `path`, following symlinks as unlink(2) does for
/// the directories on the way.
pub(crate) fn removal_facts_at(path: &Path) -> io::Result<RemovalFacts> {
    native::removal_facts_at(path)
}

/// Whether this process may remove other users' files from a sticky
/// directory.
pub(crate) fn overrides_sticky_bit() -> bool {
    native::overrides_sticky_bit()
}

/// Whether the pipe `fd` writes packets (Linux's `O_DIRECT` pipes), which
/// never merge: a fact about the descriptor, whichever path writes to it.
pub(crate) fn packet_mode(fd: BorrowedFd<'_>) -> bool {
    native::packet_mode(fd)
}

/// The device and inode numbers in a `stat`, whose types differ in width
/// and sign across systems.
#[allow(clippy::unnecessary_cast)] // u64 already on Linux
pub(crate) fn file_id(stat: &nix::libc::stat) -> (u64, u64) {
    (stat.st_dev as u64, stat.st_ino as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    /// The alarm's promises, for one implementation: it goes off no sooner
    /// than set, a time set replaces the one before, and setting it from
    /// another thread ends a wait.
    macro_rules! alarm_tests {
        ($name:ident, $alarm:ty) => {
            #[test]
            fn $name() {
                let alarm = <$alarm>::new().unwrap();
                let start = Instant::now();
                alarm.set(Duration::from_millis(20)).unwrap();
                alarm.wait().unwrap();
                assert!(start.elapsed() >= Duration::from_millis(20));

                // A day, replaced by at once, from another thread while
                // this one waits.
                let alarm = Arc::new(alarm);
                alarm.set(Duration::from_secs(86_400)).unwrap();
                let (done, woken) = channel();
                let waiter = Arc::clone(&alarm);
                std::thread::spawn(move || done.send(waiter.wait().unwrap()).unwrap());
                assert!(woken.recv_timeout(Duration::from_millis(50)).is_err());
                alarm.set(Duration::ZERO).unwrap();
                woken.recv_timeout(Duration::from_secs(30)).unwrap();
            }
        };
    }

    alarm_tests!(the_alarm_goes_off_when_set_last, super::Alarm);
    #[cfg(target_os = "linux")]
    alarm_tests!(
        the_portable_alarm_goes_off_when_set_last,
        super::portable::Alarm
    );
}

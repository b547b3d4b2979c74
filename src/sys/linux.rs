//! The Linux calls behind [`crate::sys`]: inotify, `O_TMPFILE` named through
//! `/proc/self/fd`, `fallocate(2)`, `splice(2)`, `sendfile(2)`, pipe sizes,
//! private non-blocking reopens through `/proc`, `RWF_NOWAIT`, socket
//! memory, `statfs(2)` filesystem magic numbers and `statx(2)` file
//! attributes.

use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{
    AT_FDCWD, AtFlags, FallocateFlags, FcntlArg, SpliceFFlags, fallocate, fcntl, splice,
};
use nix::libc;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::linkat;

use super::{Awaited, Interest, NameEvent, RemovalFacts, Seen, SharedMap, Wd};

/// Size of `struct inotify_event` without its trailing name.
const EVENT_HEADER: usize = 16;

/// The largest event: a name of `NAME_MAX` bytes and its NUL.
const LARGEST_EVENT: usize = EVENT_HEADER + libc::NAME_MAX as usize + 1;

/// An inotify instance.
#[derive(Debug)]
pub(crate) struct Events(Inotify);

impl Events {
    pub(super) fn new() -> io::Result<Events> {
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map(Events)
            .map_err(io::Error::from)
    }

    /// Watches the directory `dir` for its own removal or rename and, with
    /// `entries`, for what that wait needs of its entries. Watching it
    /// again changes what is watched; the watch stays the same.
    pub(crate) fn watch_dir(&self, dir: &Path, entries: Option<Awaited>) -> io::Result<Wd> {
        let entry = match entries {
            Some(Awaited::Publication) => AddWatchFlags::IN_MOVED_TO,
            Some(Awaited::Removal) => AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM,
            Some(Awaited::Records) => AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE,
            None => AddWatchFlags::empty(),
        };
        let mask = entry
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        self.add(dir, mask)
    }

    /// Watches the file named `path` (a symbolic link itself, never what
    /// it points to) for its next change of its own, and that one only:
    /// being renamed over or removed changes its link count, which every
    /// publication and removal of a chunk does to the chunk it replaces,
    /// whoever does it; being renamed away moves it. Other entries of its
    /// directory raise nothing on it.
    pub(crate) fn watch_file(&self, path: &Path) -> io::Result<Wd> {
        let mask = AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_DONT_FOLLOW
            | AddWatchFlags::IN_ONESHOT;
        self.add(path, mask)
    }

    /// Watches the file `path` itself for writes (the shared-memory log's
    /// doorbell), not following a symbolic link.
    pub(crate) fn watch_doorbell(&self, path: &Path) -> io::Result<Wd> {
        self.add(
            path,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DONT_FOLLOW,
        )
    }

    /// Watches the directory `dir` for every change to the names in it:
    /// entries made, removed or renamed, and files' attributes (a file
    /// touched in place). Changes to files' contents raise nothing: the
    /// log's doorbell is a write.
    pub(crate) fn watch_names(&self, dir: &Path) -> io::Result<Wd> {
        self.add(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )
    }

    /// Reads every queued event and tells `each` what it says of the
    /// directory watch `wd`.
    pub(crate) fn drain_names(&self, wd: Wd, mut each: impl FnMut(NameEvent<'_>)) {
        let read = self.read_queue(|buf| {
            for_each_event(buf, |event_wd, flags, name| {
                each(name_event(wd, event_wd, flags, name));
            });
        });
        // A failed read: nothing can be vouched for any more.
        if !read {
            each(NameEvent::Lost);
        }
    }

    fn add(&self, path: &Path, mask: AddWatchFlags) -> io::Result<Wd> {
        self.0
            .add_watch(path, mask)
            .map(|wd| wd.as_raw())
            .map_err(io::Error::from)
    }

    /// Gives up the watch `wd` (gone already, it may be: that is no
    /// failure).
    pub(crate) fn unwatch(&self, wd: Wd) {
        // nix gives back watch descriptors only of its own making, and the
        // events name them by number: the call is made directly.
        // SAFETY: inotify_rm_watch(2) takes this instance's descriptor,
        // which `self` keeps open, and a number; it touches no memory.
        unsafe { libc::inotify_rm_watch(self.0.as_fd().as_raw_fd(), wd) };
    }

    /// The descriptor that becomes readable when events are queued.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Reads every queued event, for what they say of the watches in
    /// `interest`.
    pub(crate) fn drain(&self, interest: &Interest<'_>) -> Seen {
        let mut seen = Seen::default();
        // A failed read leaves the wait to its sleep interval, as ever.
        self.read_queue(|buf| seen.add(parse_events(buf, interest)));
        seen
    }

    /// Reads every queued event, handing `each` the buffers read; whether
    /// the queue was read to its end (an empty queue is), not cut short
    /// by a failed read.
    fn read_queue(&self, mut each: impl FnMut(&[u8])) -> bool {
        // Room for many events at once; the kernel returns whole events.
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(self.0.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    each(&buf[..n]);
                    // The kernel stops only at an event that does not fit:
                    // with room for the largest left over, the read took
                    // all that was queued, and asking again would only
                    // say EAGAIN.
                    if buf.len() - n >= LARGEST_EVENT {
                        return true;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                _ => return false,
            }
        }
    }
}

/// Parses `buf`, as read from an inotify descriptor, for what it says of
/// the watches in `interest`. Each event is a `struct inotify_event`
/// (watch descriptor, mask, cookie, name length, in native byte order)
/// followed by that many bytes of name, padded with NULs.
fn parse_events(buf: &[u8], interest: &Interest<'_>) -> Seen {
    let mut seen = Seen::default();
    for_each_event(buf, |wd, flags, event_name| {
        if flags.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            // Events were dropped, any of them about `F`, the one-shot
            // watch's among them.
            seen.relevant = true;
            seen.file_fired = true;
        } else if Some(wd) == interest.dir {
            if flags.intersects(
                AddWatchFlags::IN_IGNORED
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF,
            ) {
                seen.lost_watch = true;
                seen.relevant = true;
            } else if interest.name.is_none_or(|name| event_name == name) {
                seen.relevant = true;
            } else {
                seen.other = true;
            }
        } else if Some(wd) == interest.file {
            seen.file_fired = true;
            seen.relevant = true;
        } else if Some(wd) == interest.doorbell {
            seen.relevant = true;
        } else {
            // A watch given up, or fired before: its last words.
            seen.other = true;
        }
    });
    seen
}

/// Calls `each` with the watch, the flags and the name (empty for none) of
/// every event in `buf`.
fn for_each_event(buf: &[u8], mut each: impl FnMut(Wd, AddWatchFlags, &[u8])) {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + EVENT_HEADER) {
        let field =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let len = field(12) as usize;
        let end = (at + EVENT_HEADER).saturating_add(len).min(buf.len());
        let name = buf[at + EVENT_HEADER..end]
            .split(|&b| b == 0)
            .next()
            .unwrap_or_default();
        each(
            field(0) as Wd,
            AddWatchFlags::from_bits_truncate(field(4)),
            name,
        );
        at = end;
    }
}

/// What one event says of the directory watch `wd`.
fn name_event(wd: Wd, event_wd: Wd, flags: AddWatchFlags, name: &[u8]) -> NameEvent<'_> {
    let gone = AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_UNMOUNT;
    if flags.contains(AddWatchFlags::IN_Q_OVERFLOW) || (event_wd == wd && flags.intersects(gone)) {
        NameEvent::Lost
    } else if event_wd == wd {
        NameEvent::Changed(name)
    } else {
        // Another watch's last words (one given up before).
        NameEvent::Other
    }
}

/// Where `/proc` shows a process its own descriptors, through which an
/// unnamed file gets a name (`linkat` with `AT_EMPTY_PATH` would need a
/// capability).
const PROC_FD: &str = "/proc/self/fd";

pub(super) fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    // Looked at once: /proc is mounted or not for the process's life.
    static PROC_MOUNTED: OnceLock<bool> = OnceLock::new();
    if !*PROC_MOUNTED.get_or_init(|| Path::new(PROC_FD).is_dir()) {
        return Ok(None);
    }
    // Readable too: the shared-memory log copies the chunk from it.
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match opened {
        Ok(file) => Ok(Some(file)),
        // The filesystem (or the kernel) has no unnamed files, which is no
        // error to report.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            log::debug!("no unnamed files in {}: {e}", dir.display());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub(super) fn preallocate(file: &File, len: u64) -> bool {
    let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    match fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, len) {
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => false,
        // Out of space, a zero length, a signal: the writes will tell.
        _ => true,
    }
}

pub(super) fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

pub(super) fn name_unnamed(file: &File, path: &Path) -> io::Result<()> {
    let source = PathBuf::from(format!("{PROC_FD}/{}", file.as_raw_fd()));
    linkat(
        AT_FDCWD,
        &source,
        AT_FDCWD,
        path,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

pub(super) fn splice_from_pipe(
    input: BorrowedFd<'_>,
    file: &File,
    len: usize,
) -> nix::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    splice(input, None, file, None, len, flags)
}

pub(super) fn sendfile(
    out: BorrowedFd<'_>,
    file: &File,
    offset: &mut i64,
    count: usize,
) -> nix::Result<usize> {
    nix::sys::sendfile::sendfile(out, file.as_fd(), Some(offset), count)
}

pub(super) fn splice_to_pipe(
    file: &File,
    offset: &mut i64,
    out: BorrowedFd<'_>,
    count: usize,
) -> nix::Result<usize> {
    splice(
        file,
        Some(offset),
        out,
        None,
        count,
        SpliceFFlags::SPLICE_F_NONBLOCK,
    )
}

/// A one-shot alarm one thread sleeps on and others set: a timer
/// descriptor (`timerfd_create(2)`), which is set with one system call
/// that wakes nobody, where a condition variable's notification wakes the
/// sleeper at once (on a small machine, beside the readers a publication
/// just woke).
#[derive(Debug)]
pub(crate) struct Alarm(TimerFd);

impl Alarm {
    pub(crate) fn new() -> io::Result<Alarm> {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)?;
        Ok(Alarm(timer))
    }

    /// Makes the alarm go off `after` from now (at once for zero), in
    /// place of any time set before.
    pub(crate) fn set(&self, after: std::time::Duration) -> io::Result<()> {
        // A zero time would disarm it.
        let after = after.max(std::time::Duration::from_nanos(1));
        let when = Expiration::OneShot(TimeSpec::from_duration(after));
        Ok(self.0.set(when, TimerSetTimeFlags::empty())?)
    }

    /// Sleeps until the alarm goes off (at once if it went off since the
    /// last wait).
    pub(crate) fn wait(&self) -> io::Result<()> {
        Ok(self.0.wait()?)
    }
}

pub(super) fn wait_readable_for(
    fd: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, ppoll};
    use nix::sys::time::TimeSpec;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn pipe_capacity(fd: BorrowedFd<'_>) -> Option<usize> {
    fcntl(fd, FcntlArg::F_GETPIPE_SZ)
        .ok()
        .and_then(|c| usize::try_from(c).ok())
}

pub(super) fn set_pipe_capacity(fd: BorrowedFd<'_>, bytes: usize) -> nix::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    fcntl(fd, FcntlArg::F_SETPIPE_SZ(want)).map(|got| got as usize)
}

/// Opens a private, non-blocking description of the terminal or pipe `fd`
/// refers to, through `/proc/self/fd`.
pub(super) fn reopen_nonblocking(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let mine = nix::sys::stat::fstat(&file).ok()?;
    let theirs = nix::sys::stat::fstat(fd).ok()?;
    (mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino && mine.st_rdev == theirs.st_rdev)
        .then(|| file.into())
}

/// `pwritev2(fd, buf, -1, RWF_NOWAIT)`: a write that fails with `EAGAIN`
/// rather than wait, without changing flags shared with other processes.
pub(super) fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> nix::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel only reads `buf.len()` bytes from `buf`.
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    Errno::result(n).map(|n| n as usize)
}

/// `SO_MEMINFO`: (memory held by the send buffer, its size).
pub(super) fn send_memory(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` and stores
    // the length it wrote in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 || (len as usize) < 6 * 4 {
        return None;
    }
    let held =
        info[libc::SK_MEMINFO_WMEM_ALLOC as usize].max(info[libc::SK_MEMINFO_WMEM_QUEUED as usize]);
    Some((
        held as usize,
        info[libc::SK_MEMINFO_SNDBUF as usize] as usize,
    ))
}

pub(super) fn force_send_buffer(fd: BorrowedFd<'_>, half: i32) -> bool {
    // SAFETY: the kernel reads one c_int from the pointer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&half as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    r == 0
}

/// The `statfs(2)` magic number (`f_type`) of the filesystem holding `path`.
pub(super) fn filesystem_magic(path: &Path) -> Option<u32> {
    let fs = nix::sys::statfs::statfs(path).ok()?;
    // f_type is a C long; the magic numbers are 32 bits.
    Some(fs.filesystem_type().0 as u32)
}

pub(super) fn removal_facts(file: &File) -> io::Result<RemovalFacts> {
    statx(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

pub(super) fn removal_facts_at(path: &Path) -> io::Result<RemovalFacts> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    statx(libc::AT_FDCWD, &path, 0)
}

/// `statx(2)`, the only stat call that reports file attributes.
fn statx(dirfd: libc::c_int, path: &CStr, flags: libc::c_int) -> io::Result<RemovalFacts> {
    let mut stat = std::mem::MaybeUninit::<libc::statx>::uninit();
    let mask = libc::STATX_BASIC_STATS;
    // SAFETY: statx fills `stat` when it returns 0; the path is
    // NUL-terminated.
    let done = unsafe { libc::statx(dirfd, path.as_ptr(), flags, mask, stat.as_mut_ptr()) };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so `stat` is filled in.
    let stat = unsafe { stat.assume_init() };
    let has = |attribute: libc::c_int| stat.stx_attributes & attribute as u64 != 0;
    Ok(RemovalFacts {
        sticky: u32::from(stat.stx_mode) & libc::S_ISVTX != 0,
        uid: stat.stx_uid,
        append_only: has(libc::STATX_ATTR_APPEND),
        immutable: has(libc::STATX_ATTR_IMMUTABLE),
        id: (
            libc::makedev(stat.stx_dev_major, stat.stx_dev_minor),
            stat.stx_ino,
        ),
        mode: u32::from(stat.stx_mode),
        gid: stat.stx_gid,
        size: stat.stx_size,
    })
}

/// Holding `CAP_FOWNER`: root, unless capabilities were dropped.
pub(super) fn overrides_sticky_bit() -> bool {
    const CAP_FOWNER: u32 = 3;
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let effective = status.as_deref().and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        });
        match effective {
            Some(caps) => caps & (1 << CAP_FOWNER) != 0,
            None => nix::unistd::geteuid().is_root(),
        }
    })
}

pub(super) fn packet_mode(fd: BorrowedFd<'_>) -> bool {
    fcntl(fd, FcntlArg::F_GETFL).is_ok_and(|f| {
        nix::fcntl::OFlag::from_bits_truncate(f).contains(nix::fcntl::OFlag::O_DIRECT)
    })
}

/// Maps the first `len` bytes of `file` shared, registered with the SIGBUS
/// guard.
pub(super) fn map(file: &File, len: usize, writable: bool) -> io::Result<SharedMap> {
    guard::install()?;
    let slot = guard::reserve()
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "too many shared logs mapped"))?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh mapping chosen by the kernel (no address given), of
    // a descriptor we hold; the result is checked before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    match NonNull::new(ptr.cast::<u8>()) {
        Some(p) if ptr != libc::MAP_FAILED => {
            guard::arm(slot, p.as_ptr() as usize, len, writable);
            Ok(SharedMap::new(p, len, writable, slot))
        }
        _ => {
            let e = io::Error::last_os_error();
            guard::release(slot);
            Err(e)
        }
    }
}

pub(super) fn unmap(ptr: NonNull<u8>, len: usize, slot: usize) {
    guard::release(slot);
    // SAFETY: the mapping made by `map`, unmapped once, by its owner's drop.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
}

pub(super) fn guard_hit(slot: usize) -> bool {
    guard::hit(slot)
}

/// The SIGBUS guard. A shared mapping whose file is truncated under it
/// raises SIGBUS on the next access to a page past the file's new end,
/// which kills the process (the classic failure of shared-memory
/// transports). The guard keeps the address ranges of this crate's
/// mappings; a fault inside one replaces that whole mapping by anonymous
/// zero pages (the access then completes and reads zeros, which no header
/// validates) and marks it hit. A fault anywhere else goes to the action
/// that was there before.
mod guard {
    use std::io;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use nix::libc;

    const SLOTS: usize = 64;

    static TAKEN: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
    static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static WRITABLE: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
    static HIT: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
    static PREVIOUS: OnceLock<Result<Previous, i32>> = OnceLock::new();

    /// The action SIGBUS had before the guard.
    struct Previous(libc::sigaction);
    // SAFETY: a plain C struct of a handler address, flags and a mask.
    unsafe impl Send for Previous {}
    // SAFETY: as above; only read after it is set.
    unsafe impl Sync for Previous {}

    pub(super) fn install() -> io::Result<()> {
        let done = PREVIOUS.get_or_init(|| {
            // SAFETY: sigaction with zeroed structs (valid for the C
            // type), a handler that only does async-signal-safe work
            // (atomics, mmap, sigaction).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigbus as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, &action, &mut old) != 0 {
                    return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
                }
                Ok(Previous(old))
            }
        });
        match done {
            Ok(_) => Ok(()),
            Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
        }
    }

    pub(super) fn reserve() -> Option<usize> {
        (0..SLOTS).find(|&i| {
            TAKEN[i]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    pub(super) fn arm(slot: usize, start: usize, len: usize, writable: bool) {
        HIT[slot].store(false, Ordering::Relaxed);
        WRITABLE[slot].store(writable, Ordering::Relaxed);
        LEN[slot].store(len, Ordering::Relaxed);
        START[slot].store(start, Ordering::Release);
    }

    pub(super) fn release(slot: usize) {
        START[slot].store(0, Ordering::Release);
        TAKEN[slot].store(false, Ordering::Release);
    }

    pub(super) fn hit(slot: usize) -> bool {
        HIT[slot].load(Ordering::Acquire)
    }

    extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO.
        let addr = unsafe { (*info).si_addr() } as usize;
        for slot in 0..SLOTS {
            let start = START[slot].load(Ordering::Acquire);
            let len = LEN[slot].load(Ordering::Relaxed);
            if start == 0 || addr < start || addr - start >= len {
                continue;
            }
            let prot = if WRITABLE[slot].load(Ordering::Relaxed) {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            };
            // SAFETY: replaces exactly this crate's own mapping (registered
            // range) with private zero pages of the same protection; the
            // faulting access then completes and reads zeros.
            unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
            }
            HIT[slot].store(true, Ordering::Release);
            return;
        }
        // Not ours: put the previous action back; returning repeats the
        // faulting access, which now meets it.
        if let Some(Ok(Previous(old))) = PREVIOUS.get() {
            // SAFETY: restores the action saved by `install`.
            unsafe {
                libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event as the kernel lays it out: the name NUL-padded to a
    /// multiple of the header size, its length counting the padding.
    fn event(mask: AddWatchFlags, name: &str) -> Vec<u8> {
        let padded = if name.is_empty() {
            0
        } else {
            (name.len() + 1).next_multiple_of(EVENT_HEADER)
        };
        let mut out = Vec::new();
        out.extend_from_slice(&1i32.to_ne_bytes());
        out.extend_from_slice(&mask.bits().to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(padded as u32).to_ne_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(EVENT_HEADER + padded, 0);
        out
    }

    const RELEVANT: Seen = Seen {
        relevant: true,
        lost_watch: false,
        file_fired: false,
        other: false,
    };
    const LOST: Seen = Seen {
        relevant: true,
        lost_watch: true,
        file_fired: false,
        other: true,
    };
    const OTHER: Seen = Seen {
        relevant: false,
        lost_watch: false,
        file_fired: false,
        other: true,
    };

    /// The directory's watch is 1 (as [`event`] numbers its events).
    fn in_dir(name: Option<&[u8]>) -> Interest<'_> {
        Interest {
            dir: Some(1),
            name,
            file: None,
            doorbell: None,
        }
    }

    #[test]
    fn an_event_naming_the_file_is_relevant() {
        for mask in [AddWatchFlags::IN_MOVED_TO, AddWatchFlags::IN_DELETE] {
            assert_eq!(
                parse_events(&event(mask, "bus"), &in_dir(Some(b"bus"))),
                RELEVANT
            );
        }
        // A 15-byte name and its one NUL fill the 16 bytes of padding.
        let long = "fifteen-bytes.x";
        assert_eq!(long.len(), 15);
        assert_eq!(
            parse_events(
                &event(AddWatchFlags::IN_MOVED_TO, long),
                &in_dir(Some(long.as_bytes()))
            ),
            RELEVANT
        );
    }

    #[test]
    fn events_about_other_names_are_not() {
        for other in ["bus.__new__", "bus.lock", "bu", "bus2", "BUS"] {
            let seen = parse_events(
                &event(AddWatchFlags::IN_MOVED_TO, other),
                &in_dir(Some(b"bus")),
            );
            assert_eq!(seen, OTHER, "{other}");
        }
        assert_eq!(parse_events(&[], &in_dir(Some(b"bus"))), Seen::default());
    }

    #[test]
    fn without_a_name_every_entry_is() {
        for any in ["alpha", "bus", ".generation"] {
            let seen = parse_events(&event(AddWatchFlags::IN_MOVED_TO, any), &in_dir(None));
            assert_eq!(seen, RELEVANT, "{any}");
        }
    }

    #[test]
    fn the_file_is_found_among_several_events() {
        let mut buf = event(AddWatchFlags::IN_CREATE, "bus.__new__");
        buf.extend(event(AddWatchFlags::IN_MOVED_FROM, "bus.__new__"));
        buf.extend(event(AddWatchFlags::IN_MOVED_TO, "bus"));
        buf.extend(event(AddWatchFlags::IN_CREATE, "other"));
        let seen = parse_events(&buf, &in_dir(Some(b"bus")));
        assert_eq!(
            seen,
            Seen {
                other: true,
                ..RELEVANT
            }
        );
        assert_eq!(parse_events(&buf, &in_dir(Some(b"absent"))), OTHER);
    }

    #[test]
    fn losing_the_watch_is_reported() {
        for mask in [
            AddWatchFlags::IN_IGNORED,
            AddWatchFlags::IN_DELETE_SELF,
            AddWatchFlags::IN_MOVE_SELF,
        ] {
            let mut buf = event(AddWatchFlags::IN_CREATE, "other");
            buf.extend(event(mask, ""));
            assert_eq!(parse_events(&buf, &in_dir(Some(b"bus"))), LOST, "{mask:?}");
        }
    }

    #[test]
    fn a_queue_overflow_may_hide_the_file_but_keeps_the_watch() {
        let buf = event(AddWatchFlags::IN_Q_OVERFLOW, "");
        let seen = parse_events(&buf, &in_dir(Some(b"bus")));
        assert_eq!(
            seen,
            Seen {
                file_fired: true,
                ..RELEVANT
            }
        );
    }

    #[test]
    fn any_event_of_the_file_watch_is_relevant_and_ends_it() {
        let interest = Interest {
            dir: Some(2),
            name: Some(b"bus"),
            file: Some(1),
            doorbell: None,
        };
        for mask in [
            AddWatchFlags::IN_ATTRIB,
            AddWatchFlags::IN_DELETE_SELF,
            AddWatchFlags::IN_MOVE_SELF,
            AddWatchFlags::IN_IGNORED,
        ] {
            let seen = parse_events(&event(mask, ""), &interest);
            assert_eq!(
                seen,
                Seen {
                    file_fired: true,
                    ..RELEVANT
                },
                "{mask:?}"
            );
        }
        // The last words of a watch given up are no news.
        let given_up = Interest {
            file: Some(3),
            ..interest
        };
        assert_eq!(
            parse_events(&event(AddWatchFlags::IN_IGNORED, ""), &given_up),
            OTHER
        );
    }

    #[test]
    fn a_watched_file_replaced_or_removed_fires_once_and_neighbours_never() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        std::fs::write(&bus, b"one").unwrap();
        let events = Events::new().unwrap();
        let dir_wd = events.watch_dir(dir.path(), None).unwrap();
        let interest = |file| Interest {
            dir: Some(dir_wd),
            name: Some(b"bus"),
            file: Some(file),
            doorbell: None,
        };
        let file = events.watch_file(&bus).unwrap();
        let replace = |name: &str| {
            let staged = dir.path().join(format!("{name}.__new__"));
            std::fs::write(&staged, b"x").unwrap();
            std::fs::rename(&staged, dir.path().join(name)).unwrap();
        };
        replace("neighbour");
        assert_eq!(events.drain(&interest(file)), Seen::default());
        replace("bus");
        let seen = events.drain(&interest(file));
        assert!(seen.relevant && seen.file_fired, "{seen:?}");
        // One shot: the next replacement raises nothing on it.
        replace("bus");
        assert_eq!(events.drain(&interest(file)), Seen::default());
        let file = events.watch_file(&bus).unwrap();
        std::fs::remove_file(&bus).unwrap();
        let seen = events.drain(&interest(file));
        assert!(seen.relevant && seen.file_fired, "{seen:?}");
    }

    #[test]
    fn preallocation_allocates_without_changing_the_size() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().unwrap();
        assert!(
            preallocate(&file, 8192),
            "no fallocate in the temporary directory"
        );
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 0);
        assert!(meta.blocks() * 512 >= 8192, "{} blocks", meta.blocks());
    }

    #[test]
    fn a_drain_reads_past_a_full_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::new().unwrap();
        let wd = events
            .watch_dir(dir.path(), Some(Awaited::Publication))
            .unwrap();
        let interest = Interest {
            dir: Some(wd),
            name: Some(b"bus"),
            file: None,
            doorbell: None,
        };
        // Far more than one read's buffer of events about other names,
        // with the one about `F` last.
        let long = "x".repeat(200);
        for i in 0..100 {
            let from = dir.path().join(format!("{long}{i}.new"));
            std::fs::write(&from, b"").unwrap();
            std::fs::rename(&from, dir.path().join(format!("{long}{i}"))).unwrap();
        }
        std::fs::write(dir.path().join("bus.__new__"), b"").unwrap();
        std::fs::rename(dir.path().join("bus.__new__"), dir.path().join("bus")).unwrap();
        assert_eq!(
            events.drain(&interest),
            Seen {
                other: true,
                ..RELEVANT
            }
        );
        assert_eq!(events.drain(&interest), Seen::default());
    }

    #[test]
    fn truncated_events_are_read_safely() {
        let mut buf = event(AddWatchFlags::IN_MOVED_TO, "other");
        buf.extend(event(AddWatchFlags::IN_MOVED_TO, "bus"));
        for cut in 0..buf.len() {
            // Up to the second event's name, nothing names the file.
            let seen = parse_events(&buf[..cut], &in_dir(Some(b"bus")));
            let whole = cut >= 2 * EVENT_HEADER + EVENT_HEADER + 3;
            assert_eq!(seen.relevant, whole, "cut at {cut}");
            assert!(!seen.lost_watch);
        }
        // A length field pointing far past the end.
        let mut huge = event(AddWatchFlags::IN_MOVED_TO, "bus");
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse_events(&huge, &in_dir(Some(b"bus"))), RELEVANT);
    }
}

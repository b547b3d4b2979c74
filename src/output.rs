//! Delivering a chunk file to the consumer's output.
//!
//! Two concerns live here. Copying: a chunk goes from its file to the output
//! without a buffer per chunk, whole pages with `splice(2)` or `sendfile(2)`
//! so that those bytes never pass through user space. Room: a lossless
//! consumer must hold the bus lock while it delivers (the chunk is removed
//! only after it was written), yet must never hold the lock while blocked
//! on its reader, and must never leave a chunk half written: a chunk
//! written in part can neither be removed (it was not delivered) nor left
//! for another consumer (it would arrive twice, the first time torn). So
//! under the lock [`Output::has_room`] says whether the output can take the
//! whole chunk now, and [`Output::try_copy_from`] writes all of it or
//! nothing; if not, [`Output::wait_for_room`] waits without the lock.
//!
//! How much an output can take is known in the kernel's own terms:
//!
//! * **Pipes** have a number of buffer slots (16 by default), not a number
//!   of bytes. `write(2)` packs a small write into the last slot when it
//!   fits there, while a spliced page takes a slot of its own however few
//!   bytes it holds. So a chunk goes in as `write(2)` would put it (but for
//!   the whole pages of a chunk of 64 KiB or more, or of a chunk of whole
//!   pages, which are spliced), and [`Pipe`] follows, slot by slot, what
//!   this process put in the pipe and what the reader took out
//!   (`FIONREAD`). A write of at most a page is all or nothing in the
//!   kernel, so such chunks are simply tried; a larger one is written only
//!   when the slots it needs are free. A pipe too small for a chunk is
//!   grown (`F_SETPIPE_SZ`). Writes go through a private non-blocking open
//!   file description of the pipe (reopened through `/proc/self/fd`, so the
//!   flag never reaches the other processes sharing it); failing that,
//!   through `pwritev2(..., RWF_NOWAIT)`, without splicing, since on Linux
//!   6.18 a pipe description that was spliced into refuses `RWF_NOWAIT`
//!   (`EOPNOTSUPP`) from then on.
//! * **Sockets** take skbs while the memory they hold (`SO_MEMINFO`, which
//!   counts their overhead) is below the send buffer. A Unix stream socket
//!   puts a write of up to `min(SO_SNDBUF / 2 - 64, 32 KiB)` bytes in one
//!   skb, all or nothing, so such chunks are simply tried
//!   (`MSG_DONTWAIT`); a larger one waits until its bytes plus a page and a
//!   half of overhead per skb fit (measured on Linux 6.18: 768 bytes to
//!   1.1 KiB per skb). A send buffer too small for a chunk is grown
//!   (`SO_SNDBUFFORCE` for a privileged consumer, else `SO_SNDBUF` up to
//!   `net.core.wmem_max`).
//! * **Terminals** say nothing about their room: `TIOCOUTQ` is always 0 on
//!   a pseudo-terminal, whose buffer took 11 to 21 KiB here depending on the
//!   write sizes, and a write to it is cut wherever the buffer ends. A
//!   terminal is written through a private non-blocking descriptor
//!   (reopened through `/proc/self/fd` too), after it said it is writable
//!   (`POLLOUT`): a terminal that takes nothing, such as one stopped with
//!   XOFF (Ctrl-S), leaves the lock free.
//! * Files and other devices do not wait for a reader and are written
//!   with `sendfile(2)`.
//!
//! What cannot be guaranteed, and then waits for the reader while holding
//! the lock, the chunk being finished rather than torn:
//!
//! * a terminal that stops reading in the middle of a chunk (the first
//!   bytes were taken; the consumer waits until it takes the rest);
//! * a pipe or socket that another process writes into at the same time:
//!   its bytes can take the room this process counted on;
//! * a chunk larger than the output can be grown to hold (a pipe beyond
//!   `fs.pipe-max-size` without privilege, a socket beyond its maximum
//!   send buffer): it is written once the output is empty, and waits if the
//!   reader stops before it took the whole chunk;
//! * a socket other than a Unix stream socket (TCP, datagrams), or one
//!   whose memory cannot be read (no `SO_MEMINFO`): it is written as a
//!   terminal is, once it says it is writable;
//! * a terminal or pipe that cannot be written without blocking (no
//!   `/proc`, and no `RWF_NOWAIT` for a pipe): it is written as a file is.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, is_gone};
use crate::sys;

nix::ioctl_read_bad!(fionread, libc::FIONREAD, libc::c_int);

/// Bytes queued in a pipe (written, not yet read), or `None` if `fd` cannot
/// tell.
pub(crate) fn queued_bytes(fd: BorrowedFd<'_>) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    unsafe { fionread(fd.as_raw_fd(), &mut queued) }.ok()?;
    usize::try_from(queued).ok()
}

/// Whether `fd` is a pipe (or FIFO).
pub(crate) fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// The largest piece read into user space at once, and the largest chunk
/// written to a pipe with one `write(2)` rather than spliced page by page.
const BUF: usize = 64 * 1024;

/// How long a wait for room first pauses when the output gives no event to
/// wait for; the pause doubles up to the polling interval.
const FIRST_PAUSE: Duration = Duration::from_micros(50);

/// Per skb, what a socket's send buffer may hold beyond the data (the
/// socket buffer itself and the head's rounding to its allocation size).
fn skb_overhead(page: usize) -> usize {
    page + page / 2
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system and touches no memory.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096).max(512)
}

/// A consumer's output descriptor, with what is known about its room.
///
/// Learning the kind costs system calls, and a pipe's room is known
/// exactly only by following what was written into it, so a consumer that
/// delivers many chunks to one descriptor makes one `Output` and passes it
/// to [`crate::Consumer::deliver`] each time.
///
/// A lossless consumer writes a chunk only once the output can take all of
/// it without blocking: pipes and Unix stream sockets by their buffers in
/// the kernel's own terms (pipe slots, socket memory), growing them for a
/// chunk too large; terminals and other sockets once they say they are
/// writable, through a non-blocking write. It then waits for the reader
/// while holding the bus lock only when: a terminal or other socket stops
/// taking bytes in the middle of a chunk; another process writes into the
/// same pipe or socket at the same time; a chunk is larger than the output
/// can be grown to hold (it is written once the output is empty); or the
/// output cannot be written without blocking at all (no `/proc` for a
/// terminal, no `/proc` and no `RWF_NOWAIT` for a pipe). A chunk is never
/// left half written.
#[derive(Debug)]
pub struct Output<'a> {
    fd: BorrowedFd<'a>,
    kind: Kind,
    /// How to write without blocking.
    nowait: NoWait,
    page: usize,
    /// `splice(2)` from chunk files into the pipe works.
    splice_works: bool,
    sendfile_works: bool,
    /// The output last refused a chunk it was expected to take: the next
    /// wait first waits for a sign of progress.
    refused: bool,
    /// The current pause of a wait that has no event to wait for.
    pause: Duration,
}

#[derive(Debug)]
enum Kind {
    Pipe(Pipe),
    Socket(Socket),
    /// A terminal, or a socket other than a Unix stream socket (or whose
    /// memory cannot be read): writable without blocking, of unknown room.
    Unmeasured,
    /// A file or a device that does not wait for a reader.
    Other,
}

#[derive(Debug)]
enum NoWait {
    /// `pwritev2(..., RWF_NOWAIT)` on the descriptor itself.
    Flag,
    /// A private non-blocking open file description of the same terminal
    /// or pipe.
    Private(OwnedFd),
    /// Writes may block.
    Unavailable,
}

/// What this process knows of the buffer slots of its output pipe.
#[derive(Debug)]
struct Pipe {
    /// Slots the pipe has (`F_GETPIPE_SZ` is their number times the page
    /// size).
    slots: usize,
    /// The write end is in packet mode (`O_DIRECT`): writes never merge.
    packets: bool,
    /// The slots holding what this process wrote, oldest first, while the
    /// pipe holds nothing else; `None` when it holds bytes of unknown
    /// layout (there before this process looked, or written by another
    /// process).
    layout: Option<VecDeque<Slot>>,
    /// Bytes in `layout`; with no layout, at least the bytes queued.
    bytes: usize,
    /// The largest size the pipe was asked to grow to.
    asked: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    len: usize,
    /// Where the slot's bytes end in its page: a write merges into the
    /// last slot only if its bytes still fit in that page.
    end: usize,
    /// An anonymous page written by `write(2)`; spliced pages never merge.
    merges: bool,
}

/// How a chunk goes into a pipe and how many new slots it takes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Bytes at the start of the chunk moved by `splice(2)`, page by page.
    spliced: usize,
    slots: usize,
}

impl Pipe {
    fn new(fd: BorrowedFd<'_>, page: usize) -> Self {
        let capacity = sys::pipe_capacity(fd).unwrap_or(16 * page);
        let packets = sys::packet_mode(fd);
        let mut pipe = Pipe {
            slots: capacity / page,
            packets,
            layout: None,
            bytes: 0,
            asked: 0,
        };
        pipe.sync(fd);
        pipe
    }

    /// Catches up with what the reader took.
    fn sync(&mut self, fd: BorrowedFd<'_>) {
        let Some(queued) = queued_bytes(fd) else {
            self.lose_track();
            return;
        };
        match &mut self.layout {
            _ if queued == 0 => {
                self.layout = Some(VecDeque::new());
                self.bytes = 0;
            }
            Some(layout) if queued <= self.bytes => {
                let mut taken = self.bytes - queued;
                while taken > 0 {
                    let front = layout.front_mut().expect("bytes are in slots");
                    if front.len <= taken {
                        taken -= front.len;
                        layout.pop_front();
                    } else {
                        front.len -= taken;
                        taken = 0;
                    }
                }
                self.bytes = queued;
            }
            // More than this process wrote: someone else writes here too.
            _ => {
                self.layout = None;
                self.bytes = queued;
            }
        }
    }

    fn lose_track(&mut self) {
        self.layout = None;
    }

    /// Slots in use, at most.
    fn used(&self) -> usize {
        match &self.layout {
            Some(layout) => layout.len(),
            // Every slot holds at least one byte.
            None => self.bytes.min(self.slots),
        }
    }

    fn plan(&self, size: usize, page: usize, splice_works: bool) -> Plan {
        let (pages, rest) = (size / page, size % page);
        if splice_works && (rest == 0 || size >= BUF) {
            // The rest, written after spliced pages, cannot merge into one.
            return Plan {
                spliced: pages * page,
                slots: pages + usize::from(rest > 0),
            };
        }
        let merges = size <= BUF && self.merges(rest, page);
        Plan {
            spliced: 0,
            slots: pages + usize::from(rest > 0 && !merges),
        }
    }

    /// Whether a write of `size % page == rest` bytes merges its first
    /// `rest` bytes into the last slot, as `pipe_write` does.
    fn merges(&self, rest: usize, page: usize) -> bool {
        rest > 0
            && !self.packets
            && self
                .layout
                .as_ref()
                .and_then(VecDeque::back)
                .is_some_and(|last| last.merges && last.end + rest <= page)
    }

    fn fits(&self, plan: Plan) -> bool {
        self.used() + plan.slots <= self.slots
    }

    /// Records a `write(2)` of `n` bytes that the pipe took whole.
    fn wrote(&mut self, n: usize, page: usize) {
        let (pages, rest) = (n / page, n % page);
        let merges = self.merges(rest, page);
        let anonymous = !self.packets;
        self.bytes += n;
        let Some(layout) = &mut self.layout else {
            return;
        };
        if merges && let Some(last) = layout.back_mut() {
            last.len += rest;
            last.end += rest;
        }
        let full = Slot {
            len: page,
            end: page,
            merges: anonymous,
        };
        layout.extend(std::iter::repeat_n(full, pages));
        if rest > 0 && !merges {
            layout.push_back(Slot {
                len: rest,
                end: rest,
                merges: anonymous,
            });
        }
    }

    /// Records `n` bytes spliced from offset `from` of a file: a slot per
    /// page of the file they span, none of which merges.
    fn spliced(&mut self, from: usize, n: usize, page: usize) {
        self.bytes += n;
        let Some(layout) = &mut self.layout else {
            return;
        };
        let mut left = n;
        let mut in_page = from % page;
        while left > 0 {
            let len = left.min(page - in_page);
            in_page = 0;
            layout.push_back(Slot {
                len,
                end: len,
                merges: false,
            });
            left -= len;
        }
    }

    /// Whether a chunk of `size` bytes can go in whole now, by what is
    /// known of the pipe (grown for it first).
    fn room_for(&mut self, fd: BorrowedFd<'_>, size: usize, page: usize, splice: bool) -> bool {
        let plan = self.plan(size, page, splice);
        self.grow(fd, plan.slots, page);
        // A write of up to a page is all or nothing: unless the known
        // layout says no, the kernel is asked.
        let small = size <= page && self.layout.is_none();
        small || self.fits(plan) || (plan.slots > self.slots && self.used() == 0)
    }

    /// Grows the pipe to hold `slots`, once per size asked for.
    fn grow(&mut self, fd: BorrowedFd<'_>, slots: usize, page: usize) {
        if slots <= self.slots || slots <= self.asked {
            return;
        }
        self.asked = slots;
        match sys::set_pipe_capacity(fd, slots * page) {
            Ok(got) => self.slots = got / page,
            Err(e) => log::debug!("cannot grow the output pipe to {} bytes: {e}", slots * page),
        }
    }
}

/// What this process knows of its output socket's send buffer: a Unix
/// stream socket, whose skbs are sized by known rules.
#[derive(Debug)]
struct Socket {
    sndbuf: usize,
    /// Memory the send buffer holds, at most: as last read, plus the
    /// estimate of what this process sent since.
    used: usize,
    /// The largest size the buffer was asked to grow to.
    asked: usize,
}

fn int_sockopt(fd: BorrowedFd<'_>, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes one c_int into `value`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(value)
}

/// The address family of the socket `fd`, from its own address (POSIX;
/// `SO_DOMAIN` would say it in one call, but only Linux and FreeBSD have it).
fn socket_family(fd: BorrowedFd<'_>) -> Option<libc::c_int> {
    let mut address = std::mem::MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `address`.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), address.as_mut_ptr().cast(), &mut len) };
    // SAFETY: zeroed storage is a valid sockaddr_storage, filled in or not.
    let address = unsafe { address.assume_init() };
    (r == 0).then(|| libc::c_int::from(address.ss_family))
}

fn set_int_sockopt(fd: BorrowedFd<'_>, option: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: the kernel reads one c_int from `value`.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

impl Socket {
    /// `None` for a socket of another kind, or whose memory cannot be read.
    fn new(fd: BorrowedFd<'_>) -> Option<Self> {
        let unix_stream = socket_family(fd) == Some(libc::AF_UNIX)
            && int_sockopt(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM);
        if !unix_stream {
            return None;
        }
        let (used, sndbuf) = sys::send_memory(fd)?;
        Some(Socket {
            sndbuf,
            used,
            asked: 0,
        })
    }

    fn sync(&mut self, fd: BorrowedFd<'_>) {
        if let Some((used, sndbuf)) = sys::send_memory(fd) {
            self.used = used;
            self.sndbuf = sndbuf;
        }
    }

    /// The smallest skb a write is cut into, but for its last one.
    fn segment(&self) -> usize {
        (self.sndbuf / 2).saturating_sub(64).clamp(1, 32 * 1024)
    }

    /// Whether one write of `size` bytes is one skb: taken whole as long
    /// as the buffer is not full, or refused whole.
    fn atomic(&self, size: usize) -> bool {
        size <= self.segment()
    }

    /// Send-buffer memory a chunk of `size` bytes takes at most, written
    /// in pieces of at most [`BUF`] bytes.
    fn cost(&self, size: usize, page: usize) -> usize {
        let skbs = size.div_ceil(self.segment()) + size.div_ceil(BUF);
        size + skbs * skb_overhead(page)
    }

    fn fits(&self, size: usize, page: usize) -> bool {
        if self.atomic(size) {
            // The kernel's own test before it allocates an skb.
            return self.used < self.sndbuf;
        }
        let cost = self.cost(size, page);
        if cost > self.sndbuf {
            // Never fits: the best there is, an empty buffer.
            return self.used == 0;
        }
        self.used + cost <= self.sndbuf
    }

    fn sent(&mut self, n: usize, page: usize) {
        self.used += self.cost(n, page);
    }

    /// Grows the send buffer to hold a chunk of `size` bytes.
    fn grow(&mut self, fd: BorrowedFd<'_>, size: usize, page: usize) {
        let cost = self.cost(size, page);
        if self.atomic(size) || cost <= self.sndbuf || cost <= self.asked {
            return;
        }
        self.asked = cost;
        // The kernel doubles the value asked for; SO_SNDBUF caps it at
        // net.core.wmem_max, and so may shrink a buffer forced larger.
        let half = libc::c_int::try_from(cost.div_ceil(2)).unwrap_or(libc::c_int::MAX);
        let grows = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .is_some_and(|max| max.min(half as usize) * 2 > self.sndbuf);
        if !sys::force_send_buffer(fd, half) && grows {
            set_int_sockopt(fd, libc::SO_SNDBUF, half);
        }
        self.sync(fd);
        log::debug!("output socket send buffer: {} bytes", self.sndbuf);
    }
}

/// `send(fd, buf, MSG_DONTWAIT)`.
fn send_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> nix::Result<usize> {
    // SAFETY: the kernel only reads `buf.len()` bytes from `buf`.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// Why a chunk did not reach the output whole.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Reading the chunk file failed, or it ended before its size, after
    /// `written` bytes of it had gone to the output.
    Read {
        /// The reason; `UnexpectedEof` for a file shorter than its size.
        source: io::Error,
        /// Bytes already delivered: with none, nothing is torn and the
        /// consumer may look again.
        written: u64,
    },
    /// Writing to the output failed.
    Write(io::Error),
}

impl CopyError {
    fn short(got: usize, size: usize, written: usize) -> Self {
        CopyError::Read {
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the chunk ended after {got} of its {size} bytes"),
            ),
            written: written as u64,
        }
    }

    fn read(source: io::Error, written: usize) -> Self {
        CopyError::Read {
            source,
            written: written as u64,
        }
    }

    /// Whether nothing went out and the chunk file went stale (replaced or
    /// removed through another client of a network filesystem): then
    /// nothing is torn and the consumer may look again. Other read errors
    /// would fail the same way for ever.
    pub(crate) fn stale_before_output(&self) -> bool {
        matches!(self, CopyError::Read { source, written: 0 } if is_gone(source.raw_os_error()))
    }

    /// The error to report for the chunk file at `path`: reading it is the
    /// input side ('cannot read F'), whatever the output did.
    pub(crate) fn at(self, path: &Path) -> Error {
        match self {
            CopyError::Read { source, .. } => Error::io("read", path)(source),
            CopyError::Write(source) => Error::Output(source),
        }
    }
}

/// Reads a whole chunk of `size` bytes into memory (nothing goes out until
/// it is all there, so a failure tears nothing).
pub(crate) fn read_whole(file: &File, size: u64) -> Result<Vec<u8>, CopyError> {
    // Sized from `size` only up to a bound: a size that does not fit in
    // memory is then an error as the reads go, instead of an abort.
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let mut data = Vec::new();
    data.try_reserve_exact(size)
        .map_err(|e| CopyError::read(io::Error::new(io::ErrorKind::OutOfMemory, e), 0))?;
    data.resize(size, 0);
    let got = read_at(file, &mut data, 0).map_err(|e| CopyError::read(e, 0))?;
    if got < size {
        return Err(CopyError::short(got, size, 0));
    }
    Ok(data)
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the
/// file.
fn read_at(file: &File, buf: &mut [u8], offset: usize) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], (offset + got) as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<'a> Output<'a> {
    /// Describes `fd` (a file, pipe, socket or terminal) as it is now.
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        let page = page_size();
        let mode = nix::sys::stat::fstat(fd).map_or(0, |st| st.st_mode & libc::S_IFMT);
        let (kind, nowait) = match mode {
            // Without its size, a pipe's room cannot be counted: the
            // portable path writes it as a file.
            libc::S_IFIFO if sys::pipe_capacity(fd).is_none() => (Kind::Other, NoWait::Unavailable),
            libc::S_IFIFO => {
                let pipe = Pipe::new(fd, page);
                // A description reopened without O_DIRECT would not write
                // packets.
                let private = (!pipe.packets)
                    .then(|| sys::reopen_nonblocking(fd))
                    .flatten();
                let nowait = match private {
                    Some(private) => NoWait::Private(private),
                    None if sys::write_nowait(fd, &[]).is_ok() => NoWait::Flag,
                    None => NoWait::Unavailable,
                };
                (Kind::Pipe(pipe), nowait)
            }
            libc::S_IFSOCK => (
                Socket::new(fd).map_or(Kind::Unmeasured, Kind::Socket),
                NoWait::Flag,
            ),
            libc::S_IFCHR if nix::unistd::isatty(fd).unwrap_or(false) => {
                match sys::reopen_nonblocking(fd) {
                    Some(private) => (Kind::Unmeasured, NoWait::Private(private)),
                    None => (Kind::Other, NoWait::Unavailable),
                }
            }
            _ => (Kind::Other, NoWait::Unavailable),
        };
        log::debug!("output: {kind:?}, {nowait:?}");
        // Splicing into a pipe turns RWF_NOWAIT off for good on that open
        // file description (EOPNOTSUPP from then on, on Linux 6.18).
        let splice_works = !matches!(nowait, NoWait::Flag);
        Output {
            fd,
            kind,
            nowait,
            page,
            splice_works,
            sendfile_works: true,
            refused: false,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether a chunk of `size` bytes can be written whole without
    /// blocking now (for a chunk that the output can never hold whole:
    /// whether the output is empty). Never waits: a lossless consumer asks
    /// under the bus lock, where the chunk's size is known, and if not,
    /// releases the lock and calls [`Output::wait_for_room`].
    pub(crate) fn has_room(&mut self, size: usize) -> bool {
        if size == 0 {
            // An end marker writes nothing.
            return true;
        }
        let (fd, page, splice_works) = (self.fd, self.page, self.splice_works);
        // After a refusal, only a sign from the kernel that the reader took
        // something is worth another try.
        let retry = |refused: bool| !refused || writable_now(fd);
        // Since the last look only the reader acted, which frees room: the
        // output is looked at again (FIONREAD, SO_MEMINFO) only when what
        // is known does not make room enough.
        let ready = match &mut self.kind {
            Kind::Pipe(pipe) => {
                (pipe.room_for(fd, size, page, splice_works) || {
                    pipe.sync(fd);
                    pipe.room_for(fd, size, page, splice_works)
                }) && retry(self.refused)
            }
            Kind::Socket(socket) => {
                socket.grow(fd, size, page);
                (socket.fits(size, page) || {
                    socket.sync(fd);
                    socket.fits(size, page)
                }) && retry(self.refused)
            }
            // A terminal may say it is writable and take nothing (one
            // stopped with XOFF): after a refusal, the wait pauses first.
            Kind::Unmeasured => !self.refused && writable_now(fd),
            Kind::Other => true,
        };
        if ready || broken(fd) {
            // A broken output is written to, to learn why.
            self.refused = false;
            return true;
        }
        false
    }

    /// Waits a little, holding no lock, for the reader to take something
    /// (see [`Output::has_room`]); the caller then looks again whether the
    /// chunk it waited for is still the one to write.
    pub(crate) fn wait_for_room(&mut self, interval: Duration) {
        self.wait_progress(interval);
        if matches!(self.kind, Kind::Unmeasured) {
            // Paused: worth another try.
            self.refused = false;
        }
    }

    /// Under the lock: writes the whole of `file` (`size` bytes from its
    /// start) to the output and returns `true`, or writes nothing and
    /// returns `false` when the output cannot take it now without
    /// blocking. Only the cases the module comment lists make it wait for
    /// the reader, and then it finishes the chunk rather than tear it.
    pub(crate) fn try_copy_from(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError> {
        if matches!(self.kind, Kind::Other) {
            self.copy_from(file, size)?;
            return Ok(true);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let (fd, page, splice_works) = (self.fd, self.page, self.splice_works);
        let fits = match &mut self.kind {
            Kind::Pipe(pipe) => {
                // The pipe was measured before the lock was taken, and only
                // the reader, which frees slots, acted since: look again
                // only if that is not enough.
                let fits = |pipe: &Pipe| {
                    let plan = pipe.plan(size, page, splice_works);
                    size <= page || pipe.fits(plan) || (plan.slots > pipe.slots && pipe.used() == 0)
                };
                fits(pipe) || {
                    pipe.sync(fd);
                    fits(pipe)
                }
            }
            Kind::Socket(socket) => {
                socket.fits(size, page) || {
                    socket.sync(fd);
                    socket.fits(size, page)
                }
            }
            Kind::Unmeasured | Kind::Other => true,
        };
        if !fits && !broken(fd) {
            return Ok(false);
        }
        let taken = self.transfer(file, size, true)?;
        if taken {
            self.pause = FIRST_PAUSE;
        } else {
            self.refused = true;
        }
        Ok(taken)
    }

    /// Copies the whole of `file` (`size` bytes from its start) to the
    /// output, waiting for the reader as long as it takes.
    ///
    /// `sendfile(2)` cannot say which side an error came from (`EIO` may be
    /// either), so after any error it cannot handle, the rest of the chunk
    /// goes through `pread` and `write`, which can: a chunk file that went
    /// stale or unreadable (a network filesystem) is then told apart from a
    /// failing output.
    /// Writes `bytes`, a whole chunk already read, waiting for the reader
    /// as long as it takes.
    pub(crate) fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), CopyError> {
        self.pause = FIRST_PAUSE;
        self.write_all(bytes, false)
            .map(drop)
            .map_err(CopyError::Write)
    }

    pub(crate) fn copy_from(&mut self, file: &mut File, size: u64) -> Result<(), CopyError> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        self.pause = FIRST_PAUSE;
        if matches!(self.kind, Kind::Pipe(_)) {
            return self.transfer(file, size, false).map(drop);
        }
        let mut offset: libc::off_t = 0;
        let mut sendfile = self.sendfile_works;
        let done = |offset: libc::off_t| usize::try_from(offset).unwrap_or(usize::MAX);
        while done(offset) < size && sendfile {
            let count = (size - done(offset)).min(1 << 30);
            match sys::sendfile(self.fd, file, &mut offset, count) {
                // The file ends early: the reads below say so.
                Ok(0) => sendfile = false,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait_writable(),
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) if offset == 0 => {
                    self.sendfile_works = false;
                    sendfile = false;
                }
                Err(_) => sendfile = false,
            }
        }
        let mut done = done(offset);
        let mut buf = [0u8; BUF];
        while done < size {
            let n = read_at(file, &mut buf[..(size - done).min(BUF)], done)
                .map_err(|e| CopyError::read(e, done))?;
            if n == 0 {
                return Err(CopyError::short(done, size, done));
            }
            self.write_all(&buf[..n], false).map_err(CopyError::Write)?;
            done += n;
        }
        Ok(())
    }

    /// Writes the chunk: pages spliced into a pipe as planned, the rest
    /// read and written in pieces. With `give_up`, returns `false` having
    /// written nothing if the output takes nothing; once a byte is written
    /// the rest follows, waiting if need be.
    ///
    /// A splice error cannot say which side it came from either: as in
    /// [`Output::copy_from`], the rest then goes through `pread` and
    /// `write`, which tell a failing chunk file from a failing output.
    fn transfer(&mut self, file: &File, size: usize, give_up: bool) -> Result<bool, CopyError> {
        let page = self.page;
        let spliced = match &self.kind {
            Kind::Pipe(pipe) => pipe.plan(size, page, self.splice_works).spliced,
            _ => 0,
        };
        let mut done = 0;
        let mut offset: i64 = 0;
        while done < spliced {
            let target = match &self.nowait {
                NoWait::Private(private) => private.as_fd(),
                _ => self.fd,
            };
            match sys::splice_to_pipe(file, &mut offset, target, spliced - done) {
                // The file ends early: the reads below say so.
                Ok(0) => {
                    self.lost_track();
                    break;
                }
                Ok(n) => {
                    if let Kind::Pipe(pipe) = &mut self.kind {
                        pipe.spliced(done, n, page);
                    }
                    done += n;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if done == 0 && give_up => {
                    self.lost_track();
                    return Ok(false);
                }
                Err(Errno::EAGAIN) => {
                    self.lost_track();
                    self.wait_writable();
                }
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) if done == 0 => {
                    // Chunk files that cannot be spliced are written; the
                    // room needed is counted anew for that.
                    self.splice_works = false;
                    if give_up {
                        return Ok(false);
                    }
                    return self.transfer(file, size, give_up);
                }
                Err(_) => {
                    // The pages left are written instead of spliced: a
                    // layout the model did not plan.
                    self.lost_track();
                    break;
                }
            }
        }
        let mut buf = [0u8; BUF];
        while done < size {
            let n = read_at(file, &mut buf[..(size - done).min(BUF)], done)
                .map_err(|e| CopyError::read(e, done))?;
            if n == 0 {
                return Err(CopyError::short(done, size, done));
            }
            if !self
                .write_all(&buf[..n], give_up && done == 0)
                .map_err(CopyError::Write)?
            {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    /// Writes all of `buf`; with `give_up`, returns `false` having written
    /// nothing if the output takes nothing.
    fn write_all(&mut self, buf: &[u8], give_up: bool) -> io::Result<bool> {
        let mut rest = buf;
        while !rest.is_empty() {
            let written = match (&self.nowait, &self.kind) {
                (NoWait::Flag, Kind::Socket(_) | Kind::Unmeasured) => send_nowait(self.fd, rest),
                (NoWait::Flag, _) => sys::write_nowait(self.fd, rest),
                (NoWait::Private(fd), _) => nix::unistd::write(fd, rest),
                (NoWait::Unavailable, _) => nix::unistd::write(self.fd, rest),
            };
            match written {
                Ok(n) => {
                    let page = self.page;
                    match &mut self.kind {
                        // Only a whole write(2) has a layout to follow.
                        Kind::Pipe(pipe) if n == rest.len() && rest.len() == buf.len() => {
                            pipe.wrote(n, page)
                        }
                        Kind::Pipe(pipe) => {
                            pipe.lose_track();
                            pipe.bytes += n;
                        }
                        Kind::Socket(socket) => socket.sent(n, page),
                        _ => {}
                    }
                    rest = &rest[n..];
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if give_up && rest.len() == buf.len() => {
                    self.lost_track();
                    return Ok(false);
                }
                Err(Errno::EAGAIN) => {
                    self.lost_track();
                    self.wait_writable();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The output refused bytes its room was counted for: someone else
    /// writes into it too.
    fn lost_track(&mut self) {
        if let Kind::Pipe(pipe) = &mut self.kind {
            pipe.lose_track();
        }
    }

    /// Waits for a sign that the reader took something: the output turning
    /// writable (for at most `interval`), or, if it already is (it has some
    /// room, but not enough), a pause that doubles up to `interval`.
    fn wait_progress(&mut self, interval: Duration) {
        if writable_now(self.fd) {
            std::thread::sleep(self.pause);
            self.pause = (self.pause * 2).min(interval.max(FIRST_PAUSE));
            return;
        }
        let timeout = PollTimeout::try_from(interval.max(Duration::from_millis(1)))
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd, PollFlags::POLLOUT)];
        let _ = poll(&mut fds, timeout);
    }

    /// Waits, as long as it takes, until an output that refused bytes
    /// takes more: in the middle of a chunk, or for a consumer that holds
    /// no lock.
    fn wait_writable(&mut self) {
        if writable_now(self.fd) {
            // Writable yet refusing (a stopped terminal): pause instead.
            std::thread::sleep(self.pause);
            self.pause = (self.pause * 2).min(Duration::from_millis(100));
            return;
        }
        let mut fds = [PollFd::new(self.fd, PollFlags::POLLOUT)];
        let _ = poll(&mut fds, PollTimeout::NONE);
    }
}

/// What `poll(2)` says of `fd` as an output right now.
fn poll_now(fd: BorrowedFd<'_>) -> PollFlags {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0].revents().unwrap_or(PollFlags::empty()),
        _ => PollFlags::empty(),
    }
}

/// Whether `fd` says it can take a write now (for a pipe: a free slot; for
/// a Unix socket: three quarters of its buffer free; for a terminal: room),
/// or that writing will fail.
fn writable_now(fd: BorrowedFd<'_>) -> bool {
    poll_now(fd).intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
}

/// Whether the reader of `fd` is gone: a write fails at once (and ends the
/// consumer quietly, as `cat` ends, by SIGPIPE).
fn broken(fd: BorrowedFd<'_>) -> bool {
    poll_now(fd).intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_chunk_file_shorter_than_its_size_is_an_error() {
        let sink = tempfile::tempfile().unwrap();
        let result = Output::new(sink.as_fd()).copy_from(&mut chunk_file(50), 100);
        match result {
            Err(CopyError::Read { source, written }) => {
                assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
                assert_eq!(written, 50);
            }
            other => panic!("a 50-byte file delivered as a 100-byte chunk: {other:?}"),
        }
        assert!(matches!(
            read_whole(&chunk_file(50), 100),
            Err(CopyError::Read { written: 0, .. })
        ));
        // Into a pipe (the slot model's path) too.
        let (_read, write) = pipe();
        let result = Output::new(write.as_fd()).copy_from(&mut chunk_file(50), 100);
        assert!(
            matches!(result, Err(CopyError::Read { written: 50, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn read_and_write_errors_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        std::fs::write(&path, [1u8; 100]).unwrap();
        // Unreadable chunk (opened for writing only): an input-side error,
        // with nothing delivered.
        let mut unreadable = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let sink = tempfile::tempfile().unwrap();
        let result = Output::new(sink.as_fd()).copy_from(&mut unreadable, 100);
        assert!(
            matches!(result, Err(CopyError::Read { written: 0, .. })),
            "{result:?}"
        );
        let err = result.unwrap_err().at(&path).to_string();
        assert!(err.starts_with("cannot read "), "{err}");
        // The same into a pipe, where splice fails instead of sendfile.
        let (_read, write) = pipe();
        let result = Output::new(write.as_fd()).try_copy_from(&mut unreadable, 100);
        assert!(
            matches!(result, Err(CopyError::Read { written: 0, .. })),
            "{result:?}"
        );
        // Unwritable output (opened for reading only): an output error.
        let readonly = File::open(&path).unwrap();
        let result = Output::new(readonly.as_fd()).copy_from(&mut File::open(&path).unwrap(), 100);
        assert!(matches!(result, Err(CopyError::Write(_))), "{result:?}");
        let err = result.unwrap_err().at(&path).to_string();
        assert!(err.starts_with("cannot write output: "), "{err}");
    }

    #[test]
    fn only_a_stale_chunk_with_nothing_delivered_is_looked_at_again() {
        let stale = |written| CopyError::Read {
            source: io::Error::from_raw_os_error(libc::ESTALE),
            written,
        };
        assert!(stale(0).stale_before_output());
        assert!(!stale(2).stale_before_output());
        let eio = CopyError::Read {
            source: io::Error::from_raw_os_error(libc::EIO),
            written: 0,
        };
        assert!(!eio.stale_before_output());
        assert!(
            !CopyError::Write(io::Error::from_raw_os_error(libc::ESTALE)).stale_before_output()
        );
    }

    #[test]
    fn whole_chunks_are_copied() {
        let sink = tempfile::tempfile().unwrap();
        let mut file = chunk_file(70_000);
        Output::new(sink.as_fd())
            .copy_from(&mut file, 70_000)
            .unwrap();
        assert_eq!(sink.metadata().unwrap().len(), 70_000);
        assert_eq!(read_whole(&file, 70_000).unwrap().len(), 70_000);
    }

    fn chunk_file(size: usize) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![b'c'; size]).unwrap();
        file
    }

    fn pipe() -> (File, OwnedFd) {
        let (read, write) = std::io::pipe().unwrap();
        (File::from(OwnedFd::from(read)), OwnedFd::from(write))
    }

    fn model<'o>(output: &'o Output<'_>) -> &'o Pipe {
        match &output.kind {
            Kind::Pipe(pipe) => pipe,
            other => panic!("not a pipe: {other:?}"),
        }
    }

    /// Slots the kernel has free, found by filling them with whole pages
    /// (a write of a page never merges), which it then reads back out.
    fn free_slots(read: &mut File, write: &OwnedFd) -> usize {
        let nonblocking = sys::reopen_nonblocking(write.as_fd()).unwrap();
        let page = vec![0u8; page_size()];
        let mut free = 0;
        while nix::unistd::write(&nonblocking, &page).is_ok() {
            free += 1;
        }
        let mut sink = vec![0u8; 1 << 20];
        while queued_bytes(read.as_fd()).unwrap() > 0 {
            let _ = read.read(&mut sink).unwrap();
        }
        free
    }

    /// Writes chunks of `sizes` as a consumer does (room first, then the
    /// chunk), reading `reads[i]` bytes after the i-th, and checks after
    /// each that the model counts exactly the slots the kernel uses.
    fn follow(sizes: &[usize], reads: &[usize], splice: bool) {
        let (mut read, write) = pipe();
        let mut out = Output::new(write.as_fd());
        if !splice {
            out.nowait = NoWait::Flag;
            out.splice_works = false;
        }
        for (i, &size) in sizes.iter().enumerate() {
            assert!(out.has_room(size), "room for chunk {i}");
            assert!(
                out.try_copy_from(&mut chunk_file(size), size as u64)
                    .unwrap(),
                "chunk {i} of {size} bytes refused"
            );
            let mut buf = vec![0u8; reads.get(i).copied().unwrap_or(0)];
            read.read_exact(&mut buf).unwrap();
        }
        // What the reader took last.
        if let Kind::Pipe(pipe) = &mut out.kind {
            pipe.sync(write.as_fd());
        }
        let (counted, slots) = (model(&out).used(), model(&out).slots);
        assert!(
            model(&out).layout.is_some(),
            "lost track of a pipe written alone"
        );
        drop(out);
        assert_eq!(
            counted,
            slots - free_slots(&mut read, &write),
            "{sizes:?} {reads:?}"
        );
    }

    /// Whether pipes are modelled: not on the portable path, which knows no
    /// pipe sizes and writes a pipe as it writes a file (checked here).
    fn pipes_modelled() -> bool {
        if !sys::portable() {
            return true;
        }
        let (_read, write) = pipe();
        assert!(matches!(Output::new(write.as_fd()).kind, Kind::Other));
        false
    }

    #[test]
    fn the_model_counts_the_slots_the_kernel_uses() {
        if !pipes_modelled() {
            return;
        }
        for splice in [true, false] {
            follow(&[1, 511, 4096, 4097, 3000, 100, 2000], &[], splice);
            follow(&[4097; 10], &[], splice);
            follow(&[512; 30], &[], splice);
            follow(&[3000, 3000, 1000, 96, 1], &[], splice);
            follow(&[70_000], &[], splice);
        }
    }

    #[test]
    fn the_model_follows_partial_reads() {
        if !pipes_modelled() {
            return;
        }
        // A small xorshift with a fixed seed: the same mixes every run.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for round in 0..40 {
            let sizes: Vec<usize> = (0..12)
                .map(|_| [1, 100, 511, 4095, 4096, 4097, 9000][next(7)])
                .collect();
            // Read at most what is queued: up to half of what this round
            // wrote so far.
            let mut queued = 0;
            let reads: Vec<usize> = sizes
                .iter()
                .map(|&s| {
                    queued += s;
                    let r = next(queued / 2 + 1);
                    queued -= r;
                    r
                })
                .collect();
            for end in 1..=sizes.len() {
                follow(&sizes[..end], &reads[..end], round % 2 == 0);
            }
        }
    }

    /// How many chunks of `size` a pipe nobody reads takes.
    fn fill(size: usize, splice: bool) -> usize {
        let (_read, write) = pipe();
        let mut out = Output::new(write.as_fd());
        if !splice {
            out.nowait = NoWait::Flag;
            out.splice_works = false;
        }
        let mut file = chunk_file(size);
        let mut taken = 0;
        while out.has_room(size) {
            assert!(out.try_copy_from(&mut file, size as u64).unwrap());
            taken += 1;
        }
        // Whether the model or the kernel says so, the next one is refused.
        assert!(!out.try_copy_from(&mut file, size as u64).unwrap());
        taken
    }

    #[test]
    fn a_pipe_nobody_reads_takes_what_write_would_put_in_it() {
        if !pipes_modelled() {
            return;
        }
        for splice in [true, false] {
            assert_eq!(fill(511, splice), 128);
            assert_eq!(fill(4096, splice), 16);
            assert_eq!(fill(4097, splice), 10);
            assert_eq!(fill(1, splice), 65536);
        }
    }
}

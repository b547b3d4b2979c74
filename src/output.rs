//! Delivering a chunk file to the consumer's output.
//!
//! Two concerns live here. Copying: a chunk goes from its file to the output
//! with `sendfile(2)`, so the bytes never pass through user space and no
//! buffer is allocated per chunk. Room: a lossless consumer must hold the bus
//! lock while it delivers (the chunk is removed only after it was written),
//! yet must never hold the lock while blocked on its reader. When the output
//! is a pipe, [`Output::wait_for_room`] waits, without the lock, until the
//! pipe can take the whole chunk, so the write under the lock cannot block.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

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

/// A consumer's output descriptor, with what is known about its kind.
///
/// Learning the kind costs system calls, so a consumer that delivers many
/// chunks to one descriptor makes one `Output` and passes it to
/// [`crate::Consumer::deliver`] each time.
#[derive(Debug)]
pub struct Output<'a> {
    fd: BorrowedFd<'a>,
    /// `Some(capacity)` when the output is a pipe.
    pipe_capacity: Option<usize>,
    sendfile_works: bool,
}

impl<'a> Output<'a> {
    /// Describes `fd` (a file, pipe, socket or terminal) as it is now.
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        let pipe_capacity = is_pipe(fd)
            .then(|| fcntl(fd, FcntlArg::F_GETPIPE_SZ).ok())
            .flatten()
            .and_then(|c| usize::try_from(c).ok());
        Output {
            fd,
            pipe_capacity,
            sendfile_works: true,
        }
    }

    /// Bytes the output can take right now without blocking, or `None` when
    /// that cannot be known (not a pipe).
    fn room(&self) -> Option<usize> {
        let capacity = self.pipe_capacity?;
        Some(capacity.saturating_sub(queued_bytes(self.fd)?))
    }

    /// Whether `size` bytes can be written without blocking. Outputs of
    /// unknown kind answer yes: files and devices do not wait for a reader.
    pub(crate) fn has_room(&mut self, size: usize) -> bool {
        if let Some(capacity) = self.pipe_capacity
            && size > capacity
        {
            self.grow(size);
        }
        match (self.room(), self.pipe_capacity) {
            // A chunk larger than the pipe can ever hold is written under
            // the lock anyway; waiting would never end.
            (Some(room), Some(capacity)) => room >= size || size > capacity,
            _ => true,
        }
    }

    fn grow(&mut self, size: usize) {
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        if let Ok(got) = fcntl(self.fd, FcntlArg::F_SETPIPE_SZ(want)) {
            self.pipe_capacity = usize::try_from(got).ok();
        }
    }

    /// Waits, without any lock, until `size` bytes fit in the output. The
    /// wait backs off up to `interval`, since a pipe signals writability as
    /// soon as one page is free, which may be less than a chunk.
    pub(crate) fn wait_for_room(&mut self, size: usize, interval: Duration) {
        let mut pause = Duration::from_micros(50);
        while !self.has_room(size) {
            std::thread::sleep(pause);
            pause = (pause * 2).min(interval);
        }
    }

    /// Copies the whole of `file` (`size` bytes from its start) to the
    /// output.
    pub(crate) fn copy_from(&mut self, file: &mut File, size: u64) -> io::Result<()> {
        let mut left = size;
        let mut offset: libc::off_t = 0;
        while left > 0 && self.sendfile_works {
            let count = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
            match nix::sys::sendfile::sendfile(self.fd, file.as_fd(), Some(&mut offset), count) {
                // The file shrank under us: chunk files are immutable, so
                // only a hostile neighbour does this; deliver what there is.
                Ok(0) => return Ok(()),
                Ok(n) => left -= n as u64,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait_writable()?,
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) if offset == 0 => {
                    self.sendfile_works = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if left == 0 {
            return Ok(());
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                match nix::unistd::write(self.fd, rest) {
                    Ok(w) => rest = &rest[w..],
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => self.wait_writable()?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// Blocks until an output that was opened non-blocking by someone else
    /// accepts bytes again.
    fn wait_writable(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.fd, PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

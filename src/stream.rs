//! Feeding a whole byte stream, such as standard input, into a producer.
//!
//! Most input is cut by a [`Chunker`] and copied through its buffer. Byte-mode
//! input from a pipe takes a shorter path: `splice(2)` moves the bytes the
//! pipe already holds straight into the staging file, saving one copy of
//! every byte through user space. Only bytes already queued in the pipe
//! are moved (the pipe is asked how much it holds, `FIONREAD`, and the
//! splice is `SPLICE_F_NONBLOCK`), so that on a filesystem without unnamed
//! files, where the splice runs under the bus lock, it never waits for the
//! writer. Knowing the size also tells a splice cut short by the file (its
//! size limit, a full disk) from a pipe that held no more, and gives the
//! size of the blocks to allocate before writing (lossy, on a disk).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::chunker::{Chunker, FdSource, ReadAhead};
use crate::error::{Error, Result};
use crate::options::Chunking;
use crate::output::{is_pipe, queued_bytes};
use crate::publish::Producer;
use crate::sys;

/// How much input a producer with the shared-memory log reads at once, at
/// least: a pipe's default capacity, so that small chunks cost one read of
/// the input per many of them.
const READ_AHEAD: usize = 64 << 10;
/// ... and at most: a larger block size reads a block at a time.
const MAX_READ_AHEAD: usize = 1 << 20;

impl Producer {
    /// Publishes everything `input` yields until its end, in chunks of at
    /// most [`crate::ProducerOptions::block_size`] bytes cut as
    /// [`crate::ProducerOptions::chunking`] says; each chunk goes out as
    /// soon as the input has no more bytes ready. Does not end the stream:
    /// call [`Producer::finish`] for that.
    pub fn publish_stream(&mut self, input: impl AsFd) -> Result<()> {
        let (chunking, block_size) = (self.options().chunking, self.options().block_size);
        let source = FdSource(input.as_fd());
        source.enlarge_pipe(block_size);
        if self.may_use_log() && !self.retains() {
            let source = ReadAhead::new(source, READ_AHEAD.max(block_size.min(MAX_READ_AHEAD)));
            let mut chunker = Chunker::new(source, chunking, block_size);
            let published = self.publish_through_log(&mut chunker, input.as_fd());
            // The last chunk read reaches the log's readers and `F`
            // whatever stopped the stream.
            self.ring_owed_doorbell();
            let settled = self.settle_deferred();
            return published.and(settled);
        }
        // With a log (and retained history), chunks go into the log from
        // memory, one by one: splicing would put them in a file first.
        if !self.may_use_log()
            && chunking == Chunking::Bytes
            && sys::splices_input()
            && is_pipe(input.as_fd())
        {
            return self.splice_from_pipe(input.as_fd(), block_size);
        }
        let mut chunker = Chunker::new(source, chunking, block_size);
        while let Some(chunk) = chunker.next_chunk().map_err(Error::Input)? {
            self.publish(chunk)?;
        }
        Ok(())
    }

    fn splice_from_pipe(&mut self, input: BorrowedFd<'_>, block_size: usize) -> Result<()> {
        loop {
            let hung_up = wait_readable(input).map_err(Error::Input)?;
            let ready = queued_bytes(input).unwrap_or(0);
            if ready == 0 {
                if hung_up {
                    return Ok(());
                }
                continue;
            }
            let len = ready.min(block_size);
            let published = self.publish_with(len, |file| {
                let mut moved = 0;
                // A splice that moves less than the pipe held was cut short
                // by the file (its size limit, a full disk): the next one
                // says why, rather than the chunk going out short.
                while moved < len {
                    match sys::splice_from_pipe(input, file, len - moved) {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => moved += n,
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if moved == 0 {
                    // Another reader of the same pipe took the bytes; an
                    // empty chunk would read as an end marker, so publish
                    // nothing.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match published {
                Err(e) if e.io_kind() == Some(io::ErrorKind::WouldBlock) => {}
                other => other?,
            }
        }
    }
}

/// Blocks until `fd` has bytes or its writers are gone; reports the latter.
fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                return Ok(revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

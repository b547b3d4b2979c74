//! Feeding a whole byte stream, such as standard input, into a producer.
//!
//! Most input is cut by a [`Chunker`] and copied through its buffer. Byte-mode
//! input from a pipe takes a shorter path: `splice(2)` moves the bytes the
//! pipe already holds straight into the staging file, saving one copy of
//! every byte through user space. Only bytes already queued in the pipe
//! are moved (`SPLICE_F_NONBLOCK`: one call moves what is there, up to the
//! block size, or says that nothing is), so that on a filesystem without
//! unnamed files, where the splice runs under the bus lock, it never waits
//! for the writer. The pipe is asked how much it holds (`FIONREAD`) only
//! where the producer allocates a chunk's blocks before writing it (lossy,
//! on a disk), which needs the size first.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::chunker::{Chunker, FdSource};
use crate::error::{Error, Result};
use crate::options::Chunking;
use crate::output::{is_pipe, queued_bytes};
use crate::publish::Producer;
use crate::sys;

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
        if chunking == Chunking::Bytes && sys::splices_input() && is_pipe(input.as_fd()) {
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
            wait_readable(input).map_err(Error::Input)?;
            // The size is wanted only to allocate the chunk's blocks.
            let len = if self.preallocates() {
                queued_bytes(input).unwrap_or(block_size).min(block_size)
            } else {
                block_size
            };
            let mut ended = false;
            let published = self.publish_with(len, |file| {
                loop {
                    // One call moves all the pipe holds, up to the block.
                    match sys::splice_from_pipe(input, file, block_size) {
                        Ok(0) => {
                            // The writers are gone and the pipe is empty;
                            // an empty chunk would read as an end marker.
                            ended = true;
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        Ok(_) => return Ok(()),
                        // Another reader of the same pipe took the bytes.
                        Err(Errno::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            });
            match published {
                Err(e) if e.io_kind() == Some(io::ErrorKind::WouldBlock) => {}
                other => other?,
            }
            if ended {
                return Ok(());
            }
        }
    }
}

/// Blocks until `fd` has bytes or its writers are gone.
fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

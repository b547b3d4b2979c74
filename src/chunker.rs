//! Cutting a producer's input stream into chunks.
//!
//! A chunk is published as soon as the input has no more bytes ready, the
//! block is full, or input ended: batching comes from what is already
//! buffered, never from waiting (the Python original waits a full sleep
//! interval after the last byte, which is where its latency comes from).
//! Line mode, the bash original's behaviour, additionally never splits a line
//! unless that line alone exceeds the block size.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Where chunk boundaries may fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// Any byte boundary; bytes are never interpreted (the Python peer's way).
    #[default]
    Bytes,
    /// Newline boundaries; a line longer than the block size is split (the
    /// bash peer's way).
    Lines,
}

/// A byte stream that can also say whether a read would return at once.
pub trait Source {
    /// Reads into `buf`, blocking until at least one byte or end of input.
    /// Returns 0 only at end of input.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether a read would return without blocking.
    fn ready(&mut self) -> io::Result<bool>;
}

/// A [`Source`] over a file descriptor such as standard input.
///
/// Readiness comes from `poll(2)`, so the descriptor's `O_NONBLOCK` flag is
/// left as it is: changing it would affect every process sharing the open
/// file description. A descriptor that is already non-blocking still works.
#[derive(Debug)]
pub struct FdSource<F: AsFd>(pub F);

impl<F: AsFd> FdSource<F> {
    fn poll_in(&self, timeout: PollTimeout) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(n) => return Ok(n > 0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl<F: AsFd> Source for FdSource<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let fd: BorrowedFd<'_> = self.0.as_fd();
            match nix::unistd::read(fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    self.poll_in(PollTimeout::NONE)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn ready(&mut self) -> io::Result<bool> {
        self.poll_in(PollTimeout::ZERO)
    }
}

/// Splits a [`Source`] into chunks of at most `block_size` bytes.
///
/// Memory use is one buffer of `block_size` bytes, allocated once.
#[derive(Debug)]
pub struct Chunker<S> {
    source: S,
    mode: Chunking,
    buf: Vec<u8>,
    filled: usize,
    /// Bytes at the front of `buf` handed out by the previous call.
    handed_out: usize,
    /// One past the last newline in `buf[..filled]`, in line mode.
    line_end: Option<usize>,
    eof: bool,
}

impl<S: Source> Chunker<S> {
    /// A chunker; `block_size` must be at least 1.
    pub fn new(source: S, mode: Chunking, block_size: usize) -> Self {
        Chunker {
            source,
            mode,
            buf: vec![0; block_size.max(1)],
            filled: 0,
            handed_out: 0,
            line_end: None,
            eof: false,
        }
    }

    /// The next chunk, or `None` once input has ended and everything read
    /// has been handed out. Never returns an empty chunk.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.discard_handed_out();
        loop {
            let full = self.filled == self.buf.len();
            if full || self.eof {
                let cut = match (self.mode, self.line_end) {
                    (Chunking::Lines, Some(end)) if !self.eof => end,
                    _ => self.filled,
                };
                return Ok(self.hand_out(cut));
            }
            let have_chunk = match self.mode {
                Chunking::Bytes => self.filled > 0,
                Chunking::Lines => self.line_end.is_some(),
            };
            if have_chunk && !self.source.ready()? {
                let cut = self.line_end.unwrap_or(self.filled);
                return Ok(self.hand_out(cut));
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let start = self.filled;
        let n = self.source.read(&mut self.buf[start..])?;
        if n == 0 {
            self.eof = true;
            return Ok(());
        }
        self.filled += n;
        if self.mode == Chunking::Lines
            && let Some(i) = self.buf[start..self.filled]
                .iter()
                .rposition(|&b| b == b'\n')
        {
            self.line_end = Some(start + i + 1);
        }
        Ok(())
    }

    fn hand_out(&mut self, cut: usize) -> Option<&[u8]> {
        if cut == 0 {
            return None;
        }
        self.handed_out = cut;
        Some(&self.buf[..cut])
    }

    fn discard_handed_out(&mut self) {
        if self.handed_out == 0 {
            return;
        }
        self.buf.copy_within(self.handed_out..self.filled, 0);
        self.filled -= self.handed_out;
        self.handed_out = 0;
        // The cut was at the last newline (or the buffer was full of one
        // line), so no newline remains in the carried-over bytes.
        self.line_end = None;
    }
}

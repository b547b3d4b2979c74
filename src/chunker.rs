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

use crate::options::Chunking;
use crate::sys;

/// A byte stream that can also say whether a read would return at once.
pub trait Source {
    /// Reads into `buf`, blocking until at least one byte or end of input.
    /// Returns 0 only at end of input.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether a read would return without blocking.
    fn ready(&mut self) -> io::Result<bool>;
    /// Whether a read that returned less than asked leaves nothing ready,
    /// so that a chunker need not ask [`Source::ready`] then. `false`
    /// unless a source says so.
    fn drained_by_short_read(&self) -> bool {
        false
    }
}

/// A [`Source`] over a file descriptor such as standard input.
///
/// Readiness comes from `poll(2)`, so the descriptor's `O_NONBLOCK` flag is
/// left as it is: changing it would affect every process sharing the open
/// file description. A descriptor that is already non-blocking still works.
#[derive(Debug)]
pub struct FdSource<F: AsFd>(pub F);

impl<F: AsFd> FdSource<F> {
    /// When the descriptor is a pipe smaller than `block_size`, asks the
    /// kernel to enlarge it (best effort: the system caps unprivileged pipe
    /// sizes). A pipe that holds a whole block lets the writer queue one, so
    /// chunks come out full instead of cut at the pipe's default 64 KiB.
    pub fn enlarge_pipe(&self, block_size: usize) {
        let fd = self.0.as_fd();
        let Some(current) = sys::pipe_capacity(fd) else {
            return;
        };
        if block_size > current
            && let Err(e) = sys::set_pipe_capacity(fd, block_size)
        {
            log::debug!("cannot enlarge the input pipe to {block_size} bytes: {e}");
        }
    }

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

    /// A pipe, socket or terminal hands out all it holds, and a file that
    /// returned less was at its end: one system call less between an
    /// isolated message and its chunk.
    fn drained_by_short_read(&self) -> bool {
        true
    }
}

/// A [`Source`] that reads ahead: each read of the source it wraps asks for
/// up to `capacity` bytes, and smaller reads are served from what it holds.
/// A producer that appends many small chunks to the shared-memory log reads
/// its input once per many chunks this way instead of once per chunk. It
/// is ready while it holds bytes, and like its source otherwise.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    source: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read of the source came back short from a source that then
    /// has nothing ready ([`Source::drained_by_short_read`]).
    drained: bool,
}

impl<S: Source> ReadAhead<S> {
    pub(crate) fn new(source: S, capacity: usize) -> Self {
        ReadAhead {
            source,
            buf: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
            drained: false,
        }
    }
}

impl<S: Source> Source for ReadAhead<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            let n = self.source.read(&mut self.buf)?;
            self.drained = n < self.buf.len() && self.source.drained_by_short_read();
            (self.start, self.end) = (0, n);
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }

    fn ready(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        // Until the next read: what came since is found by that read.
        if self.drained {
            return Ok(false);
        }
        self.source.ready()
    }
}

/// The buffer a chunker starts with (when the block size is larger): the
/// default capacity of a pipe, so that small streams never reallocate.
const FIRST_BUFFER: usize = 64 * 1024;

/// Splits a [`Source`] into chunks of at most `block_size` bytes.
///
/// Memory follows the data: the buffer starts small and doubles each time
/// input fills it, up to `block_size`, so a huge block size costs nothing
/// until that much input arrives at once. When the buffer cannot grow
/// (memory is short), the chunk is cut at what it holds, as if the block
/// were full.
#[derive(Debug)]
pub struct Chunker<S> {
    source: S,
    mode: Chunking,
    block_size: usize,
    /// All of it is initialised (zeros at first); its length only grows.
    buf: Vec<u8>,
    filled: usize,
    /// Bytes at the front of `buf` handed out by the previous call.
    handed_out: usize,
    /// One past the last newline in `buf[..filled]`, in line mode.
    line_end: Option<usize>,
    eof: bool,
    /// The last read returned less than asked from a source that then has
    /// nothing ready ([`Source::drained_by_short_read`]).
    drained: bool,
}

impl<S: Source> Chunker<S> {
    /// A chunker; `block_size` must be at least 1.
    pub fn new(source: S, mode: Chunking, block_size: usize) -> Self {
        let block_size = block_size.max(1);
        Chunker {
            source,
            mode,
            block_size,
            buf: vec![0; block_size.min(FIRST_BUFFER)],
            filled: 0,
            handed_out: 0,
            line_end: None,
            eof: false,
            drained: false,
        }
    }

    /// The next chunk, or `None` once input has ended and everything read
    /// has been handed out. Never returns an empty chunk.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.cut(None::<&mut dyn FnMut() -> io::Result<()>>, |e| e)
    }

    /// Whether the source has bytes ready to read.
    fn ready(&mut self) -> io::Result<bool> {
        if std::mem::take(&mut self.drained) {
            return Ok(false);
        }
        self.source.ready()
    }

    /// [`Chunker::next_chunk`], calling `idle` first whenever it has to
    /// wait for input (a producer with a chunk to settle does it then);
    /// errors of the input become `E` through `input`.
    pub(crate) fn next_chunk_or<E>(
        &mut self,
        idle: &mut dyn FnMut() -> Result<(), E>,
        input: fn(io::Error) -> E,
    ) -> Result<Option<&[u8]>, E> {
        self.cut(Some(idle), input)
    }

    fn cut<E>(
        &mut self,
        mut idle: Option<&mut dyn FnMut() -> Result<(), E>>,
        input: fn(io::Error) -> E,
    ) -> Result<Option<&[u8]>, E> {
        self.discard_handed_out();
        loop {
            let full = self.filled == self.buf.len() && (self.eof || !self.grow());
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
            if have_chunk && !self.ready().map_err(input)? {
                let cut = self.line_end.unwrap_or(self.filled);
                return Ok(self.hand_out(cut));
            }
            if let Some(idle) = idle.as_mut()
                && !self.ready().map_err(input)?
            {
                idle()?;
            }
            self.fill().map_err(input)?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let start = self.filled;
        let asked = self.buf.len() - start;
        let n = self.source.read(&mut self.buf[start..])?;
        self.drained = n < asked && self.source.drained_by_short_read();
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

    /// Makes room for more input, up to the block size; false when the
    /// buffer is a whole block already or memory is short.
    fn grow(&mut self) -> bool {
        let len = self.buf.len();
        if len == self.block_size {
            return false;
        }
        let new_len = len.saturating_mul(2).min(self.block_size);
        if let Err(e) = self.buf.try_reserve_exact(new_len - len) {
            log::debug!("publishing {len} bytes: no memory for {new_len}: {e}");
            return false;
        }
        self.buf.resize(new_len, 0);
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A source replaying pieces of input; each piece is flagged with whether
    /// it is already available when the previous one has been read.
    struct Scripted(VecDeque<(Vec<u8>, bool)>);

    impl Source for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((mut piece, _)) = self.0.pop_front() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front((piece.split_off(n), true));
            }
            Ok(n)
        }
        fn ready(&mut self) -> io::Result<bool> {
            Ok(self.0.front().is_none_or(|(_, ready)| *ready))
        }
    }

    fn chunks(mode: Chunking, block: usize, pieces: &[(&[u8], bool)]) -> Vec<Vec<u8>> {
        let source = Scripted(pieces.iter().map(|(p, r)| (p.to_vec(), *r)).collect());
        let mut chunker = Chunker::new(source, mode, block);
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            out.push(chunk.to_vec());
        }
        out
    }

    /// Deterministic pseudo-random pieces (text with newlines, varying
    /// lengths and arrival patterns), so the property tests cover many shapes
    /// without a random-number dependency.
    fn pieces(seed: u64, count: usize) -> Vec<(Vec<u8>, bool)> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        (0..count)
            .map(|_| {
                let len = 1 + next() % 300;
                let bytes = (0..len)
                    .map(|_| {
                        if next() % 17 == 0 {
                            b'\n'
                        } else {
                            b'a' + (next() % 26) as u8
                        }
                    })
                    .collect();
                (bytes, next() % 3 != 0)
            })
            .collect()
    }

    fn check_properties(mode: Chunking, block: usize, seed: u64, count: usize) {
        let input = pieces(seed, count);
        let borrowed: Vec<(&[u8], bool)> = input.iter().map(|(p, r)| (p.as_slice(), *r)).collect();
        let out = chunks(mode, block, &borrowed);
        let expected: Vec<u8> = input.iter().flat_map(|(p, _)| p.clone()).collect();
        assert_eq!(
            out.concat(),
            expected,
            "chunks must concatenate to the input"
        );
        for (i, chunk) in out.iter().enumerate() {
            assert!(!chunk.is_empty());
            assert!(
                chunk.len() <= block,
                "chunk of {} > block {block}",
                chunk.len()
            );
            let last = i == out.len() - 1;
            if mode == Chunking::Lines && !last && chunk.len() < block {
                assert_eq!(
                    chunk.last(),
                    Some(&b'\n'),
                    "line chunk must end at a newline"
                );
            }
            if mode == Chunking::Lines && chunk.len() == block && chunk.last() != Some(&b'\n') {
                assert!(
                    !chunk.contains(&b'\n'),
                    "only a line longer than the block may be split"
                );
            }
        }
    }

    #[test]
    fn byte_chunks_concatenate_and_respect_block_size() {
        for (seed, block) in [(1, 1), (2, 7), (3, 64), (4, 4096), (5, 100)] {
            check_properties(Chunking::Bytes, block, seed, 200);
        }
    }

    #[test]
    fn line_chunks_end_at_newlines() {
        for (seed, block) in [(6, 1), (7, 10), (8, 64), (9, 4096), (10, 33)] {
            check_properties(Chunking::Lines, block, seed, 200);
        }
    }

    /// Blocks larger than the first buffer, with enough input (about
    /// 300 KB) to make it grow.
    #[test]
    fn chunks_respect_blocks_larger_than_the_first_buffer() {
        for (seed, block) in [(11, FIRST_BUFFER + 1), (12, 100_000), (13, 1 << 40)] {
            check_properties(Chunking::Bytes, block, seed, 2000);
            check_properties(Chunking::Lines, block, seed, 2000);
        }
    }

    #[test]
    fn huge_block_buffers_only_the_data() {
        let input = vec![b'x'; 300_000];
        let source = Scripted([(input.clone(), false)].into());
        let mut chunker = Chunker::new(source, Chunking::Bytes, 1 << 40);
        assert_eq!(chunker.next_chunk().unwrap(), Some(&input[..]));
        assert!(chunker.next_chunk().unwrap().is_none());
        assert!(
            chunker.buf.len() <= 2 * input.len(),
            "{} bytes of buffer for {} of data",
            chunker.buf.len(),
            input.len()
        );
    }

    #[test]
    fn buffer_grows_no_further_than_the_block() {
        let source = Scripted([(vec![b'x'; 250_000], false)].into());
        let mut chunker = Chunker::new(source, Chunking::Bytes, 100_000);
        let mut sizes = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, [100_000, 100_000, 50_000]);
        assert_eq!(chunker.buf.len(), 100_000);
    }

    #[test]
    fn publishes_what_is_ready_without_waiting_for_more() {
        let out = chunks(
            Chunking::Bytes,
            100,
            &[(b"ab", false), (b"cd", true), (b"ef", false)],
        );
        assert_eq!(out, [b"abcd".to_vec(), b"ef".to_vec()]);
    }

    #[test]
    fn full_block_is_published_even_if_more_is_ready() {
        let out = chunks(Chunking::Bytes, 3, &[(b"abcdefg", false)]);
        assert_eq!(out, [b"abc".to_vec(), b"def".to_vec(), b"g".to_vec()]);
    }

    #[test]
    fn line_mode_waits_for_the_end_of_a_line() {
        let out = chunks(
            Chunking::Lines,
            100,
            &[(b"ab", false), (b"c\nd", false), (b"e\n", false)],
        );
        assert_eq!(out, [b"abc\n".to_vec(), b"de\n".to_vec()]);
    }

    #[test]
    fn line_mode_carries_a_partial_line_over_a_full_block() {
        let out = chunks(Chunking::Lines, 8, &[(b"one\ntwo\nthree\n", false)]);
        assert_eq!(out, [b"one\ntwo\n".to_vec(), b"three\n".to_vec()]);
    }

    #[test]
    fn line_mode_splits_only_an_oversized_line() {
        let out = chunks(Chunking::Lines, 4, &[(b"abcdefgh\nij", false)]);
        assert_eq!(out, [b"abcd".to_vec(), b"efgh".to_vec(), b"\nij".to_vec()]);
    }

    #[test]
    fn final_bytes_without_newline_are_published_at_end_of_input() {
        let out = chunks(Chunking::Lines, 100, &[(b"a\nno newline", false)]);
        assert_eq!(out.concat(), b"a\nno newline");
    }

    #[test]
    fn empty_input_yields_no_chunk() {
        assert!(chunks(Chunking::Bytes, 10, &[]).is_empty());
        assert!(chunks(Chunking::Lines, 10, &[]).is_empty());
    }
}

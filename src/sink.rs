//! Where a consumer puts the chunks it takes: an [`Output`] (a descriptor,
//! written without copying through user space where the system allows) or
//! memory (the library's `recv`). Both consumers, lossy or lossless
//! ([`crate::Consumer`]) and history ([`crate::HistoryConsumer`]), deliver
//! through this one trait, so a way of taking chunks is written once.

use std::fs::File;
use std::time::Duration;

use crate::output::{CopyError, Output, read_whole};

/// Where a consumer puts the chunks it takes.
pub(crate) trait Sink {
    /// Whether `size` bytes can be taken at once now; never waits (asked
    /// under the lock).
    fn has_room(&mut self, size: u64) -> bool;
    /// Waits a little, holding no lock, for room.
    fn wait_for_room(&mut self, interval: Duration);
    /// Under the lock: takes the whole chunk and returns `true`, or takes
    /// nothing and returns `false` when it cannot without blocking.
    fn try_take(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError>;
    /// Takes the whole chunk, waiting as long as it takes.
    fn take(&mut self, file: &mut File, size: u64) -> Result<(), CopyError>;
    /// Takes a whole chunk already read into memory.
    fn take_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CopyError>;
    /// Whether several lossy chunks may be handed over as one (a
    /// descriptor, where chunks are bytes in a stream), not a chunk apiece
    /// (memory, where each is a message).
    fn batches(&self) -> bool {
        false
    }
}

impl Sink for Output<'_> {
    fn has_room(&mut self, size: u64) -> bool {
        Output::has_room(self, to_usize(size))
    }
    fn wait_for_room(&mut self, interval: Duration) {
        Output::wait_for_room(self, interval)
    }
    fn try_take(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError> {
        self.try_copy_from(file, size)
    }
    fn take(&mut self, file: &mut File, size: u64) -> Result<(), CopyError> {
        self.copy_from(file, size)
    }
    fn take_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CopyError> {
        self.write_chunk(&bytes)
    }
    fn batches(&self) -> bool {
        true
    }
}

/// Collects a chunk in memory, for the consumers' `recv`.
#[derive(Default)]
pub(crate) struct Collect(Vec<u8>);

impl Sink for Collect {
    fn has_room(&mut self, _: u64) -> bool {
        true
    }
    fn wait_for_room(&mut self, _: Duration) {}
    fn try_take(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError> {
        self.take(file, size).map(|()| true)
    }
    fn take(&mut self, file: &mut File, size: u64) -> Result<(), CopyError> {
        self.0 = read_whole(file, size)?;
        Ok(())
    }
    fn take_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CopyError> {
        self.0 = bytes;
        Ok(())
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Collect {
    /// The chunk taken last.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

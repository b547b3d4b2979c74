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
    /// Whether `size` bytes can be taken at once; if not, waits a little,
    /// holding no lock, and says no.
    fn wait_for_room(&mut self, size: u64, interval: Duration) -> bool;
    /// Under the lock: takes the whole chunk and returns `true`, or takes
    /// nothing and returns `false` when it cannot without blocking.
    fn try_take(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError>;
    /// Takes the whole chunk, waiting as long as it takes.
    fn take(&mut self, file: &mut File, size: u64) -> Result<(), CopyError>;
    /// Takes a whole chunk already read into memory.
    fn take_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CopyError>;
}

impl Sink for Output<'_> {
    fn wait_for_room(&mut self, size: u64, interval: Duration) -> bool {
        Output::wait_for_room(self, to_usize(size), interval)
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
}

/// Collects a chunk in memory, for the consumers' `recv`.
#[derive(Default)]
pub(crate) struct Collect(Vec<u8>);

impl Sink for Collect {
    fn wait_for_room(&mut self, _: u64, _: Duration) -> bool {
        true
    }
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

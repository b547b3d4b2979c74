//! The entry point of the library: a bus is a data file path plus the options
//! every participant on it must agree on (the mode) or may tune (waiting).

use std::path::{Path, PathBuf};

use crate::consume::Consumer;
use crate::error::Result;
use crate::history::HistoryConsumer;
use crate::options::{BusOptions, HistoryOptions, ProducerOptions};
use crate::paths::BusPaths;
use crate::publish::Producer;
use crate::status::Status;

/// A bus on one data file. Creating it touches nothing on disk; producers
/// and consumers made from it do.
///
/// ```
/// use filebus::{Bus, BusOptions, Mode};
///
/// let dir = tempfile::tempdir()?;
/// let options = BusOptions::default().with_mode(Mode::Lossless);
/// let bus = Bus::new(dir.path().join("bus"), options);
///
/// let producer_bus = bus.clone();
/// let producer = std::thread::spawn(move || -> filebus::Result<()> {
///     let mut producer = producer_bus.producer()?;
///     producer.publish(b"hello ")?;
///     producer.publish(b"world")?;
///     producer.finish()
/// });
///
/// let received: Vec<Vec<u8>> = bus.consumer()?.collect::<filebus::Result<_>>()?;
/// producer.join().unwrap()?;
/// assert_eq!(received.concat(), b"hello world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Bus {
    paths: BusPaths,
    options: BusOptions,
}

impl Bus {
    /// A bus whose data file is `path`.
    pub fn new(path: impl Into<PathBuf>, options: BusOptions) -> Self {
        Bus {
            paths: BusPaths::new(path),
            options,
        }
    }

    /// The data file path.
    pub fn path(&self) -> &Path {
        self.paths.data()
    }

    /// The paths of the bus files.
    pub fn paths(&self) -> &BusPaths {
        &self.paths
    }

    /// The options this bus was opened with.
    pub fn options(&self) -> &BusOptions {
        &self.options
    }

    /// A producer on this bus with default [`ProducerOptions`]; creates the
    /// data file's directory if missing.
    pub fn producer(&self) -> Result<Producer> {
        self.producer_with(ProducerOptions::default())
    }

    /// A producer on this bus; creates the data file's directory if
    /// missing. Fails with [`crate::Error::Incompatible`] when asked to
    /// retain history in lossless mode.
    pub fn producer_with(&self, options: ProducerOptions) -> Result<Producer> {
        options.check(&self.options)?;
        Producer::new(self.paths.clone(), self.options.clone(), options)
    }

    /// A consumer on this bus. It waits for the data file (and its
    /// directory) to appear.
    pub fn consumer(&self) -> Result<Consumer> {
        Ok(Consumer::new(self.paths.clone(), self.options.clone()))
    }

    /// A consumer of the retained history `F.history/`; see
    /// [`HistoryConsumer`]. Fails with [`crate::Error::Incompatible`] in
    /// lossless mode, and when the position file cannot be read or its
    /// directory cannot be written.
    pub fn history_consumer(&self, history: HistoryOptions) -> Result<HistoryConsumer> {
        history.check(&self.options)?;
        HistoryConsumer::new(self.paths.clone(), self.options.clone(), history)
    }

    /// What the bus looks like now, for a person or a script finding out
    /// why it misbehaves: the chunk, the lock and who holds it, a leftover
    /// staging file, the retained history and how far behind each of the
    /// given position files is. Takes no lock and changes nothing.
    pub fn status(&self, position_files: &[PathBuf]) -> Result<Status> {
        Status::collect(&self.paths, position_files)
    }
}

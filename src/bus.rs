//! The entry point of the library: a bus is a data file path plus the options
//! every participant on it must agree on (the mode) or may tune (waiting).

use std::path::{Path, PathBuf};

use crate::consume::Consumer;
use crate::error::Result;
use crate::history::{HistoryConsumer, unsubscribe};
use crate::options::{BusOptions, HistoryOptions, ProducerOptions, check_subscriber_name};
use crate::paths::BusPaths;
use crate::publish::Producer;
use crate::status::Status;

/// A bus on one data file. Creating it touches nothing on disk; producers
/// and consumers made from it do. Every call that uses the bus fails with
/// [`crate::Error::NameTooLong`] when the data file's name leaves no room
/// in its directory for the names beside it (`F.lock`, `F.__new__`,
/// `F.history`).
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
        self.paths.check_name_length()?;
        Producer::new(self.paths.clone(), self.options.clone(), options)
    }

    /// A consumer on this bus. It waits for the data file (and its
    /// directory) to appear.
    pub fn consumer(&self) -> Result<Consumer> {
        self.paths.check_name_length()?;
        Ok(Consumer::new(self.paths.clone(), self.options.clone()))
    }

    /// A consumer of the retained history `F.history/`; see
    /// [`HistoryConsumer`]. Fails with [`crate::Error::Incompatible`] in
    /// lossless mode, and when the position file cannot be read or its
    /// directory cannot be written. With [`HistoryOptions::subscribe`] it
    /// runs that durable subscription, registering it (and creating the
    /// data file's directory and `F.history/subscribers/`) if it is new;
    /// it fails with [`crate::Error::SubscriberRunning`] when another
    /// process runs it.
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use filebus::{Bus, BusOptions, HistoryEvent, HistoryOptions, ProducerOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let subscribe = || HistoryOptions::default().with_subscribe(Some("audit".into()));
    /// let mut subscriber = bus.history_consumer(subscribe())?;
    /// let mut producer = bus.producer_with(ProducerOptions::default().with_retain(NonZeroU64::new(1)))?;
    /// producer.publish(b"one")?;
    /// // With one chunk retained, the second would prune the first, which
    /// // the subscriber has not delivered yet: the producer waits for it.
    /// let publisher = std::thread::spawn(move || producer.publish(b"two"));
    /// assert_eq!(
    ///     subscriber.recv()?,
    ///     Some(HistoryEvent::Chunk { seq: 1, data: b"one".to_vec() })
    /// );
    /// publisher.join().unwrap()?;
    /// drop(subscriber);
    /// // A restart resumes after the last chunk delivered.
    /// let mut subscriber = bus.history_consumer(subscribe())?;
    /// assert_eq!(
    ///     subscriber.recv()?,
    ///     Some(HistoryEvent::Chunk { seq: 2, data: b"two".to_vec() })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn history_consumer(&self, history: HistoryOptions) -> Result<HistoryConsumer> {
        history.check(&self.options)?;
        self.paths.check_name_length()?;
        HistoryConsumer::new(self.paths.clone(), self.options.clone(), history)
    }

    /// Removes the durable subscription `name` (see
    /// [`HistoryOptions::subscribe`]): producers stop waiting for it, and a
    /// consumer subscribing under that name later starts afresh. Fails with
    /// [`crate::Error::SubscriberRunning`] while a process runs it, with
    /// [`crate::Error::NoSubscriber`] when the bus has no such subscription,
    /// and with [`crate::Error::BadSubscriberName`] for a name no
    /// subscription can have.
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, Error, HistoryOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let subscriber = bus.history_consumer(
    ///     HistoryOptions::default().with_subscribe(Some("audit".into())),
    /// )?;
    /// assert!(matches!(bus.unsubscribe("audit"), Err(Error::SubscriberRunning { .. })));
    /// drop(subscriber);
    /// bus.unsubscribe("audit")?;
    /// assert!(matches!(bus.unsubscribe("audit"), Err(Error::NoSubscriber { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unsubscribe(&self, name: &str) -> Result<()> {
        check_subscriber_name(name)?;
        self.paths.check_name_length()?;
        unsubscribe(&self.paths, name)
    }

    /// What the bus looks like now, for a person or a script finding out
    /// why it misbehaves: the chunk, the lock and who holds it, a leftover
    /// staging file, the retained history and how far behind each of the
    /// given position files is. Takes no lock and changes nothing.
    pub fn status(&self, position_files: &[PathBuf]) -> Result<Status> {
        self.paths.check_name_length()?;
        Status::collect(&self.paths, position_files)
    }
}

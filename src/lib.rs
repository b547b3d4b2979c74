//! A userspace multicast named pipe backed by a regular file.
//!
//! A bus is one data file `F`. Producers publish chunks by writing
//! `F.__new__` and renaming it over `F` under a `flock(2)` on `F.lock`;
//! consumers read `F` whenever it names a chunk they have not seen. Disk use
//! stays bounded at one chunk. This crate speaks the same protocol as the
//! Python and bash implementations of `filebus` 0.3.5, so all of them can
//! share one bus.
//!
//! * [`Mode::Lossy`] (default): multicast, every consumer sees the latest
//!   chunk, slow consumers skip.
//! * [`Mode::Lossless`]: each chunk goes to exactly one consumer, producers
//!   wait for it to be consumed, and an empty chunk ends the stream.
//! * Retained history ([`ProducerOptions::retain`] on the producer,
//!   [`Bus::history_consumer`]): multicast without loss, every consumer gets
//!   every numbered chunk in order as long as it keeps within the newest
//!   `N`, and learns exactly which ones it lost otherwise.
//!
//! ```
//! use filebus::{Bus, BusOptions, Mode};
//!
//! let dir = tempfile::tempdir()?;
//! let bus = Bus::new(dir.path().join("bus"), BusOptions::default().with_mode(Mode::Lossless));
//! let mut consumer = bus.consumer()?;
//! let writer = {
//!     let bus = bus.clone();
//!     std::thread::spawn(move || -> filebus::Result<()> {
//!         let mut producer = bus.producer()?;
//!         for word in ["one", "two", "three"] {
//!             producer.publish(word.as_bytes())?;
//!         }
//!         producer.finish()
//!     })
//! };
//! let mut words = Vec::new();
//! while let Some(chunk) = consumer.recv()? {
//!     words.push(String::from_utf8(chunk)?);
//! }
//! writer.join().unwrap()?;
//! assert_eq!(words, ["one", "two", "three"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `filebus` binary is a thin layer over this crate: it cuts standard
//! input into chunks with a [`Chunker`] and hands each to a [`Producer`], or
//! copies each chunk a [`Consumer`] takes to standard output.
//!
//! Every blocking call documents how soon it returns (see "Waiting" on
//! [`Producer`], [`Consumer`] and [`HistoryConsumer`]). A program can bound
//! a wait with [`Consumer::recv_timeout`] or [`Consumer::try_recv`] (and
//! their [`HistoryConsumer`] twins), and end one from another thread with
//! the [`Stop`] handle each of them gives out.
//!
//! # Platform support
//!
//! Linux is where this crate is tested. Elsewhere (the library and the
//! binary are checked to build for FreeBSD and macOS) it takes its portable
//! path, which the test suite also walks on Linux when the environment
//! variable `FILEBUS_PORTABLE=1` is set: waits poll instead of using file
//! events, chunks are copied through user space, and a lossless consumer
//! whose output stalls holds the bus lock while it waits. The user guide
//! (docs/guide.md, "Platforms") lists what is checked where.

#![warn(missing_docs)]

mod bus;
mod chunker;
mod consume;
mod error;
mod files;
mod history;
mod lock;
mod options;
mod output;
mod paths;
mod progress;
mod publish;
mod remote;
mod sentinel;
mod shm_log;
mod sink;
mod status;
mod stop;
mod stream;
mod sys;
mod watch;

/// README.md, whose Rust examples `cargo test --doc` compiles and runs, so
/// that they work as written (tests/docs.rs runs its shell examples).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

/// The user guide's Rust examples, tested as the README's are.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideExamples;

pub use bus::Bus;
pub use chunker::{Chunker, FdSource, Source};
pub use consume::{Consumer, Delivery};
pub use error::{Error, Loss, Result};
pub use history::{HistoryConsumer, HistoryEvent};
pub use options::{BusOptions, Chunking, HistoryOptions, Mode, ProducerOptions, Start};
pub use output::Output;
pub use paths::BusPaths;
pub use publish::{Producer, SETTLE_BOUND};
pub use status::{FileState, LockState, LockUser, PositionState, Status, SubscriberState};
pub use stop::Stop;

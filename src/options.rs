//! The settings of a bus and of its roles, as plain values at the bottom of
//! the crate: every layer reads them, so they depend on nothing but the
//! error type. Bus options are what all participants of one bus agree on
//! (the mode) or tune for themselves (waiting); producer and history
//! options concern one role only. Combinations that cannot work are refused
//! here, once, for the library and the command line alike.
//!
//! Each options type is built from its `Default` with `with_*` methods, and
//! is `#[non_exhaustive]`, so that new settings are not breaking changes.

use std::num::NonZeroU64;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// The delivery guarantee of a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Multicast, latest value wins: every consumer sees the latest chunk and
    /// slow consumers skip chunks. Producers never wait.
    #[default]
    Lossy,
    /// Back pressure: each chunk goes to exactly one consumer, producers wait
    /// until the previous chunk was consumed, and an empty chunk marks the
    /// end of the stream (`--back-pressure` / `--lossless`).
    Lossless,
}

/// How participants on a bus behave.
///
/// ```
/// use std::time::Duration;
/// use filebus::{BusOptions, Mode};
///
/// let options = BusOptions::default()
///     .with_mode(Mode::Lossless)
///     .with_sleep_interval(Duration::from_millis(20));
/// assert_eq!(options.mode, Mode::Lossless);
/// assert!(options.file_monitoring); // the default
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BusOptions {
    /// Lossy multicast or lossless back pressure. Default: lossy.
    pub mode: Mode,
    /// Polling period: the longest any wait lasts before re-checking, even
    /// when filesystem events are being monitored. Default: 0.1 s. Zero,
    /// which the command line refuses, re-checks without pause: every wait
    /// takes a whole core.
    pub sleep_interval: Duration,
    /// Whether to wake on filesystem events (inotify) in addition to
    /// polling. Default: yes.
    pub file_monitoring: bool,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            mode: Mode::Lossy,
            sleep_interval: Duration::from_millis(100),
            file_monitoring: true,
        }
    }
}

impl BusOptions {
    /// Sets [`BusOptions::mode`].
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`BusOptions::sleep_interval`].
    pub fn with_sleep_interval(mut self, interval: Duration) -> Self {
        self.sleep_interval = interval;
        self
    }

    /// Sets [`BusOptions::file_monitoring`].
    pub fn with_file_monitoring(mut self, on: bool) -> Self {
        self.file_monitoring = on;
        self
    }

    /// How this process waits on this bus.
    pub(crate) fn wait_policy(&self) -> WaitPolicy {
        let (eager, first_pause) = match self.mode {
            Mode::Lossless => (EAGER, FIRST_PAUSE),
            Mode::Lossy => (Duration::ZERO, FIRST_PAUSE_LOSSY),
        };
        WaitPolicy {
            eager,
            first_pause: first_pause.min(self.sleep_interval),
            interval: self.sleep_interval,
        }
    }
}

/// How long a lossless wait keeps checking before it sleeps.
///
/// Lossless chunks go back and forth one at a time, so each one costs a
/// sleep and a wake-up on both sides, and on a virtual machine a wake-up
/// across CPUs costs tens of microseconds. The other side usually answers
/// within that time, so a lossless wait (for an event or for the lock)
/// first checks for a few tens of microseconds, yielding the CPU in
/// between, and only then sleeps (about 40% more throughput at 4 KiB chunks
/// here). Lossy participants never do this: there may be many of them, and
/// their spinning would take the CPU from the producer.
const EAGER: Duration = Duration::from_micros(60);

/// The first pause of polling after activity (when there are no events),
/// in lossless mode: the other side of the hand-off usually answers within
/// microseconds. With the timer slack of a normal thread, the sleep lasts
/// about twice as long.
const FIRST_PAUSE: Duration = Duration::from_micros(50);

/// The first pause of polling after activity in lossy mode. Lossy and
/// history consumers may be many, and a millisecond's delay costs them
/// nothing but latency (they catch up on what was published meanwhile).
/// Here, a producer of 100 000 small chunks followed by sixteen history
/// consumers, eight of them polling, took about 55% more CPU in all with
/// polling from 50 µs than with polling every 0.1 s; from 1 ms, 20-40%.
const FIRST_PAUSE_LOSSY: Duration = Duration::from_millis(1);

/// How one process waits on a bus, derived from its [`BusOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    /// How long to keep checking before going to sleep (zero: sleep at once).
    pub(crate) eager: Duration,
    /// The first pause of polling after activity, when there are no events.
    pub(crate) first_pause: Duration,
    /// The longest any wait lasts.
    pub(crate) interval: Duration,
}

/// Where chunk boundaries may fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Chunking {
    /// Any byte boundary; bytes are never interpreted (the Python peer's way).
    #[default]
    Bytes,
    /// Newline boundaries; a line longer than the block size is split (the
    /// bash peer's way).
    Lines,
}

/// How a producer cuts and keeps what it publishes.
///
/// ```
/// use std::num::NonZeroU64;
/// use filebus::{Chunking, ProducerOptions};
///
/// let options = ProducerOptions::default()
///     .with_chunking(Chunking::Lines)
///     .with_block_size(64 * 1024)
///     .with_retain(NonZeroU64::new(1000));
/// assert_eq!(options.block_size, 65536);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerOptions {
    /// Keep the newest `N` chunks as a numbered history in `F.history/` for
    /// [`crate::Bus::history_consumer`]s, and publish an empty end chunk on
    /// [`crate::Producer::finish`]. Lossy mode only. Default: none.
    pub retain: Option<NonZeroU64>,
    /// Where [`crate::Producer::publish_stream`] may cut chunks. Default:
    /// anywhere.
    pub chunking: Chunking,
    /// The largest chunk [`crate::Producer::publish_stream`] publishes, in
    /// bytes; memory follows the data actually buffered, not this size.
    /// Default: 4096.
    pub block_size: usize,
    /// With [`ProducerOptions::retain`]: how long one durable subscriber
    /// ([`HistoryOptions::subscribe`]) may hold the producer back without
    /// making progress before the producer prunes the chunk it still needs
    /// and goes on (the subscriber is then untethered: it gets a loss report
    /// when it resumes, and is tethered again once it has caught up). A
    /// subscriber whose process is gone is held for no longer than this
    /// either, so that a quick restart loses nothing. Default: 10 s, the
    /// untethered-window default of Aeron, whose tethered subscriptions are
    /// the model. Zero: never wait (subscribers then only keep their
    /// position).
    pub untether_after: Duration,
    /// Lossy mode: the size in bytes of the ring of the shared-memory log
    /// `F.shm` this producer makes when the bus has none (an existing log
    /// keeps its size), through which this crate's lossy consumers on the
    /// same host take chunks without opening `F` (see docs/PROTOCOL.md).
    /// Chunks larger than a quarter of it go through `F` only. Zero: no
    /// log. Default: 16 MiB, what Aeron gives a term of its log buffers:
    /// 15 ms of a stream at 1 GB/s, longer than a consumer waits for the
    /// processor on a busy machine (with 4 MiB, 4 processes on 2 cores
    /// lapped a consumer that kept up on average). Never on a filesystem
    /// shared across hosts. Otherwise from 64 KiB to 1 TiB: making a
    /// producer with another size fails with [`Error::OutOfRange`].
    pub shm_log_size: usize,
}

/// The default of [`ProducerOptions::untether_after`].
const UNTETHER_AFTER: Duration = Duration::from_secs(10);

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            retain: None,
            chunking: Chunking::Bytes,
            block_size: 4096,
            untether_after: UNTETHER_AFTER,
            shm_log_size: 16 << 20,
        }
    }
}

impl ProducerOptions {
    /// The sizes [`ProducerOptions::shm_log_size`] takes besides 0: a ring
    /// of 64 KiB (a quarter of it, the largest chunk it carries, should be
    /// worth a record) to 1 TiB (its mapping must leave room in the address
    /// space).
    pub const SHM_LOG_SIZES: RangeInclusive<usize> = (64 << 10)..=(1 << 40);

    /// Sets [`ProducerOptions::retain`].
    pub fn with_retain(mut self, retain: Option<NonZeroU64>) -> Self {
        self.retain = retain;
        self
    }

    /// Sets [`ProducerOptions::chunking`].
    pub fn with_chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Sets [`ProducerOptions::block_size`] (at least 1).
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size.max(1);
        self
    }

    /// Sets [`ProducerOptions::untether_after`].
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use std::time::Duration;
    /// use filebus::ProducerOptions;
    ///
    /// let options = ProducerOptions::default()
    ///     .with_retain(NonZeroU64::new(64))
    ///     .with_untether_after(Duration::from_secs(2));
    /// assert_eq!(options.untether_after, Duration::from_secs(2));
    /// assert_eq!(ProducerOptions::default().untether_after, Duration::from_secs(10));
    /// ```
    pub fn with_untether_after(mut self, after: Duration) -> Self {
        self.untether_after = after;
        self
    }

    /// Sets [`ProducerOptions::shm_log_size`] (0: no log).
    pub fn with_shm_log_size(mut self, bytes: usize) -> Self {
        self.shm_log_size = bytes;
        self
    }

    /// Refuses what cannot work on a bus with `bus` options (retained
    /// history with back pressure) and a [`ProducerOptions::shm_log_size`]
    /// out of its range.
    pub fn check(&self, bus: &BusOptions) -> Result<()> {
        let sizes = ProducerOptions::SHM_LOG_SIZES;
        if self.shm_log_size != 0 && !sizes.contains(&self.shm_log_size) {
            return Err(Error::OutOfRange {
                option: "shm_log_size",
                value: self.shm_log_size as u64,
                expected: format!(
                    "0 (no log) or a size in bytes from {} to {}",
                    sizes.start(),
                    sizes.end()
                ),
            });
        }
        match self.retain {
            Some(_) => refuse_history_with_back_pressure(bus),
            None => Ok(()),
        }
    }
}

/// Where a history consumer starts when it has no recorded position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Start {
    /// The newest retained chunk, so that a newcomer sees the latest value;
    /// when that is an end chunk, the first chunk after it.
    #[default]
    Newest,
    /// The oldest retained chunk.
    Oldest,
    /// This sequence number; it waits if that chunk is not published yet.
    Seq(u64),
}

/// How a history consumer follows `F.history/`.
///
/// ```
/// use filebus::{HistoryOptions, Start};
///
/// let options = HistoryOptions::default()
///     .with_start(Start::Oldest)
///     .with_position_file(Some("/var/tmp/events.pos".into()));
/// assert!(!options.strict); // the default
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HistoryOptions {
    /// Where to start. With no retained chunk yet, a consumer always starts
    /// at the first chunk published after it was created. Default: newest.
    pub start: Start,
    /// Fail with [`Error::FellBehind`] instead of resuming after a loss.
    /// Default: no.
    pub strict: bool,
    /// A file holding the sequence number of the last delivered chunk. When
    /// it exists, the consumer resumes after it (overriding `start`). It is
    /// rewritten (atomically) after each chunk has been delivered, so a
    /// consumer that dies between the two delivers that chunk again after a
    /// restart if it is still retained: at-least-once across crashes,
    /// exactly-once across clean stops. If it was pruned meanwhile, the
    /// restarted consumer, which cannot know it was delivered, reports it
    /// lost with the rest of the gap. The same goes for a subscription's
    /// record ([`HistoryOptions::subscribe`]). Its directory must be
    /// writable, which the consumer checks before it delivers anything.
    /// Unsequenced chunks are not recorded: a resuming consumer leaves out
    /// the one in `F` when it starts. Default: none.
    pub position_file: Option<PathBuf>,
    /// A durable subscription under this name: the consumer keeps its
    /// position in `F.history/subscribers/NAME` instead of a position file
    /// (so not with [`HistoryOptions::position_file`]), and a producer with
    /// retention waits for it rather than prune a chunk it has not
    /// delivered yet, for at most [`ProducerOptions::untether_after`] at a
    /// time. A new subscription starts where `start` says and records that
    /// before it delivers anything; a known one resumes after its recorded
    /// position (`start` is then ignored). Only one process at a time may
    /// run a subscription. The name is 1 to 64 bytes of `A-Z a-z 0-9 . _ -`,
    /// not starting with `.`. Remove a subscription with
    /// [`crate::Bus::unsubscribe`]. Default: none.
    pub subscribe: Option<String>,
}

impl HistoryOptions {
    /// Sets [`HistoryOptions::start`].
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Sets [`HistoryOptions::strict`].
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`HistoryOptions::position_file`].
    pub fn with_position_file(mut self, path: Option<PathBuf>) -> Self {
        self.position_file = path;
        self
    }

    /// Sets [`HistoryOptions::subscribe`].
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, HistoryOptions};
    ///
    /// let bus = BusOptions::default();
    /// let options = HistoryOptions::default().with_subscribe(Some("audit-log".into()));
    /// assert!(options.check(&bus).is_ok());
    /// let bad = HistoryOptions::default().with_subscribe(Some("../escape".into()));
    /// assert!(bad.check(&bus).is_err());
    /// let both = options.with_position_file(Some("/tmp/pos".into()));
    /// assert!(both.check(&bus).is_err());
    /// ```
    pub fn with_subscribe(mut self, name: Option<String>) -> Self {
        self.subscribe = name;
        self
    }

    /// Refuses what cannot work on a bus with `bus` options: following
    /// history with back pressure, a subscription name that is not one, and
    /// a subscription with a position file.
    pub fn check(&self, bus: &BusOptions) -> Result<()> {
        refuse_history_with_back_pressure(bus)?;
        let Some(name) = &self.subscribe else {
            return Ok(());
        };
        check_subscriber_name(name)?;
        if self.position_file.is_some() {
            return Err(Error::Incompatible(
                "a subscription (--subscribe) keeps its own position in \
                 FILE.history/subscribers/; it cannot be combined with --position-file",
            ));
        }
        Ok(())
    }
}

/// The longest subscriber name, in bytes.
const NAME_MAX: usize = 64;

/// Refuses a subscriber name that is not 1 to [`NAME_MAX`] bytes of
/// `[A-Za-z0-9._-]` not starting with `.`: the name becomes a file name in
/// a shared directory, so it must never be a path (`/`, `..`), and names
/// starting with `.` are kept for the subscribers' own lock and staging
/// files.
pub(crate) fn check_subscriber_name(name: &str) -> Result<()> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let bytes = name.as_bytes();
    if (1..=NAME_MAX).contains(&bytes.len()) && bytes[0] != b'.' && bytes.iter().all(allowed) {
        return Ok(());
    }
    Err(Error::BadSubscriberName {
        name: name.to_string(),
    })
}

fn refuse_history_with_back_pressure(bus: &BusOptions) -> Result<()> {
    match bus.mode {
        Mode::Lossless => Err(Error::Incompatible(
            "retained history (--retain, --history) cannot be combined with back pressure \
             (--back-pressure): history is already lossless for every consumer",
        )),
        Mode::Lossy => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_with_back_pressure_is_refused_by_both_roles_alike() {
        let lossless = BusOptions::default().with_mode(Mode::Lossless);
        let retaining = ProducerOptions::default().with_retain(NonZeroU64::new(3));
        let producer = retaining.check(&lossless).unwrap_err().to_string();
        let consumer = HistoryOptions::default()
            .check(&lossless)
            .unwrap_err()
            .to_string();
        assert_eq!(producer, consumer);
        assert!(producer.contains("--retain"), "{producer}");
        assert!(retaining.check(&BusOptions::default()).is_ok());
        assert!(ProducerOptions::default().check(&lossless).is_ok());
    }

    #[test]
    fn subscriber_names_are_plain_file_names() {
        for good in ["a", "audit-log", "A.b_c-9", &"x".repeat(64)] {
            assert!(check_subscriber_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../x",
            "sp ace",
            "caf\u{e9}",
            "new\nline",
            &"x".repeat(65),
        ] {
            let err = check_subscriber_name(bad).unwrap_err().to_string();
            assert!(err.contains("subscriber name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_subscription_has_no_position_file() {
        let options = HistoryOptions::default()
            .with_subscribe(Some("s".into()))
            .with_position_file(Some("p".into()));
        let err = options.check(&BusOptions::default()).unwrap_err();
        assert!(err.to_string().contains("--position-file"), "{err}");
    }

    #[test]
    fn waits_are_eager_only_in_lossless_mode_and_never_exceed_the_interval() {
        let short = Duration::from_micros(10);
        let lossy = BusOptions::default().with_sleep_interval(short);
        let policy = lossy.wait_policy();
        assert_eq!(policy.eager, Duration::ZERO);
        assert_eq!(policy.first_pause, short);
        let lossless = BusOptions::default()
            .with_mode(Mode::Lossless)
            .wait_policy();
        assert_eq!(lossless.eager, EAGER);
        assert_eq!(lossless.first_pause, FIRST_PAUSE);
        assert_eq!(lossless.interval, Duration::from_millis(100));
    }
}

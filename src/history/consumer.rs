//! The history consumer: a state machine that follows the numbered entries
//! in order, looks at `F` for chunks published without retention, and
//! reports exactly which numbers it lost when it fell behind.

use std::fs::{File, Metadata};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::dir::HistoryDir;
use super::position::PositionFile;
use super::subscriber::Subscription;
use crate::error::{Error, Loss, Result, is_gone};
use crate::files::{open_regular, stat_regular};
use crate::options::{BusOptions, HistoryOptions, Start};
use crate::output::Output;
use crate::paths::BusPaths;
use crate::progress::Progress;
use crate::sink::{Collect, Sink};
use crate::stop::Stop;
use crate::watch::{Awaited, Watcher};

/// What one step of a [`HistoryConsumer`] produced. `T` is the chunk's
/// content (`Vec<u8>`) from [`HistoryConsumer::recv`], or its size in bytes
/// from [`HistoryConsumer::deliver_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryEvent<T> {
    /// The chunk with this sequence number.
    Chunk {
        /// Its sequence number.
        seq: u64,
        /// Its content or size.
        data: T,
    },
    /// A chunk published without a sequence number, by a producer without
    /// retention (ours or a peer): on a bus without history yet, or between
    /// two numbered chunks, in its place in the order. Like a lossy
    /// consumer's chunk, it is missed when another chunk replaced it before
    /// the consumer looked, and it is not recorded in the position file.
    Unsequenced(T),
    /// Chunks were lost; the next event is the chunk at `resume_at`, open
    /// already. One event covers the whole gap: a resume point pruned
    /// before the consumer opened it extends the range.
    Lost(Loss),
    /// The end-of-stream chunk with this sequence number; nothing follows.
    End {
        /// Its sequence number.
        seq: u64,
    },
}

impl HistoryEvent<u64> {
    /// The same event with the chunk's content in place of its size.
    fn map(self, content: impl FnOnce(u64) -> Vec<u8>) -> HistoryEvent<Vec<u8>> {
        match self {
            HistoryEvent::Chunk { seq, data } => HistoryEvent::Chunk {
                seq,
                data: content(data),
            },
            HistoryEvent::Unsequenced(size) => HistoryEvent::Unsequenced(content(size)),
            HistoryEvent::Lost(loss) => HistoryEvent::Lost(loss),
            HistoryEvent::End { seq } => HistoryEvent::End { seq },
        }
    }
}

/// The chunk `F` named when a history consumer last looked at it. It is kept
/// open so that its inode number cannot be given to a newer chunk while the
/// consumer compares against it.
#[derive(Debug)]
struct Seen {
    id: (u64, u64),
    _file: File,
}

/// What looking at `F` found.
#[derive(Debug)]
enum InF {
    /// Nothing new: `F` is missing or is the chunk seen last.
    Unchanged,
    /// A new chunk with another name besides `F`: a history entry, to be
    /// delivered from the history if at all. It counts as seen.
    Numbered((u64, u64)),
    /// `F` was replaced while it was being looked at: look again.
    Replaced,
    /// A new chunk whose only name is `F`: published without retention.
    /// Not counted as seen until it is delivered.
    Unsequenced(Chunk),
}

/// An open chunk file.
#[derive(Debug)]
struct Chunk {
    file: File,
    size: u64,
    id: (u64, u64),
}

impl Chunk {
    fn new(file: File, meta: &Metadata) -> Self {
        Chunk {
            file,
            size: meta.size(),
            id: (meta.dev(), meta.ino()),
        }
    }
}

/// `F`'s device and inode numbers, or `None` when it does not exist.
/// Anything but a regular file there is an error, as for lossy consumers.
fn stat_data(paths: &BusPaths) -> Result<Option<(u64, u64)>> {
    Ok(stat_regular(paths.data())?.map(|meta| (meta.dev(), meta.ino())))
}

/// Whether `F.__new__` names the file `id`: an entry it still names is
/// linked into the history but not yet renamed to `F`, and is removed again
/// if that rename fails.
fn is_staged(paths: &BusPaths, id: (u64, u64)) -> Result<bool> {
    match paths.staging().symlink_metadata() {
        Ok(meta) => Ok((meta.dev(), meta.ino()) == id),
        Err(e) if is_gone(e.raw_os_error()) => Ok(false),
        Err(e) => Err(Error::io("stat", paths.staging())(e)),
    }
}

/// Looks at `F` for a chunk published without retention.
///
/// A producer with retention links a chunk into the history before it
/// renames it to `F`, and prunes an entry only once `F` names a newer one,
/// so a numbered chunk has at least two names while it is `F`, and a chunk
/// in `F` with one name is a candidate. The link count is read after
/// opening `F`, and `F` is checked to still name the same inode afterwards,
/// since a numbered chunk replaced in between is left with one name, its
/// entry. That is not yet proof: a rename drops the link count of the chunk
/// it replaces a moment before lookups of `F` stop finding that chunk, so a
/// numbered chunk being replaced can show one link and still be found at
/// `F`. The caller rules this out: a consumer following the history compares
/// the candidate with the entries it could be ([`HistoryDir::precedes`]),
/// one without entries looks for the history again.
fn look_at_data(paths: &BusPaths, seen: &mut Option<Seen>) -> Result<InF> {
    let Some(id) = stat_data(paths)? else {
        return Ok(InF::Unchanged);
    };
    if seen.as_ref().is_some_and(|seen| seen.id == id) {
        return Ok(InF::Unchanged);
    }
    let Some((file, meta)) = open_regular(paths.data())? else {
        return Ok(InF::Replaced);
    };
    let chunk = Chunk::new(file, &meta);
    if meta.nlink() > 1 {
        *seen = Some(Seen {
            id: chunk.id,
            _file: chunk.file,
        });
        return Ok(InF::Numbered(chunk.id));
    }
    if stat_data(paths)? != Some(chunk.id) {
        return Ok(InF::Replaced);
    }
    if chunk.size == 0 {
        // A lossless producer's end marker: lossy consumers skip it.
        *seen = Some(Seen {
            id: chunk.id,
            _file: chunk.file,
        });
        return Ok(InF::Unchanged);
    }
    Ok(InF::Unsequenced(chunk))
}

/// How often at most a consumer reports unsequenced chunks.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Reports unsequenced chunks on a bus with history, one line for the first
/// at once and then at most one line per [`REPORT_EVERY`], which counts the
/// ones in between: a producer without retention left running on a history
/// bus must not flood standard error with a line per chunk.
#[derive(Debug, Default)]
struct Report {
    last: Option<Instant>,
    unreported: u64,
}

impl Report {
    fn chunk(&mut self, bus: &Path, after: u64) {
        if self.last.is_some_and(|last| last.elapsed() < REPORT_EVERY) {
            self.unreported += 1;
            return;
        }
        let place = match after {
            0 => "before the first numbered chunk".to_string(),
            seq => format!("after chunk {seq}"),
        };
        let more = match std::mem::take(&mut self.unreported) {
            0 => String::new(),
            n => format!("; {n} more since the last report"),
        };
        log::warn!(
            "unsequenced chunk on {} {place} (published without --retain), delivered in \
             its place{more}",
            bus.display()
        );
        self.last = Some(Instant::now());
    }

    /// Reports the chunks not reported yet, at the end of the stream.
    fn flush(&mut self, bus: &Path) {
        let n = std::mem::take(&mut self.unreported);
        if n > 0 {
            log::warn!(
                "{n} more unsequenced chunks on {} since the last report",
                bus.display()
            );
        }
    }
}

/// Where a history consumer stands.
#[derive(Debug)]
enum State {
    /// No history directory with entries seen yet; `next` is the number to
    /// start at, or `None` for the first chunk published from now on.
    /// Meanwhile chunks in `F` are delivered unsequenced, as a lossy
    /// consumer would.
    Waiting { next: Option<u64> },
    /// Reading `F.history/<next>`.
    Following {
        dir: HistoryDir,
        next: u64,
        /// An entry before `next` that existed lately. While it still
        /// exists, `next` cannot have been pruned (pruning goes oldest
        /// first), so a missing `next` is simply not published yet and no
        /// listing is needed.
        witness: Option<u64>,
        /// The file of the entry delivered last, which `F` usually still
        /// is once the consumer has caught up.
        delivered: Option<(u64, u64)>,
        warned_ahead: bool,
        /// `dir` replaced the directory followed before (that one was
        /// removed, or renamed away, and another made in its place), and
        /// no entry of it was seen yet: its numbers may start over.
        renewed: bool,
    },
}

impl State {
    /// What `-v` says a consumer in this state waits for.
    fn awaited(&self, paths: &BusPaths) -> String {
        match self {
            State::Waiting { .. } => format!(
                "no chunks in {} yet; waiting for the first one (a producer with --retain \
                 publishes it)",
                paths.history().display()
            ),
            // After an end chunk: a finished stream, which a consumer that
            // started at the newest chunk follows from the next one on.
            State::Following { dir, next, .. }
                if *next > 1
                    && std::fs::symlink_metadata(dir.entry_path(next - 1))
                        .is_ok_and(|m| m.len() == 0) =>
            {
                format!(
                    "{} ended at chunk {} (end chunk); waiting for a producer to publish \
                     chunk {next}",
                    dir.path.display(),
                    next - 1
                )
            }
            State::Following { dir, .. } => {
                format!("waiting for the next chunk in {}", dir.path.display())
            }
        }
    }
}

/// What a history consumer does next.
#[derive(Debug)]
enum Step {
    /// Nothing to deliver until the bus changes.
    Wait,
    /// Look again at once.
    Again,
    /// Entry `seq`; `is_data` when it was `F` too.
    Entry {
        seq: u64,
        chunk: Chunk,
        is_data: bool,
    },
    /// A chunk published without retention, next in the order.
    Unsequenced(Chunk),
    /// Chunks were lost.
    Lost(Loss),
}

/// A consumer that follows the retained history `F.history/`. Obtained
/// from [`crate::Bus::history_consumer`].
///
/// As an [`Iterator`] it yields [`HistoryEvent`]s and ends after
/// [`HistoryEvent::End`], or after the first error it yields;
/// [`HistoryConsumer::recv`] may be called again to retry.
///
/// ```
/// use std::num::NonZeroU64;
/// use filebus::{Bus, BusOptions, HistoryEvent, HistoryOptions, ProducerOptions};
///
/// let dir = tempfile::tempdir()?;
/// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
/// let mut consumer = bus.history_consumer(HistoryOptions::default())?;
/// let mut producer = bus.producer_with(ProducerOptions::default().with_retain(NonZeroU64::new(100)))?;
/// for word in ["one", "two", "three"] {
///     producer.publish(word.as_bytes())?;
/// }
/// producer.finish()?;
/// let events: Vec<_> = consumer.collect::<filebus::Result<_>>()?;
/// assert_eq!(events, [
///     HistoryEvent::Chunk { seq: 1, data: b"one".to_vec() },
///     HistoryEvent::Chunk { seq: 2, data: b"two".to_vec() },
///     HistoryEvent::Chunk { seq: 3, data: b"three".to_vec() },
///     HistoryEvent::End { seq: 4 },
/// ]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Waiting
///
/// The receiving calls block until there is an event. A chunk published
/// meanwhile ends the wait at once with file monitoring (inotify), and
/// within [`BusOptions::sleep_interval`] without it. A [`Stop`] from
/// [`HistoryConsumer::stopper`] ends a wait for the bus at once (within a
/// millisecond while polling pauses are shorter than that). A history
/// consumer takes no lock; what a stop does not interrupt is a write to an
/// output whose reader takes nothing, which
/// [`HistoryConsumer::deliver`] finishes rather than tear the chunk.
#[derive(Debug)]
pub struct HistoryConsumer {
    paths: BusPaths,
    strict: bool,
    position: Option<PositionFile>,
    watcher: Watcher,
    state: State,
    /// The chunk `F` named when last looked at, if it was delivered or
    /// needs no delivery.
    seen: Option<Seen>,
    /// `F.history/` was missing at the last look.
    no_history: bool,
    /// The user was told that the bus has no history.
    told_no_history: bool,
    report: Report,
    progress: Progress,
    /// The sequence number of the end chunk, once delivered.
    ended: Option<u64>,
    /// The iteration yielded an error: it has ended.
    failed: bool,
    /// Chunks found lost, not reported yet: the report waits until the
    /// chunk it resumes at is open, so that one pruned meanwhile extends it
    /// rather than make a second report for the same gap.
    unreported_loss: Option<Loss>,
    /// What follows the loss just reported, already open.
    after_loss: Option<Step>,
    /// The durable subscription this consumer runs, if any: its lock is
    /// held for as long as the consumer lives.
    subscription: Option<Subscription>,
    /// Its name, to register it again in a history that replaced the one
    /// it was registered in, and the options to do that with.
    subscribe: Option<(String, BusOptions)>,
}

impl HistoryConsumer {
    pub(crate) fn new(
        paths: BusPaths,
        options: BusOptions,
        history: HistoryOptions,
    ) -> Result<Self> {
        let (position, delivered, resumed, subscription) = match &history.subscribe {
            Some(name) => {
                let taken = Subscription::take(&paths, &options, name, history.start)?;
                (
                    Some(taken.record),
                    Some(taken.delivered),
                    taken.resumed,
                    Some(taken.subscription),
                )
            }
            None => {
                let position = history.position_file.map(PositionFile::new);
                let delivered = position
                    .as_ref()
                    .map(PositionFile::read)
                    .transpose()?
                    .flatten();
                (position, delivered, delivered.is_some(), None)
            }
        };
        // Before anything is delivered: a position that cannot be recorded
        // would otherwise be found out only after the first chunk.
        if let Some(position) = &position {
            position.check_writable()?;
        }
        let next = match delivered {
            Some(delivered) => Some(delivered.saturating_add(1)),
            None => match history.start {
                Start::Seq(seq) => Some(seq.max(1)),
                Start::Newest | Start::Oldest => None,
            },
        };
        // Unsequenced chunks are not recorded in the position file: the one
        // in `F` now may have been delivered before the restart, so a
        // resuming consumer leaves it out rather than repeat it.
        let seen = match resumed {
            true => open_regular(paths.data())?.map(|(file, meta)| Seen {
                id: (meta.dev(), meta.ino()),
                _file: file,
            }),
            false => None,
        };
        let mut consumer = HistoryConsumer {
            watcher: Watcher::new(&paths, &options, Awaited::Publication),
            paths,
            strict: history.strict,
            position,
            state: State::Waiting { next },
            seen,
            no_history: false,
            told_no_history: false,
            report: Report::default(),
            progress: Progress::new("delivered"),
            ended: None,
            failed: false,
            unreported_loss: None,
            after_loss: None,
            subscription,
            subscribe: history.subscribe.map(|name| (name, options.clone())),
        };
        // Look now, so that "the first chunk published after it started"
        // means after this constructor returned.
        consumer.settle(Some(history.start))?;
        Ok(consumer)
    }

    /// Blocks until the next event and writes the chunk, if it is one, to
    /// `out` (a file, pipe, socket or terminal descriptor, such as standard
    /// output) without copying it through user space. The event carries the
    /// chunk's size. Once the end chunk was delivered, it returns
    /// [`HistoryEvent::End`] again at once. See
    /// [how it waits](HistoryConsumer#waiting).
    pub fn deliver_to(&mut self, out: impl AsFd) -> Result<HistoryEvent<u64>> {
        self.deliver(&mut Output::new(out.as_fd()))
    }

    /// [`HistoryConsumer::deliver_to`] for an output described once, which
    /// saves inspecting the descriptor again for every chunk.
    pub fn deliver(&mut self, output: &mut Output<'_>) -> Result<HistoryEvent<u64>> {
        if let Some(seq) = self.ended {
            return Ok(HistoryEvent::End { seq });
        }
        self.next_event(output)
    }

    /// [`HistoryConsumer::recv`], waiting at most `timeout` for the bus:
    /// fails with [`Error::TimedOut`] when no event came in time, as
    /// [`std::sync::mpsc::Receiver::recv_timeout`] does, having taken
    /// nothing and recorded nothing in the position file. An event ready at
    /// the deadline is still returned. `Ok(None)` follows
    /// [`HistoryEvent::End`], as for `recv`.
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use std::time::Duration;
    /// use filebus::{Bus, BusOptions, Error, HistoryEvent, HistoryOptions, ProducerOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let mut consumer = bus.history_consumer(HistoryOptions::default())?;
    /// let waited = consumer.recv_timeout(Duration::from_millis(50));
    /// assert!(matches!(waited, Err(Error::TimedOut)));
    /// let retain = ProducerOptions::default().with_retain(NonZeroU64::new(10));
    /// bus.producer_with(retain)?.publish(b"news")?;
    /// assert_eq!(
    ///     consumer.recv_timeout(Duration::from_secs(60))?,
    ///     Some(HistoryEvent::Chunk { seq: 1, data: b"news".to_vec() })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<HistoryEvent<Vec<u8>>>> {
        // A deadline too far to represent is no deadline.
        self.watcher
            .set_deadline(Instant::now().checked_add(timeout));
        let received = self.recv();
        self.watcher.set_deadline(None);
        received
    }

    /// [`HistoryConsumer::recv`] without waiting for the bus: the next
    /// event if it is there now, or [`Error::TimedOut`]. The same as
    /// [`HistoryConsumer::recv_timeout`] with a zero timeout.
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use filebus::{Bus, BusOptions, Error, HistoryEvent, HistoryOptions, ProducerOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let mut consumer = bus.history_consumer(HistoryOptions::default())?;
    /// assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    /// let retain = ProducerOptions::default().with_retain(NonZeroU64::new(10));
    /// bus.producer_with(retain)?.publish(b"news")?;
    /// assert_eq!(
    ///     consumer.try_recv()?,
    ///     Some(HistoryEvent::Chunk { seq: 1, data: b"news".to_vec() })
    /// );
    /// assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<HistoryEvent<Vec<u8>>>> {
        self.recv_timeout(Duration::ZERO)
    }

    /// A handle that stops this consumer from another thread (see
    /// [`Stop`]); every call returns a clone of the same one. Fails only
    /// when the pipe it wakes waits through cannot be made (out of
    /// descriptors).
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, Error, HistoryOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let mut consumer = bus.history_consumer(HistoryOptions::default())?;
    /// let stop = consumer.stopper()?;
    /// std::thread::spawn(move || stop.stop());
    /// assert!(matches!(consumer.recv(), Err(Error::Stopped)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stopper(&mut self) -> Result<Stop> {
        self.watcher.stopper()
    }

    /// Blocks until the next event and returns it with the chunk's content.
    /// After [`HistoryEvent::End`] it returns `Ok(None)`. See
    /// [how it waits](HistoryConsumer#waiting).
    pub fn recv(&mut self) -> Result<Option<HistoryEvent<Vec<u8>>>> {
        if self.ended.is_some() {
            return Ok(None);
        }
        let mut collect = Collect::default();
        let event = self.next_event(&mut collect)?;
        Ok(Some(event.map(|_size| collect.into_bytes())))
    }

    /// Decides, without blocking, whether to follow the history: once
    /// `F.history/` has entries. `start` is given only on the first look,
    /// when a start position applies to entries that exist already.
    fn settle(&mut self, start: Option<Start>) -> Result<()> {
        let State::Waiting { next } = self.state else {
            return Ok(());
        };
        // `F` first: a retaining producer makes its history before its
        // first `F`, so an `F` seen before the history was found missing is
        // one without history. Looked at the other way round, a producer
        // starting between the two looks passes for one that keeps none
        // (seen across two GlusterFS clients, where each look is a round
        // trip to the server).
        let data_exists = !self.told_no_history && self.paths.data().symlink_metadata().is_ok();
        let Some(dir) = HistoryDir::open(self.paths.history())? else {
            self.no_history = true;
            if data_exists {
                log::warn!(
                    "{} has no history ({} is missing); following it as a lossy consumer \
                     until the history appears",
                    self.paths.data().display(),
                    self.paths.history().display()
                );
                self.told_no_history = true;
            }
            return Ok(());
        };
        self.no_history = false;
        let Some((oldest, newest)) = dir.scan(u64::MAX)?.range else {
            return Ok(());
        };
        let next = match (next, start) {
            (Some(next), _) => next,
            (None, Some(Start::Newest)) => dir.start_at(Start::Newest, (oldest, newest))?,
            // Oldest, or entries that all appeared after the start.
            (None, _) => oldest,
        };
        if self.told_no_history {
            log::warn!(
                "{} appeared; following it from chunk {next}",
                dir.path.display()
            );
        } else {
            log::info!("following {} from chunk {next}", dir.path.display());
        }
        self.state = State::Following {
            dir,
            next,
            witness: None,
            delivered: None,
            warned_ahead: false,
            renewed: false,
        };
        Ok(())
    }

    /// The next event; a chunk goes to `sink`, and the event carries its
    /// size.
    fn next_event(&mut self, sink: &mut impl Sink) -> Result<HistoryEvent<u64>> {
        self.watcher.check_stop()?;
        // In a child made by fork(2), the parent runs the subscription: two
        // processes advancing one record would each miss chunks.
        if let (Some(subscription), Some((name, _))) = (&self.subscription, &self.subscribe)
            && !subscription.is_ours()
        {
            return Err(Error::SubscriberRunning {
                name: name.clone(),
                path: self.paths.data().to_path_buf(),
                pid: None,
                removing: false,
            });
        }
        loop {
            let step = match self.after_loss.take() {
                Some(step) => step,
                None => {
                    self.watcher.arm();
                    self.settle(None)?;
                    match self.state {
                        State::Waiting { .. } => self.step_waiting()?,
                        State::Following { .. } => self.step_following()?,
                    }
                }
            };
            if let Some(loss) = self.unreported_loss
                && !matches!(step, Step::Again | Step::Lost(_))
            {
                // A loss is reported before waiting, too: the chunk it
                // resumes at went with the rest (the history was removed).
                if !matches!(step, Step::Wait) {
                    self.after_loss = Some(step);
                }
                self.unreported_loss = None;
                return Ok(HistoryEvent::Lost(loss));
            }
            match step {
                Step::Wait => {
                    let (state, paths) = (&self.state, &self.paths);
                    self.watcher.waiting_for(|| state.awaited(paths));
                    self.watcher.wait()?
                }
                Step::Again => {}
                Step::Lost(loss) => {
                    if self.strict {
                        return Err(Error::FellBehind {
                            path: self.paths.data().to_path_buf(),
                            loss,
                        });
                    }
                    if let State::Following { next, .. } = &mut self.state {
                        *next = loss.resume_at;
                    }
                    self.unreported_loss = Some(match self.unreported_loss {
                        // The chunk it was to resume at was pruned before
                        // it was opened: the same gap, longer.
                        Some(pending) if pending.resume_at == loss.first => Loss {
                            first: pending.first,
                            ..loss
                        },
                        Some(pending) => {
                            // Not the same gap (a new history was followed
                            // from its oldest chunk): one report each.
                            self.unreported_loss = Some(loss);
                            return Ok(HistoryEvent::Lost(pending));
                        }
                        None => loss,
                    });
                }
                Step::Unsequenced(mut chunk) => {
                    // An unsequenced chunk is `F`: reading it is reading `F`.
                    let data = match sink.take(&mut chunk.file, chunk.size) {
                        Ok(()) => chunk.size,
                        Err(e) if e.stale_before_output() => {
                            log::info!("{}; looking again", e.at(self.paths.data()));
                            self.watcher.wait()?;
                            continue;
                        }
                        Err(e) => return Err(e.at(self.paths.data())),
                    };
                    self.progress.chunk(chunk.size, || None);
                    match self.state {
                        State::Following { next, .. } => {
                            self.report.chunk(self.paths.data(), next - 1);
                        }
                        State::Waiting { .. } if !self.no_history => {
                            self.report.chunk(self.paths.data(), 0);
                        }
                        // The notice that the bus has no history said it.
                        State::Waiting { .. } => {}
                    }
                    self.seen = Some(Seen {
                        id: chunk.id,
                        _file: chunk.file,
                    });
                    return Ok(HistoryEvent::Unsequenced(data));
                }
                Step::Entry {
                    seq,
                    mut chunk,
                    is_data,
                } => {
                    let event = if chunk.size == 0 {
                        self.ended = Some(seq);
                        self.report.flush(self.paths.data());
                        HistoryEvent::End { seq }
                    } else {
                        let path = match &self.state {
                            State::Following { dir, .. } if !is_data => dir.entry_path(seq),
                            _ => self.paths.data().to_path_buf(),
                        };
                        let data = match sink.take(&mut chunk.file, chunk.size) {
                            Ok(()) => chunk.size,
                            // Pruned through another client of a network
                            // filesystem: looking again reports it lost.
                            Err(e) if e.stale_before_output() => {
                                log::info!("{}; looking again", e.at(&path));
                                self.watcher.wait()?;
                                continue;
                            }
                            Err(e) => return Err(e.at(&path)),
                        };
                        let state = &self.state;
                        self.progress.chunk(chunk.size, || match state {
                            State::Following { dir, .. } => {
                                let newest = dir.newest_from(seq).ok()?;
                                Some(format!(
                                    "at chunk {seq}, {} behind the newest",
                                    newest - seq
                                ))
                            }
                            State::Waiting { .. } => None,
                        });
                        HistoryEvent::Chunk { seq, data }
                    };
                    if let State::Following {
                        next,
                        witness,
                        delivered,
                        ..
                    } = &mut self.state
                    {
                        *next = seq + 1;
                        *witness = Some(seq);
                        *delivered = Some(chunk.id);
                    }
                    if is_data {
                        self.seen = Some(Seen {
                            id: chunk.id,
                            _file: chunk.file,
                        });
                    }
                    if let Some(position) = &self.position {
                        position.write(seq)?;
                    }
                    return Ok(event);
                }
            }
        }
    }

    /// Without history entries: a new chunk in `F` is unsequenced.
    fn step_waiting(&mut self) -> Result<Step> {
        match look_at_data(&self.paths, &mut self.seen)? {
            InF::Unchanged => Ok(Step::Wait),
            // A chunk with a history entry: the history is appearing.
            InF::Numbered(_) | InF::Replaced => Ok(Step::Again),
            InF::Unsequenced(chunk) => {
                // Entries that appeared since the last look may come before
                // it, or it may be one of them being replaced: following
                // them decides.
                self.settle(None)?;
                Ok(match self.state {
                    State::Waiting { .. } => Step::Unsequenced(chunk),
                    State::Following { .. } => Step::Again,
                })
            }
        }
    }

    /// Following the history: entry `next`, a loss, or an unsequenced
    /// chunk in its place.
    fn step_following(&mut self) -> Result<Step> {
        let State::Following {
            dir,
            next,
            witness,
            delivered,
            warned_ahead,
            renewed,
        } = &mut self.state
        else {
            return Ok(Step::Again);
        };
        let seq = *next;
        if let Some((file, meta)) = dir.open_entry(seq)? {
            let chunk = Chunk::new(file, &meta);
            // A second name means the entry is `F`, or still being published
            // (linked, not renamed to `F` yet, under the producer's lock).
            let mut is_data = false;
            if meta.nlink() > 1 {
                is_data = stat_data(&self.paths)? == Some(chunk.id);
                if !is_data {
                    // `F` first: a chunk seen there while the entry is still
                    // staged afterwards was there before the entry's rename.
                    let in_f = look_at_data(&self.paths, &mut self.seen)?;
                    if is_staged(&self.paths, chunk.id)? {
                        // Not published yet: its rename may still fail and
                        // the entry be withdrawn. An unsequenced chunk in
                        // `F` came before it, unless it is the previous
                        // entry, being replaced by this one.
                        return Ok(match in_f {
                            InF::Unsequenced(earlier) if !dir.precedes(seq, earlier.id)? => {
                                Step::Unsequenced(earlier)
                            }
                            InF::Replaced => Step::Again,
                            _ => Step::Wait,
                        });
                    }
                    // No longer staged: renamed to `F`, or withdrawn, which
                    // removes the entry before `F.__new__`.
                    if dir.id_of(seq)? != Some(chunk.id) {
                        return Ok(Step::Again);
                    }
                }
            }
            return Ok(Step::Entry {
                seq,
                chunk,
                is_data,
            });
        }
        // Whether the newest entry is the one before `next`: only then does
        // a chunk in `F` come right after the last one delivered, rather
        // than before the chunk the consumer was asked to start at.
        let caught_up;
        if let Some(witness) = *witness
            && dir.has(witness)?
        {
            caught_up = witness + 1 == seq;
        } else {
            if !dir.still_named()? {
                match HistoryDir::open(self.paths.history())? {
                    Some(reopened) => {
                        *dir = reopened;
                        *renewed = true;
                        // Its record went with the old history: without one
                        // in the new, producers would not wait for it.
                        if let Some((name, options)) = &self.subscribe {
                            let taken =
                                Subscription::take(&self.paths, options, name, Start::Oldest)?;
                            self.position = Some(taken.record);
                            self.subscription = Some(taken.subscription);
                        }
                    }
                    None => return Ok(Step::Wait),
                }
            }
            let scan = dir.scan(seq)?;
            // A new history whose numbers start below the next one to
            // deliver is a new stream (its producer started afresh in an
            // empty directory), not the old one gone back: it is followed
            // from its oldest chunk, rather than have its first chunks
            // taken for ones delivered already.
            if *renewed && let Some((oldest, _)) = scan.range {
                *renewed = false;
                if oldest < seq {
                    log::warn!(
                        "{} was replaced by a new history; following it from chunk {oldest}",
                        dir.path.display()
                    );
                    *next = oldest;
                    *witness = None;
                    return Ok(Step::Again);
                }
            }
            match scan.first_after {
                // Entries appear in order: with a newer one present, `seq`
                // either exists now or never will.
                Some(resume_at) if !dir.has(seq)? => {
                    return Ok(Step::Lost(Loss {
                        first: seq,
                        last: resume_at - 1,
                        resume_at,
                    }));
                }
                Some(_) => return Ok(Step::Again),
                None => {
                    if let Some((_, newest)) = scan.range
                        && newest.saturating_add(1) < seq
                        && !*warned_ahead
                    {
                        log::warn!(
                            "waiting for chunk {seq}, but the newest in {} is {newest} \
                             (was the history removed?)",
                            dir.path.display()
                        );
                        *warned_ahead = true;
                    }
                    *witness = scan.range.map(|(_, newest)| newest);
                    caught_up = *witness == Some(seq - 1);
                }
            }
        }
        if !caught_up {
            return Ok(Step::Wait);
        }
        Ok(match look_at_data(&self.paths, &mut self.seen)? {
            InF::Unchanged => Step::Wait,
            // Usually the entry just delivered, on its way out of `F`.
            InF::Numbered(id) if Some(id) == *delivered => Step::Again,
            // Another numbered chunk new in `F` while entry `next` is
            // missing and the one before it is there: `next` may have
            // appeared since, or a newer entry was published with `next`
            // never to come (a gap: producers never leave one, but entries
            // removed by hand do). Looking again without the witness scans
            // for that.
            InF::Numbered(_) => {
                *witness = None;
                Step::Again
            }
            InF::Replaced => Step::Again,
            // Seen in `F` while entry `next` did not exist: it comes before
            // that entry, unless the entry appeared, was renamed to `F` and
            // replaced meanwhile; then the entry goes first.
            InF::Unsequenced(_) if dir.has(seq)? => Step::Again,
            InF::Unsequenced(chunk) if dir.precedes(seq, chunk.id)? => {
                // A numbered chunk on its way out of `F`: its replacement
                // raises an event.
                self.seen = Some(Seen {
                    id: chunk.id,
                    _file: chunk.file,
                });
                Step::Wait
            }
            InF::Unsequenced(chunk) => Step::Unsequenced(chunk),
        })
    }
}

impl Iterator for HistoryConsumer {
    type Item = Result<HistoryEvent<Vec<u8>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.recv().transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What keeps a chunk from being delivered both unsequenced and as a
    /// history entry (a consumer that sees the history appear, defect 9b):
    /// a chunk in `F` with a history entry is never taken as unsequenced.
    #[test]
    fn only_a_chunk_whose_only_name_is_f_is_unsequenced() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let mut seen = None;
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Unchanged)
        ));
        std::fs::write(paths.data(), b"plain").unwrap();
        let Ok(InF::Unsequenced(chunk)) = look_at_data(&paths, &mut seen) else {
            panic!("a chunk with one name is unsequenced");
        };
        assert_eq!(chunk.size, 5);
        assert!(seen.is_none(), "counted as seen only once delivered");
        seen = Some(Seen {
            id: chunk.id,
            _file: chunk.file,
        });
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Unchanged)
        ));

        let history = HistoryDir::create(paths.history()).unwrap();
        let staging = dir.path().join("bus.__new__");
        std::fs::write(&staging, b"numbered").unwrap();
        assert!(history.link(&staging, 1).unwrap());
        std::fs::rename(&staging, paths.data()).unwrap();
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Numbered(_))
        ));
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Unchanged)
        ));

        // An empty chunk with one name is a lossless end marker: skipped.
        std::fs::write(&staging, b"").unwrap();
        std::fs::rename(&staging, paths.data()).unwrap();
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Unchanged)
        ));
        assert!(matches!(
            look_at_data(&paths, &mut seen),
            Ok(InF::Unchanged)
        ));
    }

    /// A history directory holding the entries `seqs`, each the text of its
    /// number; `F` does not exist (nothing unsequenced to deliver).
    fn history_with(seqs: impl IntoIterator<Item = u64>) -> (tempfile::TempDir, BusPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let history = HistoryDir::create(paths.history()).unwrap();
        for seq in seqs {
            std::fs::write(history.entry_path(seq), seq.to_string()).unwrap();
        }
        (dir, paths)
    }

    /// Everything a consumer starting at `start` delivers without waiting.
    fn events_from(paths: &BusPaths, start: Start) -> Vec<HistoryEvent<Vec<u8>>> {
        let history = HistoryOptions::default().with_start(start);
        let mut consumer =
            HistoryConsumer::new(paths.clone(), BusOptions::default(), history).unwrap();
        std::iter::from_fn(|| match consumer.try_recv() {
            Ok(event) => event,
            Err(Error::TimedOut) => None,
            Err(e) => panic!("{e}"),
        })
        .collect()
    }

    fn chunks(seqs: impl IntoIterator<Item = u64>) -> Vec<HistoryEvent<Vec<u8>>> {
        seqs.into_iter()
            .map(|seq| HistoryEvent::Chunk {
                seq,
                data: seq.to_string().into_bytes(),
            })
            .collect()
    }

    /// Entries missing in the middle of those a consumer has yet to read
    /// (removed by hand: producers only prune the oldest): the loss names
    /// exactly the missing range, then delivery resumes after it.
    #[test]
    fn entries_missing_in_the_middle_are_reported_as_exactly_that_range() {
        let (_dir, paths) = history_with((1..=3).chain(7..=9));
        let mut want = vec![HistoryEvent::Lost(Loss {
            first: 4,
            last: 6,
            resume_at: 7,
        })];
        want.extend(chunks(7..=9));
        assert_eq!(events_from(&paths, Start::Seq(4)), want);

        // A single missing entry is a range of one.
        let (_dir, paths) = history_with([1, 2, 4]);
        let mut want = vec![HistoryEvent::Lost(Loss {
            first: 3,
            last: 3,
            resume_at: 4,
        })];
        want.extend(chunks([4]));
        assert_eq!(events_from(&paths, Start::Seq(3)), want);
    }

    /// A consumer that has delivered every entry there was, when the next
    /// ones never appear (removed by hand) and a newer chunk is published:
    /// it reports the gap instead of waiting for ever for entries that can
    /// no longer come.
    #[test]
    fn a_gap_after_the_last_delivered_entry_is_reported_when_a_newer_chunk_comes() {
        let (_dir, paths) = history_with(1..=3);
        let history = HistoryOptions::default().with_start(Start::Oldest);
        let mut consumer =
            HistoryConsumer::new(paths.clone(), BusOptions::default(), history).unwrap();
        for want in chunks(1..=3) {
            assert_eq!(consumer.try_recv().unwrap(), Some(want));
        }
        assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
        // Chunk 7 published as a producer does: linked, then renamed to F.
        let dir = HistoryDir::open(paths.history()).unwrap().unwrap();
        std::fs::write(paths.staging(), b"7").unwrap();
        assert!(dir.link(paths.staging(), 7).unwrap());
        std::fs::rename(paths.staging(), paths.data()).unwrap();
        let mut want = vec![HistoryEvent::Lost(Loss {
            first: 4,
            last: 6,
            resume_at: 7,
        })];
        want.extend(chunks([7]));
        let got: Vec<_> = std::iter::from_fn(|| consumer.try_recv().ok().flatten()).collect();
        assert_eq!(got, want);
    }

    /// Entries pruned at the front: a consumer asking for one of them
    /// learns exactly which were lost, up to the oldest still retained.
    #[test]
    fn entries_pruned_at_the_front_are_reported_up_to_the_oldest_retained() {
        let (_dir, paths) = history_with(5..=8);
        let mut want = vec![HistoryEvent::Lost(Loss {
            first: 2,
            last: 4,
            resume_at: 5,
        })];
        want.extend(chunks(5..=8));
        assert_eq!(events_from(&paths, Start::Seq(2)), want);
        // Starting at the oldest retained entry loses nothing.
        assert_eq!(events_from(&paths, Start::Oldest), chunks(5..=8));
    }
}

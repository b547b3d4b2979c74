//! Publishing chunks. A chunk is written whole into a file of its own
//! before it gets a name, and under the bus lock that file becomes
//! `F.__new__` and is renamed over `F`, so that `F` always names one whole
//! chunk and the lock is held only for a few system calls (see
//! [`Producer::publish_with`]). With retained history the staged chunk is
//! also linked into `F.history/` before the rename (see
//! [`crate::history`]).

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunker::{Chunker, Source};
use crate::error::{Error, Result};
use crate::files::{create_afresh, create_dirs, make_afresh, stat_regular};
use crate::history::Retention;
use crate::lock::{BusLock, LockGuard, Vouch};
use crate::options::{BusOptions, Mode, ProducerOptions};
use crate::paths::BusPaths;
use crate::progress::Progress;
use crate::remote;
use crate::sentinel::Sentinel;
use crate::shm_log::{self, FileId, LogWriter};
use crate::stop::Stop;
use crate::sys;
use crate::watch::{Awaited, Watcher};

mod settler;

use settler::Settler;

/// The writing side of a bus. Obtained from [`crate::Bus::producer`].
///
/// # Waiting
///
/// Publishing takes the bus lock, which others hold for a few system calls
/// or, a lossless consumer, for one write of a chunk its output can take
/// (see [`crate::Output`]); a [`Stop`] does not interrupt that. In lossless
/// mode a producer also waits for the previous chunk to be consumed: its
/// removal ends the wait at once with file monitoring (inotify), and within
/// [`BusOptions::sleep_interval`] without it, and a [`Stop`] from
/// [`Producer::stopper`] ends it at once (within a millisecond while
/// polling pauses are shorter than that), publishing nothing.
///
/// With retained history, a producer also waits, before it takes the lock,
/// while a durable subscriber (see [`crate::HistoryOptions::subscribe`])
/// still needs a chunk that publishing would prune, for at most
/// [`ProducerOptions::untether_after`] without progress from that
/// subscriber. A record's change ends the wait at once with file
/// monitoring, within the polling pause without it; a [`Stop`] ends it at
/// once, publishing nothing.
#[derive(Debug)]
pub struct Producer {
    paths: BusPaths,
    options: BusOptions,
    producer: ProducerOptions,
    lock: BusLock,
    watcher: Watcher,
    retention: Option<Retention>,
    last_seq: Option<u64>,
    /// Whether chunks are prepared in unnamed files (`O_TMPFILE`) before the
    /// lock is taken; false where the filesystem or `/proc` does not allow it.
    unnamed_staging: bool,
    /// Lossless: the watcher was armed since `F` was last checked.
    armed: bool,
    /// Lossy, on a disk: the staged chunk's blocks are allocated before it
    /// is written. On ext4 a rename over `F` of a file whose blocks are
    /// not allocated yet starts their writeback inside `rename(2)`, before
    /// the consumers are told (`auto_da_alloc`; see
    /// docs/latency-profile.md). Off in lossless mode, where nothing is
    /// renamed over `F` and allocated blocks only make removal dearer, and
    /// on tmpfs, where it saves nothing.
    preallocate: bool,
    /// Lossy: the shared-memory log chunks are appended to (see
    /// [`crate::shm_log`]), opened at the first publication.
    log: Log,
    /// With a log: the unnamed file the next chunk is written into, made
    /// after the previous publication. Not a child's made by `fork(2)`:
    /// whichever of the two named it `F` first, the other would write its
    /// chunk into `F` in place.
    spare: Option<sys::Owned<File>>,
    /// With a log, publishing a stream: the newest chunk, in the log
    /// already, whose rename to `F` is put off (see [`SETTLE_BOUND`]).
    deferred: Option<Deferred>,
    /// With a log, publishing a stream: when the doorbell last rang, and
    /// whether records committed since wait for the next ring (see
    /// [`RING_INTERVAL`]).
    last_ring: Option<Instant>,
    ring_owed: bool,
    /// With a log, publishing through [`Producer::publish`] without
    /// retained history: the thread that renames the newest chunk to `F`
    /// in its stead, started at the first chunk it puts off.
    settler: Option<Settler>,
    progress: Progress,
}

/// How long, at most, `F` lags behind the shared-memory log when a producer
/// with a log publishes a stream: the newest chunk reaches `F` at most this
/// long after the oldest chunk not yet in `F` went into the log, and at once
/// when the input ends. The original's consumers were only ever promised the
/// latest chunk, readers of the log get every one, and renaming `F` once
/// per burst instead of once per chunk is what lets a stream run at the
/// speed of memory. Renaming later also leaves the processor to the
/// readers the log just woke: on a small machine the rename's few hundred
/// µs of file work would otherwise delay them.
pub const SETTLE_BOUND: Duration = Duration::from_millis(1);

/// How many bytes of chunks a producer publishing a stream appends to the
/// log under one hold of the bus lock, at most: enough to spread the lock's
/// and the doorbell's system calls over many small chunks, little enough to
/// hold the lock for a few µs and to wake readers at least once per
/// 64 KiB.
const BATCH_BYTES: usize = 64 << 10;

/// How often, at most, a producer publishing a stream rings the log's
/// doorbell while its input keeps whole batches ready: a batch committed
/// within this long of the last ring waits for the next one, which comes
/// with the first batch after this long or as soon as the input pauses,
/// ends or fails. Each ring wakes every waiting reader, and the producer
/// pays for each watch on the log (a queued inotify event); a stream that
/// outruns its readers thus wakes each of them about once per interval
/// instead of once per batch, which is what leaves 32 readers' wake-ups
/// off the producer's processor. Chunks that the input hands over no
/// faster than the producer takes them are rung for at once.
const RING_INTERVAL: Duration = Duration::from_millis(1);

/// A chunk in the log whose rename to `F` was put off.
#[derive(Debug)]
struct Deferred {
    seq: u64,
    /// When it must reach `F`: [`SETTLE_BOUND`] after the oldest chunk not
    /// yet in `F` went into the log.
    deadline: Instant,
    /// What `F` was when the chunk was appended: if it is something else
    /// now, a newer chunk reached `F`, and this one stays off it.
    replaces: Option<FileId>,
    bytes: Vec<u8>,
}

/// The state of a producer's shared-memory log.
#[derive(Debug)]
enum Log {
    Untried,
    /// Shared with the [`Settler`], which settles the chunks it renames,
    /// with the sentinel on the bus's names where there is one.
    Open(Arc<LogWriter>, Option<Arc<Sentinel>>),
    /// None wanted, or none to be had: chunks go through `F` alone.
    Off,
}

impl Log {
    /// The log to append to, opened at the first publication (with the
    /// bus lock held, `size` bytes of ring). A log that fails is left for
    /// good (said with `-v`): chunks still reach `F`.
    fn writer(&mut self, paths: &BusPaths, size: usize) -> Option<LogSide<'_>> {
        if let Log::Untried = self {
            *self = match LogWriter::open(paths, size) {
                Ok(writer) => Log::Open(Arc::new(writer), Sentinel::new(paths).map(Arc::new)),
                Err(e) => {
                    log::info!(
                        "no shared-memory log at {} ({e}); publishing through {} alone",
                        shm_log::log_path(paths).display(),
                        paths.data().display()
                    );
                    Log::Off
                }
            };
        }
        self.side()
    }

    fn open(&self) -> Option<&LogWriter> {
        self.side().map(|side| side.writer)
    }

    fn side(&self) -> Option<LogSide<'_>> {
        match self {
            Log::Open(writer, sentinel) => Some(LogSide {
                writer,
                sentinel: sentinel.as_deref(),
            }),
            _ => None,
        }
    }

    fn sentinel(&self) -> Option<&Sentinel> {
        self.side().and_then(|side| side.sentinel)
    }

    fn leave(&mut self, paths: &BusPaths, e: &io::Error) {
        log::info!(
            "leaving the shared-memory log {} ({e}); publishing through {} alone",
            shm_log::log_path(paths).display(),
            paths.data().display()
        );
        *self = Log::Off;
    }
}

/// The log a chunk goes into, and the sentinel on the bus's names that
/// tells what `F` is without looking where there is one.
#[derive(Debug, Clone, Copy)]
struct LogSide<'a> {
    writer: &'a LogWriter,
    sentinel: Option<&'a Sentinel>,
}

impl LogSide<'_> {
    /// What `F` is; called with the bus lock held.
    fn current_file(&self, paths: &BusPaths) -> Option<FileId> {
        match self.sentinel {
            Some(sentinel) => sentinel.current_file(),
            None => shm_log::current_file(paths.data()),
        }
    }
}

impl Producer {
    /// A producer; `producer` was checked against `options` by the caller.
    pub(crate) fn new(
        paths: BusPaths,
        options: BusOptions,
        producer: ProducerOptions,
    ) -> Result<Self> {
        create_dirs(paths.dir())?;
        Ok(Producer {
            lock: BusLock::new(paths.lock().to_path_buf(), options.wait_policy()),
            watcher: Watcher::new(&paths, &options, Awaited::Removal),
            retention: producer
                .retain
                .map(|keep| Retention::new(&paths, &options, keep, producer.untether_after)),
            last_seq: None,
            unnamed_staging: true,
            armed: false,
            preallocate: options.mode == Mode::Lossy
                && !sys::in_memory(paths.dir())
                && remote::shared_filesystem(paths.dir()).is_none(),
            log: if options.mode == Mode::Lossy
                && producer.shm_log_size > 0
                && shm_log::wanted(paths.dir())
            {
                Log::Untried
            } else {
                Log::Off
            },
            spare: None,
            deferred: None,
            last_ring: None,
            ring_owed: false,
            settler: None,
            progress: Progress::new("published"),
            paths,
            options,
            producer,
        })
    }

    /// The options this producer was made with.
    pub fn options(&self) -> &ProducerOptions {
        &self.producer
    }

    /// A handle that stops this producer from another thread (see
    /// [`Stop`]); every call returns a clone of the same one. Fails only
    /// when the pipe it wakes waits through cannot be made (out of
    /// descriptors).
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, Error, Mode};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default().with_mode(Mode::Lossless));
    /// let mut producer = bus.producer()?;
    /// producer.publish(b"first")?;
    /// let stop = producer.stopper()?;
    /// std::thread::spawn(move || stop.stop());
    /// // No consumer takes the first chunk: only the stop ends this wait.
    /// assert!(matches!(producer.publish(b"second"), Err(Error::Stopped)));
    /// assert_eq!(std::fs::read(bus.path())?, b"first");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stopper(&mut self) -> Result<Stop> {
        let stop = self.watcher.stopper()?;
        if let Some(retention) = &mut self.retention {
            retention.share_stop(stop.clone());
        }
        Ok(stop)
    }

    /// With retained history, the sequence number of the chunk this
    /// producer published last.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Publishes one chunk. In lossless mode this first waits until the
    /// previous chunk has been consumed (see [how it waits](Producer#waiting)).
    ///
    /// In lossy mode with a shared-memory log (and no retained history),
    /// it returns once the chunk is in the log and its readers were woken;
    /// `F` names it within [`SETTLE_BOUND`], renamed by a thread of this
    /// producer's own, or a newer chunk does. [`Producer::finish`] (or
    /// dropping the producer) puts the last chunk in `F` at once. A rename
    /// that failed there is returned by the next call of `publish` or
    /// `finish`.
    ///
    /// An empty chunk is the end-of-stream marker in lossless mode; use
    /// [`Producer::finish`] for that.
    pub fn publish(&mut self, chunk: &[u8]) -> Result<()> {
        self.publish_bytes(chunk)
    }

    /// Whether this producer keeps a history (`--retain`): each chunk is
    /// linked into it as it is published, never in batches.
    pub(crate) fn retains(&self) -> bool {
        self.retention.is_some()
    }

    /// Whether chunks may go through the shared-memory log (lossy mode,
    /// where one may be had): then they are published from memory, by
    /// [`Producer::publish_bytes`].
    pub(crate) fn may_use_log(&self) -> bool {
        self.unnamed_staging && !matches!(self.log, Log::Off)
    }

    /// Publishes `chunk`. With a log it goes into the log first, waking its
    /// readers, and then to `F`: without retained history, within
    /// [`SETTLE_BOUND`] by the producer's [`Settler`] thread (at once with
    /// history, whose links are made under the same hold of the lock).
    pub(crate) fn publish_bytes(&mut self, chunk: &[u8]) -> Result<()> {
        if chunk.is_empty() || !self.may_use_log() {
            return self.publish_with(chunk.len(), |file| file.write_all(chunk));
        }
        self.watcher.check_stop()?;
        if let Some(settler) = &self.settler {
            settler.failure()?;
        }
        if let Some(retention) = &mut self.retention {
            retention.hold_back()?;
        }
        // Put off when the log is open already and holds the chunk's
        // bytes; otherwise `F` gets it here, from a file made before the
        // lock is taken.
        let defer =
            self.retention.is_none() && self.log.open().is_some_and(|w| w.holds(chunk.len()));
        let spare = match defer {
            true => None,
            false => match self.spare_file()? {
                Some(file) => Some(file),
                None => return self.publish_with(chunk.len(), |file| file.write_all(chunk)),
            },
        };
        let held = acquire_vouched(&mut self.lock, &self.paths, self.log.sentinel())?;
        let replaces = match self.log.side() {
            Some(side) => side.current_file(&self.paths),
            // The log is opened below, at the first publication.
            None => shm_log::current_file(self.paths.data()),
        };
        let mut appended = None;
        if let Some(side) = self.log.writer(&self.paths, self.producer.shm_log_size) {
            let writer = side.writer;
            let rung = writer
                .append(chunk, replaces)
                .and_then(|a| writer.ring_doorbell().map(|()| a));
            match rung {
                Ok(a) => appended = Some(a),
                Err(e) => self.log.leave(&self.paths, &e),
            }
        }
        // A newer chunk: one put off stays off `F`. The settler's is
        // replaced when this one is handed over, which keeps its deadline,
        // and dropped when this one goes to `F` here.
        self.deferred = None;
        let cancel = |settler: &Option<Settler>| {
            if let Some(settler) = settler {
                settler.cancel();
            }
        };
        let Some(mut spare) = spare else {
            let (Some(appended), Log::Open(writer, sentinel)) = (appended, &self.log) else {
                // The log failed: the chunk goes through `F` alone.
                cancel(&self.settler);
                drop(held);
                return self.publish_with(chunk.len(), |file| file.write_all(chunk));
            };
            // In a child made by fork(2) the settler inherited has no
            // thread.
            let settler = match &mut self.settler {
                Some(settler) if settler.is_ours() => settler,
                inherited => {
                    let log = (Arc::clone(writer), sentinel.clone());
                    let (policy, spare) = (
                        self.options.wait_policy(),
                        self.spare.take().and_then(sys::Owned::take),
                    );
                    let started = Settler::start(&self.paths, policy, log, spare, self.preallocate);
                    inherited.insert(started?)
                }
            };
            settler.defer(appended.seq, replaces, chunk)?;
            drop(held);
            self.progress.chunk(chunk.len() as u64, || None);
            return Ok(());
        };
        cancel(&self.settler);
        let mut settled = settle(
            &self.paths,
            self.log.side(),
            &mut spare,
            chunk,
            appended.map(|a| a.seq),
            &mut self.preallocate,
            self.retention.as_mut().map(|r| (r, &mut self.last_seq)),
        );
        if settled.is_ok()
            && let Some(retention) = &mut self.retention
        {
            settled = retention.prune();
        }
        drop(held);
        drop(spare);
        self.after_settle(settled)?;
        self.progress.chunk(chunk.len() as u64, || None);
        Ok(())
    }

    /// Publishes a stream through the log, in batches: each batch is the
    /// chunks `chunker` cuts without waiting for input (up to
    /// [`BATCH_BYTES`]), appended under one hold of the bus lock, with one
    /// ring of the doorbell. `F` gets the newest chunk of a batch at once if
    /// the oldest chunk not yet in `F` went into the log [`SETTLE_BOUND`]
    /// ago; otherwise its rename is put off until then, or until a newer
    /// chunk replaces it. Before waiting for input, the chunker lets
    /// [`Producer::settle_by_deadline`] keep that bound.
    pub(crate) fn publish_through_log<S: Source>(
        &mut self,
        chunker: &mut Chunker<S>,
        input: BorrowedFd<'_>,
    ) -> Result<()> {
        let mut newest = Vec::new();
        loop {
            let chunk = if self.deferred.is_some() || self.ring_owed {
                chunker.next_chunk_or(
                    &mut || {
                        self.ring_owed_doorbell();
                        self.settle_by_deadline(input)
                    },
                    Error::Input,
                )?
            } else {
                chunker.next_chunk().map_err(Error::Input)?
            };
            let Some(mut chunk) = chunk else {
                return Ok(());
            };
            self.watcher.check_stop()?;
            let spare = match self.may_use_log() {
                true => self.spare_file()?,
                false => None,
            };
            let Some(mut spare) = spare else {
                self.publish_bytes(chunk)?;
                continue;
            };
            let held = acquire_vouched(&mut self.lock, &self.paths, self.log.sentinel())?;
            let Some(side) = self.log.writer(&self.paths, self.producer.shm_log_size) else {
                // No log to be had: this chunk and the next go through `F`.
                drop(held);
                self.spare = Some(sys::Owned::new(spare));
                self.publish_bytes(chunk)?;
                continue;
            };
            let (writer, replaces) = (side.writer, side.current_file(&self.paths));
            let deadline = match self.deferred.take() {
                Some(deferred) => deferred.deadline,
                None => Instant::now() + SETTLE_BOUND,
            };
            let (mut batch, mut last, mut failed, mut full) = (0, None, None, false);
            loop {
                match writer.append(chunk, replaces) {
                    Ok(appended) => {
                        last = Some(appended);
                        self.progress.chunk(chunk.len() as u64, || None);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                // A chunk too large for the log is read from `F`: it goes
                // there at once.
                if last.is_some_and(|a| !a.in_log) {
                    newest.clear();
                    newest.extend_from_slice(chunk);
                    break;
                }
                batch += chunk.len();
                if batch >= BATCH_BYTES {
                    full = true;
                    break;
                }
                match chunker.next_chunk_or(&mut || Err(None), |e| Some(Error::Input(e))) {
                    Ok(Some(next)) => chunk = next,
                    Ok(None) | Err(None) => break,
                    Err(Some(e)) => {
                        failed = Some(io::Error::other(e.to_string()));
                        break;
                    }
                }
            }
            // A full batch means more input may be ready: its ring may
            // wait for the next batch's, within the interval.
            let recently = self
                .last_ring
                .is_some_and(|rung| rung.elapsed() < RING_INTERVAL);
            self.ring_owed = full && recently && failed.is_none();
            if !self.ring_owed {
                self.last_ring = Some(Instant::now());
                if let Err(e) = writer.ring_doorbell() {
                    failed.get_or_insert(e);
                }
            }
            // The newest chunk, kept for `F`, is read back from the log;
            // a log damaged under the lock (by someone else) leaves `F` to
            // the next chunk.
            if last.is_some_and(|a| a.in_log)
                && let Err(e) = writer.copy_newest(&mut newest)
            {
                failed.get_or_insert(e);
                last = None;
            }
            if let Some(e) = failed {
                self.log.leave(&self.paths, &e);
            }
            let Some(last) = last else {
                drop(held);
                self.spare = Some(sys::Owned::new(spare));
                continue;
            };
            if last.in_log && Instant::now() < deadline && self.log.open().is_some() {
                self.deferred = Some(Deferred {
                    seq: last.seq,
                    deadline,
                    replaces,
                    bytes: std::mem::take(&mut newest),
                });
                drop(held);
                self.spare = Some(sys::Owned::new(spare));
                continue;
            }
            let settled = settle(
                &self.paths,
                self.log.side(),
                &mut spare,
                &newest,
                Some(last.seq),
                &mut self.preallocate,
                None,
            );
            drop(held);
            drop(spare);
            self.after_settle(settled)?;
        }
    }

    /// Rings the doorbell for records a stream's batches committed without
    /// it (see [`RING_INTERVAL`]): before waiting for input, and once the
    /// stream has stopped, however it stopped. Without the lock, which a
    /// ring does not need: it wakes readers, who read up to `commit`.
    pub(crate) fn ring_owed_doorbell(&mut self) {
        if !std::mem::take(&mut self.ring_owed) {
            return;
        }
        self.last_ring = Some(Instant::now());
        let rung = self.log.open().map(|writer| writer.ring_doorbell());
        if let Some(Err(e)) = rung {
            self.log.leave(&self.paths, &e);
        }
    }

    /// Before waiting for input: waits for `input` to have bytes until the
    /// deadline of the chunk whose rename to `F` is put off, then renames it
    /// if the input still has none.
    pub(crate) fn settle_by_deadline(&mut self, input: BorrowedFd<'_>) -> Result<()> {
        let Some(deferred) = &self.deferred else {
            return Ok(());
        };
        let left = deferred.deadline.saturating_duration_since(Instant::now());
        if sys::wait_readable_for(input, left).map_err(Error::Input)? {
            return Ok(());
        }
        self.settle_deferred()
    }

    /// Renames to `F` the chunk whose rename [`Producer::publish_bytes`]
    /// put off, unless a newer chunk reached the log or `F` since: the
    /// last chunk of a stream is always in `F`.
    pub(crate) fn settle_deferred(&mut self) -> Result<()> {
        let Some(deferred) = self.deferred.take() else {
            return Ok(());
        };
        let Some(spare) = self.spare_file()? else {
            return Ok(());
        };
        let held = acquire(&mut self.lock, &self.paths)?;
        let mut spare = spare;
        let settled = self.log.side().and_then(|side| {
            settle_if_newest(
                &self.paths,
                side,
                &mut spare,
                &deferred,
                &mut self.preallocate,
            )
        });
        let Some(settled) = settled else {
            self.spare = Some(sys::Owned::new(spare));
            return Ok(());
        };
        drop(held);
        drop(spare);
        self.after_settle(settled)
    }

    /// The unnamed file the next chunk is written into; `None` where the
    /// filesystem has none (then named staging is used from now on).
    fn spare_file(&mut self) -> Result<Option<File>> {
        if let Some(file) = self.spare.take().and_then(sys::Owned::take) {
            return Ok(Some(file));
        }
        let mut unnamed = sys::open_unnamed(self.paths.dir());
        if unnamed
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            make_dir_again(&self.paths)?;
            unnamed = sys::open_unnamed(self.paths.dir());
        }
        match unnamed {
            Ok(Some(file)) => Ok(Some(file)),
            Ok(None) => {
                self.unnamed_staging = false;
                Ok(None)
            }
            Err(e) => Err(Error::io("create", self.paths.staging())(e)),
        }
    }

    /// After `F` was renamed (with the lock released): readers were woken
    /// before, so the next chunk's file is made now rather than on the next
    /// chunk's path, where after an idle period it is the dearest call
    /// (docs/latency-profile.md, finding 2).
    fn after_settle(&mut self, settled: Result<()>) -> Result<()> {
        settled?;
        if matches!(self.log, Log::Open(..)) {
            self.spare = sys::open_unnamed(self.paths.dir())
                .ok()
                .flatten()
                .map(sys::Owned::new);
        }
        Ok(())
    }

    /// Publishes the chunk of `len` bytes (at most) that `fill` writes into
    /// a new file. If `fill` fails, nothing is published and `F` keeps the
    /// previous chunk.
    ///
    /// The chunk is written before the lock is taken, into an unnamed file
    /// in `F`'s directory (`O_TMPFILE`); under the lock it only gets the name
    /// `F.__new__` and is renamed to `F`, as the protocol has it. So the lock
    /// is held for a few system calls whatever the chunk's size, a producer
    /// prepares its next chunk while consumers deliver the current one, and
    /// a producer killed while writing leaves nothing behind. Where unnamed
    /// files are not available, `fill` writes `F.__new__` under the lock;
    /// then it must not wait for anything outside the bus.
    pub(crate) fn publish_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        self.watcher.check_stop()?;
        let mut size = 0;
        let fill = |file: &mut File| {
            fill(file)?;
            // Only -v's progress needs the size.
            if log::log_enabled!(log::Level::Info) {
                size = file.stream_position()?;
            }
            Ok(())
        };
        self.publish_filled(len, fill)?;
        self.progress.chunk(size, || None);
        Ok(())
    }

    fn publish_filled(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        if self.unnamed_staging
            && let Some(mut file) = self.spare_file()?
        {
            if self.preallocate && len > 0 {
                self.preallocate = sys::preallocate(&file, len as u64);
            }
            // Errors name the file the chunk was going to be.
            fill(&mut file).map_err(Error::io("write", self.paths.staging()))?;
            // Closed once published and the lock released: the close is off
            // the path from the input to the consumers.
            return self.publish_staged(Staging::<WrittenAlready>::Unnamed(&file));
        }
        self.publish_staged(Staging::Named(fill))
    }

    fn publish_staged<F>(&mut self, staging: Staging<F>) -> Result<()>
    where
        F: FnOnce(&mut File) -> io::Result<()>,
    {
        match self.options.mode {
            Mode::Lossy => {
                // Before the lock, which is never held while waiting for a
                // subscriber.
                if let Some(retention) = &mut self.retention {
                    retention.hold_back()?;
                }
                let _held = acquire(&mut self.lock, &self.paths)?;
                let Some(retention) = &mut self.retention else {
                    return stage_and_rename(&self.paths, staging, None);
                };
                stage_and_rename(&self.paths, staging, Some((retention, &mut self.last_seq)))?;
                retention.prune()
            }
            // `F` is checked before arming: an isolated chunk finds it gone
            // and is published without reading the event queue first. The
            // queue is read after publishing instead (the echo of this
            // publish, the removal of the previous chunk), off the path, so
            // that the next publish that finds `F` there may wait at once.
            Mode::Lossless => loop {
                if !exists(&self.paths)? {
                    let held = acquire(&mut self.lock, &self.paths)?;
                    if !exists(&self.paths)? {
                        let published = stage_and_rename(&self.paths, staging, None);
                        drop(held);
                        self.watcher.arm();
                        self.armed = true;
                        return published;
                    }
                }
                if std::mem::replace(&mut self.armed, true) {
                    self.watcher.waiting_for(|| {
                        let data = self.paths.data().display();
                        format!("waiting for a consumer to take the chunk in {data}")
                    });
                    self.watcher.wait()?;
                }
                self.watcher.arm();
            },
        }
    }

    /// Ends the stream: in lossless mode publishes the empty end-of-stream
    /// marker (waiting for the last chunk to be consumed first); with
    /// retained history publishes it too; in plain lossy mode there is no
    /// marker, and this puts the last chunk into `F` at once where its
    /// rename was put off (see [`Producer::publish`]), returning what
    /// failed there. Dropping a producer does that last part only, and
    /// says nothing of a failure (but with `-v`): it publishes no end
    /// marker, so that a producer dropped by a panic or an early return
    /// does not look like a stream that ended; call this to end one.
    pub fn finish(mut self) -> Result<()> {
        if self.options.mode == Mode::Lossy && self.retention.is_none() {
            return self.settler.take().map_or(Ok(()), Settler::finish);
        }
        self.publish(&[])
    }
}

/// Takes the bus lock, making `F`'s directory again if it went away since
/// the producer made it (a cleaner removed it, or it was renamed away):
/// consumers wait for it, and the stream goes on.
fn acquire<'a>(lock: &'a mut BusLock, paths: &BusPaths) -> Result<LockGuard<'a>> {
    acquire_vouched(lock, paths, None)
}

/// [`acquire`], taking the word of the producer's `sentinel` (never the
/// settling thread's: it vouches for the producer's lock descriptor) that
/// `F.lock` is unchanged where it can give it.
fn acquire_vouched<'a>(
    lock: &'a mut BusLock,
    paths: &BusPaths,
    sentinel: Option<&Sentinel>,
) -> Result<LockGuard<'a>> {
    let remake = || make_dir_again(paths).map(|()| true);
    lock.acquire_vouched(remake, sentinel.map(|s| s as &dyn Vouch))
}

fn make_dir_again(paths: &BusPaths) -> Result<()> {
    log::info!("{} is gone; making it again", paths.dir().display());
    create_dirs(paths.dir())
}

/// Whether `F` holds a chunk not consumed yet. Anything but a regular file
/// there is an error: no consumer will ever remove it, so waiting would hang.
fn exists(paths: &BusPaths) -> Result<bool> {
    Ok(stat_regular(paths.data())?.is_some())
}

/// The writer of a chunk that is written already.
type WrittenAlready = fn(&mut File) -> io::Result<()>;

/// Where a chunk is before it becomes `F.__new__`.
enum Staging<'a, F> {
    /// Already written to an unnamed file.
    Unnamed(&'a File),
    /// To be written by the function, into `F.__new__` itself.
    Named(F),
}

/// Writes `chunk` into the unnamed `file`, tells the log's readers that it
/// is about to become `F` for record `seq` (see [`LogWriter::settle`]), and
/// renames it to `F`, linking it into the history first with retention.
/// Must be called with the bus lock held.
fn settle(
    paths: &BusPaths,
    log: Option<LogSide<'_>>,
    file: &mut File,
    chunk: &[u8],
    seq: Option<u64>,
    preallocate: &mut bool,
    retention: Option<(&mut Retention, &mut Option<u64>)>,
) -> Result<()> {
    if *preallocate {
        *preallocate = sys::preallocate(file, chunk.len() as u64);
    }
    file.write_all(chunk)
        .map_err(Error::io("write", paths.staging()))?;
    let mut settled = None;
    if let (Some(side), Some(seq)) = (log, seq) {
        let meta = file
            .metadata()
            .map_err(Error::io("stat", paths.staging()))?;
        let id = FileId::of(&meta);
        side.writer.settle(seq, id);
        settled = side.sentinel.map(|sentinel| (sentinel, id));
    }
    stage_and_rename(paths, Staging::<WrittenAlready>::Unnamed(file), retention)?;
    if let Some((sentinel, id)) = settled {
        sentinel.renamed(id);
    }
    Ok(())
}

/// Renames the chunk `deferred` to `F` through `file` if it is still the
/// newest record of `log` and `F` is still the file it replaced: otherwise
/// a newer chunk is in `F` or on its way there, and `F` never goes back
/// (`None`, `file` left unused). Must be called with the bus lock held.
fn settle_if_newest(
    paths: &BusPaths,
    log: LogSide<'_>,
    file: &mut File,
    deferred: &Deferred,
    preallocate: &mut bool,
) -> Option<Result<()>> {
    if log.writer.newest_seq() != Some(deferred.seq) || log.current_file(paths) != deferred.replaces
    {
        return None;
    }
    let (bytes, seq) = (&deferred.bytes, Some(deferred.seq));
    Some(settle(
        paths,
        Some(log),
        file,
        bytes,
        seq,
        preallocate,
        None,
    ))
}

/// Makes `F.__new__` hold the chunk, links it into the history with
/// `retention` (its number goes to the `Option` beside it once the chunk is
/// `F`) and renames it to `F`. Must be called with the bus lock held.
fn stage_and_rename<F>(
    paths: &BusPaths,
    staging: Staging<F>,
    mut retention: Option<(&mut Retention, &mut Option<u64>)>,
) -> Result<()>
where
    F: FnOnce(&mut File) -> io::Result<()>,
{
    let name = paths.staging();
    let staged = match staging {
        Staging::Unnamed(file) => link_staging(paths, file),
        Staging::Named(fill) => create_staging(paths).and_then(|mut file| {
            let written = fill(&mut file).map_err(Error::io("write", name));
            drop(file);
            written
        }),
    };
    // Leaves no partial chunk behind; `F` still names the previous one.
    let discard = |e| {
        let _ = std::fs::remove_file(name);
        Err(e)
    };
    if let Err(e) = staged {
        return discard(e);
    }
    let linked = match &mut retention {
        Some((retention, _)) => retention.link(name).map(Some),
        None => Ok(None),
    };
    let seq = match linked {
        Ok(seq) => seq,
        Err(e) => return discard(e),
    };
    let renamed = std::fs::rename(name, paths.data()).map_err(|e| match e.raw_os_error() {
        // A neighbour made a directory where the chunk belongs: the same
        // refusal as every other role gives it.
        Some(nix::libc::EISDIR) => Error::NotRegularFile {
            path: paths.data().to_path_buf(),
            kind: crate::error::DIRECTORY,
        },
        _ => Error::io("rename", name)(e),
    });
    match (renamed, retention, seq) {
        (Ok(()), Some((_, last_seq)), seq) => {
            *last_seq = seq;
            Ok(())
        }
        (Ok(()), None, _) => Ok(()),
        // The entry goes first: history consumers deliver no entry that
        // `F.__new__` still names, and so never this one. One that cannot
        // be withdrawn keeps `F.__new__` with it, as after a producer killed
        // here, until the next publication.
        (Err(e), Some((retention, _)), Some(seq)) => match retention.withdraw(seq) {
            true => discard(e),
            false => Err(e),
        },
        (Err(e), ..) => discard(e),
    }
}

/// Gives the unnamed `file` the name `F.__new__`. Like [`create_staging`],
/// it never reuses what is already there: `linkat` fails on an existing
/// name, symlink or not, and a leftover entry is removed.
fn link_staging(paths: &BusPaths, file: &File) -> Result<()> {
    let name = paths.staging();
    make_afresh(name, || sys::name_unnamed(file, name))
}

/// Creates `F.__new__` afresh.
fn create_staging(paths: &BusPaths) -> Result<File> {
    create_afresh(paths.staging())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes `chunk` through `staging` on a bus in a fresh directory
    /// where a symlink planted at `F.__new__` points at a victim file.
    fn publish_over_planted_symlink(staging: Staging<'_, WrittenAlready>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, paths.staging()).unwrap();
        stage_and_rename(&paths, staging, None).unwrap();
        assert_eq!(std::fs::read(paths.data()).unwrap(), b"chunk");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(paths.staging()).is_err());
    }

    #[test]
    fn named_staging_never_writes_through_a_planted_link() {
        publish_over_planted_symlink(Staging::Named(|file: &mut File| file.write_all(b"chunk")));
    }

    #[test]
    fn unnamed_staging_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        if sys::portable() {
            assert!(sys::open_unnamed(dir.path()).unwrap().is_none());
            return;
        }
        let mut file = sys::open_unnamed(dir.path())
            .unwrap()
            .expect("an unnamed file");
        file.write_all(b"chunk").unwrap();
        publish_over_planted_symlink(Staging::Unnamed(&file));
    }

    #[test]
    fn failed_fill_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        std::fs::write(paths.data(), b"previous").unwrap();
        let failing = Staging::<WrittenAlready>::Named(|_| Err(io::ErrorKind::StorageFull.into()));
        assert!(stage_and_rename(&paths, failing, None).is_err());
        assert_eq!(std::fs::read(paths.data()).unwrap(), b"previous");
        assert!(!paths.staging().exists());
    }

    /// A producer at its defaults on a bus in memory where there is one
    /// (where the shared-memory log is used), in a fresh directory.
    fn producer_in_memory() -> (tempfile::TempDir, BusPaths, Producer) {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let producer = Producer::new(
            paths.clone(),
            BusOptions::default(),
            ProducerOptions::default(),
        )
        .unwrap();
        (dir, paths, producer)
    }

    /// A producer keeps its lock file open between publishes, and through
    /// the shared-memory log its sentinel vouches that `F.lock` still names
    /// it: once that name is replaced, the next publish must wait for
    /// whoever holds the new `F.lock`, as every other participant does.
    /// (Tried on a bus in memory, where there is a log, and walked without
    /// one by the portable and log-off passes.)
    #[test]
    fn a_lock_file_replaced_between_publishes_is_locked_by_its_new_name() {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::{AtomicBool, Ordering};

        let (dir, paths, mut producer) = producer_in_memory();
        // The first opens the log; the second looks the lock up by path
        // once more, which the sentinel vouches for from then on. Once the
        // settling thread put the last in `F` it has nothing to rename, so
        // that only the producer itself can wait for the lock below.
        for chunk in [&b"one"[..], b"two", b"three"] {
            producer.publish(chunk).unwrap();
        }
        let start = Instant::now();
        while std::fs::read(paths.data()).unwrap_or_default() != b"three" {
            assert!(start.elapsed() < Duration::from_secs(60), "never in F");
            std::thread::sleep(Duration::from_millis(1));
        }
        let replacement = dir.path().join("bus.lock.replacement");
        File::create(&replacement).unwrap();
        std::fs::rename(&replacement, paths.lock()).unwrap();
        let held = Flock::lock(File::open(paths.lock()).unwrap(), FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        let meta = held.metadata().unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let publisher = std::thread::spawn({
            let released = Arc::clone(&released);
            move || {
                producer.publish(b"four").unwrap();
                let waited = released.load(Ordering::SeqCst);
                producer.finish().unwrap();
                waited
            }
        });
        let start = Instant::now();
        let waiting = || crate::lock::flock_users(meta.dev(), meta.ino()).map(|u| u.waiting);
        while waiting().unwrap_or(0) == 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "nobody waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        released.store(true, Ordering::SeqCst);
        drop(held);
        assert!(
            publisher.join().unwrap(),
            "published without waiting for the lock on the file named bus.lock"
        );
        assert_eq!(std::fs::read(paths.data()).unwrap(), b"four");
    }

    /// A child made by `fork(2)` (Python's multiprocessing) inherits the
    /// producer's next chunk file, open: an unnamed file that whichever of
    /// the two publishes first names `F`. The other must neither write its
    /// chunk into that file (`F` by then, changed in place under its
    /// readers) nor fail to name it: each publishes through files of its
    /// own.
    #[test]
    fn a_forked_child_and_its_parent_publish_through_files_of_their_own() {
        use nix::sys::wait::{WaitStatus, waitpid};

        let (_dir, paths, mut producer) = producer_in_memory();
        // The first publication makes the file the next one goes into.
        producer.publish(b"parent, before").unwrap();
        let mut producer = Some(producer);
        let child = sys::fork_child(|| {
            let mut producer = producer.take().expect("the producer");
            producer.publish(b"child").is_ok()
                && producer.finish().is_ok()
                && std::fs::read(paths.data()).is_ok_and(|f| f == b"child")
        });
        let mut producer = producer.expect("the parent's producer");
        let status = waitpid(child, None).unwrap();
        assert_eq!(status, WaitStatus::Exited(child, 0), "the child's chunk");
        producer.publish(b"parent, after").unwrap();
        producer.finish().unwrap();
        assert_eq!(std::fs::read(paths.data()).unwrap(), b"parent, after");
    }
}

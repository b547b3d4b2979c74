//! Retained history: lossless multicast on top of the lossy bus.
//!
//! The base protocol makes users choose between one lossless consumer and
//! many lossy ones. A producer with retention also keeps the newest `N`
//! chunks as hard links in `F.history/`, named by sequence number (20
//! zero-padded digits, so names sort in publication order), and prunes older
//! ones, all under the bus lock. History consumers then read
//! `F.history/<seq>`, `<seq + 1>`, ... without any lock (entries are never
//! modified), so every one of them gets every chunk, in order, for as long as
//! it keeps within `N`; when it falls further behind it learns exactly which
//! sequence numbers it lost. Peers that know nothing of this keep using `F`.
//!
//! Sequence numbers live only in the directory: the next one is the highest
//! entry plus one, which is why a producer keeps at least the newest entry
//! (`N >= 1`) and numbering continues across producers and restarts.
//!
//! Entries are added in increasing order and removed oldest first, so the
//! retained entries always form one contiguous range. Both sides rely on it:
//! a producer finds the newest entry by probing instead of listing, and a
//! consumer concludes it lost chunk `s` when `s` is missing while a newer
//! entry exists (`s` can no longer appear, since it is linked before any
//! newer one).

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::libc;
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::bus::{BusOptions, Mode as BusMode};
use crate::consume::{Consumer, Delivery};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::paths::BusPaths;
use crate::publish::create_afresh;
use crate::watch::{Awaited, Watcher};

/// Digits in a history entry name: enough for every `u64`.
const NAME_DIGITS: usize = 20;

/// The file name of the history entry for sequence number `seq`.
fn entry_name(seq: u64) -> String {
    format!("{seq:0NAME_DIGITS$}")
}

/// The sequence number a history entry name stands for, if it is one.
fn parse_entry_name(name: &OsStr) -> Option<u64> {
    let bytes = name.as_bytes();
    if bytes.len() != NAME_DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes)
        .ok()?
        .parse()
        .ok()
        .filter(|&seq| seq > 0)
}

fn errno_io(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let to_error = Error::io(action, path);
    move |errno| to_error(io::Error::from(errno))
}

/// An open handle on `F.history/`. Working through a descriptor opened with
/// `O_NOFOLLOW` means a symlink planted in place of the directory is never
/// followed, and every entry is opened relative to the directory that was
/// checked.
#[derive(Debug)]
struct HistoryDir {
    path: PathBuf,
    fd: OwnedFd,
    id: (u64, u64),
}

impl HistoryDir {
    /// Opens `F.history/`, or `None` when it does not exist.
    fn open(path: &Path) -> Result<Option<Self>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(AT_FDCWD, path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno_io("open directory", path)(e)),
        };
        let meta = fstat(&fd).map_err(errno_io("stat", path))?;
        Ok(Some(HistoryDir {
            path: path.to_path_buf(),
            fd,
            id: (meta.st_dev, meta.st_ino),
        }))
    }

    /// Opens `F.history/`, creating it first if needed.
    fn create(path: &Path) -> Result<Self> {
        match mkdirat(AT_FDCWD, path, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno_io("create directory", path)(e)),
        }
        HistoryDir::open(path)?.ok_or_else(|| {
            Error::io("open directory", path)(io::Error::from(io::ErrorKind::NotFound))
        })
    }

    /// Whether the path still names the directory this handle holds: a
    /// removed or replaced history directory must be opened afresh.
    fn still_named(&self) -> Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => Ok((meta.dev(), meta.ino()) == self.id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &self.path)(e)),
        }
    }

    fn entry_path(&self, seq: u64) -> PathBuf {
        self.path.join(entry_name(seq))
    }

    fn has(&self, seq: u64) -> Result<bool> {
        match fstatat(
            &self.fd,
            entry_name(seq).as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno_io("stat", &self.entry_path(seq))(e)),
        }
    }

    /// Opens entry `seq` for reading, or `None` when it does not exist.
    fn open_entry(&self, seq: u64) -> Result<Option<(File, Metadata)>> {
        // O_NONBLOCK: opening a FIFO planted as an entry must not hang.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match openat(&self.fd, entry_name(seq).as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(errno_io("open", &self.entry_path(seq))(e)),
        };
        let meta = file
            .metadata()
            .map_err(Error::io("stat", &self.entry_path(seq)))?;
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: self.entry_path(seq),
                kind: "special file",
            });
        }
        Ok(Some((file, meta)))
    }

    /// Links `staging` as entry `seq`; `false` when that entry exists
    /// already (another producer published it).
    fn link(&self, staging: &Path, seq: u64) -> Result<bool> {
        // No AT_SYMLINK_FOLLOW: the staged file itself is linked.
        match linkat(
            AT_FDCWD,
            staging,
            &self.fd,
            entry_name(seq).as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(errno_io("link into", &self.entry_path(seq))(e)),
        }
    }

    fn remove(&self, seq: u64) -> Result<()> {
        match unlinkat(
            &self.fd,
            entry_name(seq).as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno_io("remove", &self.entry_path(seq))(e)),
        }
    }

    /// Lists the directory: the oldest and newest entries, and the oldest
    /// one after `after`.
    fn scan(&self, after: u64) -> Result<Scan> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(&self.fd, ".", flags, Mode::empty())
            .map_err(errno_io("list", &self.path))?;
        let mut scan = Scan::default();
        for entry in dir.iter() {
            let entry = entry.map_err(errno_io("list", &self.path))?;
            let Some(seq) = parse_entry_name(OsStr::from_bytes(entry.file_name().to_bytes()))
            else {
                continue;
            };
            let (lo, hi) = scan.range.unwrap_or((seq, seq));
            scan.range = Some((lo.min(seq), hi.max(seq)));
            if seq > after {
                scan.first_after = Some(scan.first_after.unwrap_or(seq).min(seq));
            }
        }
        Ok(scan)
    }

    /// The newest entry, given that `present` exists: doubles the step until
    /// an entry is missing, then bisects, relying on the entries forming one
    /// contiguous range.
    fn newest_from(&self, present: u64) -> Result<u64> {
        let mut lo = present;
        let mut step = 1u64;
        let hi = loop {
            let probe = lo.saturating_add(step);
            if probe == lo || !self.has(probe)? {
                break probe;
            }
            lo = probe;
            step = step.saturating_mul(2);
        };
        let mut hi = hi;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.has(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// What a listing of the history directory found.
#[derive(Debug, Default)]
struct Scan {
    /// Oldest and newest entries.
    range: Option<(u64, u64)>,
    /// The oldest entry after the number asked about.
    first_after: Option<u64>,
}

/// The producer's side of the history: numbering, linking and pruning.
/// Every method must be called with the bus lock held.
#[derive(Debug)]
pub(crate) struct Retention {
    path: PathBuf,
    keep: u64,
    dir: Option<HistoryDir>,
    /// The number the next chunk gets, as far as this producer knows.
    next: Option<u64>,
    /// The oldest entry that may still exist.
    oldest: u64,
}

impl Retention {
    pub(crate) fn new(paths: &BusPaths, keep: NonZeroU64) -> Self {
        Retention {
            path: paths.history().to_path_buf(),
            keep: keep.get(),
            dir: None,
            next: None,
            oldest: 1,
        }
    }

    /// Links the staged chunk into the history under the next sequence
    /// number, which it returns. The staged chunk is not renamed to `F` yet.
    pub(crate) fn link(&mut self, staging: &Path) -> Result<u64> {
        let dir = match &mut self.dir {
            Some(dir) if dir.still_named()? => dir,
            slot => {
                // A new or replaced directory: its numbering is unknown.
                self.next = None;
                slot.insert(HistoryDir::create(&self.path)?)
            }
        };
        loop {
            // Our own last entry still being there means nobody pruned past
            // it; the link below fails if anyone published after it.
            let seq = match self.next {
                Some(next) if next == 1 || dir.has(next - 1)? => next,
                _ => {
                    let scan = dir.scan(u64::MAX)?;
                    let (oldest, newest) = scan.range.unwrap_or((1, 0));
                    if scan.range.is_none() {
                        log::debug!("{} has no entries; numbering from 1", dir.path.display());
                    }
                    self.oldest = oldest;
                    newest + 1
                }
            };
            if dir.link(staging, seq)? {
                self.next = Some(seq + 1);
                return Ok(seq);
            }
            log::debug!("chunk {seq} was published by another producer");
            self.next = Some(dir.newest_from(seq)? + 1);
        }
    }

    /// Removes the entries older than the newest `N`, after publishing.
    pub(crate) fn prune(&mut self) -> Result<()> {
        let (Some(dir), Some(next)) = (&self.dir, self.next) else {
            return Ok(());
        };
        let newest = next - 1;
        while self.oldest.saturating_add(self.keep) <= newest {
            dir.remove(self.oldest)?;
            self.oldest += 1;
        }
        Ok(())
    }
}

/// Where a history consumer starts when it has no recorded position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Where to start. With no retained chunk yet, a consumer always starts
    /// at the first chunk published after it was created.
    pub start: Start,
    /// Fail with [`Error::FellBehind`] instead of resuming after a loss.
    pub strict: bool,
    /// A file holding the sequence number of the last delivered chunk. When
    /// it exists, the consumer resumes after it (overriding `start`). It is
    /// rewritten (atomically) after each chunk has been delivered, so a
    /// consumer that dies between the two delivers that chunk again after a
    /// restart: at-least-once across crashes, exactly-once across clean
    /// stops. Its directory must be writable, which the consumer checks
    /// before it delivers anything.
    pub position_file: Option<PathBuf>,
}

/// Chunks a history consumer fell too far behind to deliver: the producer
/// had pruned them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The first lost sequence number.
    pub first: u64,
    /// The last lost sequence number.
    pub last: u64,
    /// The sequence number delivery continues with (unless strict).
    pub resume_at: u64,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "lost chunk {} (fell behind)", self.first)
        } else {
            write!(f, "lost chunks {}-{} (fell behind)", self.first, self.last)
        }
    }
}

/// What one step of a [`HistoryConsumer`] produced. `T` is the chunk's
/// content (`Vec<u8>`) from [`HistoryConsumer::recv`], or its size in bytes
/// from [`HistoryConsumer::deliver_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEvent<T> {
    /// The chunk with this sequence number.
    Chunk {
        /// Its sequence number.
        seq: u64,
        /// Its content or size.
        data: T,
    },
    /// A chunk from a bus without history, followed as a lossy consumer:
    /// it has no sequence number.
    Unsequenced(T),
    /// Chunks were lost; the next event is the chunk at `resume_at`.
    Lost(Loss),
    /// The end-of-stream chunk with this sequence number; nothing follows.
    End {
        /// Its sequence number.
        seq: u64,
    },
}

/// The last delivered sequence number, kept in a file across restarts.
#[derive(Debug)]
struct PositionFile {
    path: PathBuf,
    staging: PathBuf,
}

impl PositionFile {
    fn new(path: PathBuf) -> Self {
        let mut staging = path.clone().into_os_string();
        staging.push(".tmp");
        PositionFile {
            path,
            staging: staging.into(),
        }
    }

    fn read(&self) -> Result<Option<u64>> {
        let mut text = String::new();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path);
        match opened {
            Ok(mut file) => file
                .read_to_string(&mut text)
                .map_err(Error::io("read", &self.path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &self.path)(e)),
        };
        match text.trim().parse() {
            Ok(seq) => Ok(Some(seq)),
            Err(_) => Err(Error::BadPosition {
                path: self.path.clone(),
            }),
        }
    }

    /// Fails unless the staging file can be created beside the position
    /// file (its directory exists and is writable), which is what
    /// [`PositionFile::write`] needs.
    fn check_writable(&self) -> Result<()> {
        drop(self.create_staging()?);
        std::fs::remove_file(&self.staging).map_err(Error::io("remove", &self.staging))
    }

    fn create_staging(&self) -> Result<File> {
        create_afresh(&self.staging).map_err(|e| match e {
            Error::Io {
                action: "create",
                path,
                source,
            } => Error::Io {
                action: "create position file",
                path,
                source,
            },
            other => other,
        })
    }

    /// Replaces the file by rename, so that it always holds a whole number.
    fn write(&self, seq: u64) -> Result<()> {
        let mut file = self.create_staging()?;
        writeln!(file, "{seq}").map_err(Error::io("write", &self.staging))?;
        drop(file);
        std::fs::rename(&self.staging, &self.path).map_err(Error::io("rename", &self.staging))
    }
}

/// Where a history consumer stands.
#[derive(Debug)]
enum State {
    /// No history directory with entries seen yet; `next` is the number to
    /// start at, or `None` for the first chunk published from now on.
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
        warned_ahead: bool,
    },
    /// The bus has no history: following `F` as a lossy consumer.
    Lossy(Box<Consumer>),
}

/// A consumer that follows the retained history `F.history/`. Obtained
/// from [`crate::Bus::history_consumer`].
///
/// As an [`Iterator`] it yields [`HistoryEvent`]s and ends after
/// [`HistoryEvent::End`].
///
/// ```
/// use std::num::NonZeroU64;
/// use filebus::{Bus, BusOptions, HistoryEvent, HistoryOptions};
///
/// let dir = tempfile::tempdir()?;
/// let options = BusOptions { retain: NonZeroU64::new(100), ..BusOptions::default() };
/// let bus = Bus::new(dir.path().join("bus"), options);
/// let mut consumer = bus.history_consumer(HistoryOptions::default())?;
/// let mut producer = bus.producer()?;
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
#[derive(Debug)]
pub struct HistoryConsumer {
    paths: BusPaths,
    options: BusOptions,
    strict: bool,
    position: Option<PositionFile>,
    watcher: Watcher,
    state: State,
    /// The sequence number of the end chunk, once delivered.
    ended: Option<u64>,
}

impl HistoryConsumer {
    pub(crate) fn new(
        paths: BusPaths,
        options: BusOptions,
        history: HistoryOptions,
    ) -> Result<Self> {
        if options.mode == BusMode::Lossless {
            return Err(Error::Incompatible(
                "a history consumer cannot use back pressure",
            ));
        }
        let position = history.position_file.map(PositionFile::new);
        let delivered = position
            .as_ref()
            .map(PositionFile::read)
            .transpose()?
            .flatten();
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
        let mut consumer = HistoryConsumer {
            watcher: Watcher::new(&paths, &options, Awaited::Publication),
            paths,
            options,
            strict: history.strict,
            position,
            state: State::Waiting { next },
            ended: None,
        };
        // Look now, so that "the first chunk published after it started"
        // means after this constructor returned.
        consumer.settle(Some(history.start))?;
        if let State::Waiting { .. } = consumer.state {
            log::info!(
                "no chunks in {} yet; waiting for the first one",
                consumer.paths.history().display()
            );
        }
        Ok(consumer)
    }

    /// Blocks until the next event and writes the chunk, if it is one, to
    /// `out` (a file, pipe, socket or terminal descriptor, such as standard
    /// output) without copying it through user space. The event carries the
    /// chunk's size. Once the end chunk was delivered, it returns
    /// [`HistoryEvent::End`] again at once.
    pub fn deliver_to(&mut self, out: impl AsFd) -> Result<HistoryEvent<u64>> {
        self.deliver(&mut Output::new(out.as_fd()))
    }

    /// [`HistoryConsumer::deliver_to`] for an output described once, which
    /// saves inspecting the descriptor again for every chunk.
    pub fn deliver(&mut self, output: &mut Output<'_>) -> Result<HistoryEvent<u64>> {
        if let Some(seq) = self.ended {
            return Ok(HistoryEvent::End { seq });
        }
        self.next_event(
            output,
            |output, file, size| output.copy_from(file, size).map(|()| size),
            |output, consumer| match consumer.deliver(output)? {
                Delivery::Chunk(size) => Ok(size),
                // A lossy consumer skips empty chunks and never ends.
                Delivery::End => Ok(0),
            },
        )
    }

    /// Blocks until the next event and returns it with the chunk's content.
    /// After [`HistoryEvent::End`] it returns `Ok(None)`.
    pub fn recv(&mut self) -> Result<Option<HistoryEvent<Vec<u8>>>> {
        if self.ended.is_some() {
            return Ok(None);
        }
        self.next_event(
            &mut (),
            |(), file, _| {
                // Sizes the buffer from the file, and reports a size that
                // does not fit in memory as an error instead of aborting.
                let mut data = Vec::new();
                file.read_to_end(&mut data).map(|_| data)
            },
            |(), consumer| Ok(consumer.recv()?.unwrap_or_default()),
        )
        .map(Some)
    }

    /// Decides, without blocking, how to follow the bus if that is still
    /// open: history, or lossy when `F` exists without history. `start` is
    /// given only on the first look, when a start position applies to
    /// entries that exist already.
    fn settle(&mut self, start: Option<Start>) -> Result<()> {
        let State::Waiting { next } = self.state else {
            return Ok(());
        };
        let Some(dir) = HistoryDir::open(self.paths.history())? else {
            if self.paths.data().symlink_metadata().is_ok() {
                log::warn!(
                    "{} has no history ({} is missing); following it as a lossy consumer",
                    self.paths.data().display(),
                    self.paths.history().display()
                );
                let lossy = BusOptions {
                    mode: BusMode::Lossy,
                    ..self.options.clone()
                };
                self.state = State::Lossy(Box::new(Consumer::new(self.paths.clone(), lossy)));
            }
            return Ok(());
        };
        let Some((oldest, newest)) = dir.scan(u64::MAX)?.range else {
            return Ok(());
        };
        let next = match (next, start) {
            (Some(next), _) => next,
            // An end chunk there closed a stream that is over: a newcomer
            // waits for the next stream instead of ending at once.
            (None, Some(Start::Newest)) => match dir.open_entry(newest)? {
                Some((_, meta)) if meta.size() == 0 => newest + 1,
                _ => newest,
            },
            // Oldest, or entries that all appeared after the start.
            (None, _) => oldest,
        };
        log::info!("following {} from chunk {next}", dir.path.display());
        self.state = State::Following {
            dir,
            next,
            witness: None,
            warned_ahead: false,
        };
        Ok(())
    }

    /// The next event; `take` copies an entry's content to `out`, `lossy`
    /// takes a chunk from `out` as a lossy consumer (when the bus has no
    /// history). Both are handed `out`: two closures cannot both borrow it.
    fn next_event<O: ?Sized, T>(
        &mut self,
        out: &mut O,
        mut take: impl FnMut(&mut O, &mut File, u64) -> io::Result<T>,
        lossy: impl FnOnce(&mut O, &mut Consumer) -> Result<T>,
    ) -> Result<HistoryEvent<T>> {
        loop {
            self.watcher.arm();
            self.settle(None)?;
            let State::Following {
                dir,
                next,
                witness,
                warned_ahead,
            } = &mut self.state
            else {
                if let State::Lossy(consumer) = &mut self.state {
                    return lossy(out, consumer).map(HistoryEvent::Unsequenced);
                }
                self.watcher.wait();
                continue;
            };
            let seq = *next;
            if let Some((mut file, meta)) = dir.open_entry(seq)? {
                let size = meta.size();
                let event = if size == 0 {
                    self.ended = Some(seq);
                    HistoryEvent::End { seq }
                } else {
                    let data = take(out, &mut file, size).map_err(Error::Output)?;
                    HistoryEvent::Chunk { seq, data }
                };
                *next = seq + 1;
                *witness = Some(seq);
                if let Some(position) = &self.position {
                    position.write(seq)?;
                }
                return Ok(event);
            }
            if let Some(witness) = *witness
                && dir.has(witness)?
            {
                self.watcher.wait();
                continue;
            }
            if !dir.still_named()? {
                match HistoryDir::open(self.paths.history())? {
                    Some(reopened) => *dir = reopened,
                    None => {
                        self.watcher.wait();
                        continue;
                    }
                }
            }
            let scan = dir.scan(seq)?;
            match scan.first_after {
                // Entries appear in order: with a newer one present, `seq`
                // either exists now or never will.
                Some(resume_at) if !dir.has(seq)? => {
                    let loss = Loss {
                        first: seq,
                        last: resume_at - 1,
                        resume_at,
                    };
                    if self.strict {
                        return Err(Error::FellBehind {
                            path: self.paths.data().to_path_buf(),
                            loss,
                        });
                    }
                    *next = resume_at;
                    return Ok(HistoryEvent::Lost(loss));
                }
                Some(_) => continue,
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
                    self.watcher.wait();
                }
            }
        }
    }
}

impl Iterator for HistoryConsumer {
    type Item = Result<HistoryEvent<Vec<u8>>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv().transpose()
    }
}

/// The oldest and newest retained sequence numbers of the bus, or `None`
/// without history; for [`crate::Status`], which must not lock or change
/// anything.
pub(crate) fn retained_range(paths: &BusPaths) -> Result<Option<(u64, u64)>> {
    match HistoryDir::open(paths.history())? {
        Some(dir) => Ok(dir.scan(u64::MAX)?.range),
        None => Ok(None),
    }
}

/// The sequence number recorded in a position file, or `None` when the
/// file does not exist.
pub(crate) fn position_of(path: &Path) -> Result<Option<u64>> {
    PositionFile::new(path.to_path_buf()).read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_zero_padded_digits() {
        assert_eq!(entry_name(42), "00000000000000000042");
        assert_eq!(entry_name(1).len(), NAME_DIGITS);
        assert_eq!(entry_name(u64::MAX), "18446744073709551615");
    }

    #[test]
    fn names_sort_in_sequence_order() {
        let mut names: Vec<String> = [10, 9, 100, 1, 99].map(entry_name).into();
        names.sort();
        let seqs: Vec<u64> = names
            .iter()
            .map(|n| parse_entry_name(OsStr::new(n)).unwrap())
            .collect();
        assert_eq!(seqs, [1, 9, 10, 99, 100]);
    }

    #[test]
    fn parsing_round_trips() {
        for seq in [1, 7, 1_000_000, u64::MAX] {
            assert_eq!(parse_entry_name(OsStr::new(&entry_name(seq))), Some(seq));
        }
    }

    #[test]
    fn parsing_rejects_other_names() {
        for name in [
            "42",
            "00000000000000000000",
            "0000000000000000004x",
            "000000000000000000042",
            "+0000000000000000042",
            "18446744073709551616",
            "99999999999999999999",
            "",
            ".tmp",
        ] {
            assert_eq!(parse_entry_name(OsStr::new(name)), None, "{name}");
        }
    }

    #[test]
    fn loss_reports_name_the_lost_numbers() {
        let range = Loss {
            first: 17,
            last: 42,
            resume_at: 43,
        };
        assert_eq!(range.to_string(), "lost chunks 17-42 (fell behind)");
        let single = Loss {
            first: 5,
            last: 5,
            resume_at: 6,
        };
        assert_eq!(single.to_string(), "lost chunk 5 (fell behind)");
    }
}

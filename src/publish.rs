//! Publishing chunks. A chunk is written whole into a file of its own
//! before it gets a name, and under the bus lock that file becomes
//! `F.__new__` and is renamed over `F`, so that `F` always names one whole
//! chunk and the lock is held only for a few system calls (see
//! [`Producer::publish_with`]). With retained history the staged chunk is
//! also linked into `F.history/` before the rename (see
//! [`crate::history`]).

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{create_afresh, create_dirs, make_afresh, stat_regular};
use crate::history::Retention;
use crate::lock::{BusLock, LockGuard};
use crate::options::{BusOptions, Mode, ProducerOptions};
use crate::paths::BusPaths;
use crate::progress::Progress;
use crate::remote;
use crate::shm_log::{self, LogWriter};
use crate::stop::Stop;
use crate::sys;
use crate::watch::{Awaited, Watcher};

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
    /// after the previous publication.
    spare: Option<File>,
    progress: Progress,
}

/// The state of a producer's shared-memory log.
#[derive(Debug)]
enum Log {
    Untried,
    Open(LogWriter),
    /// None wanted, or none to be had: chunks go through `F` alone.
    Off,
}

impl Log {
    /// Appends the staged chunk to the shared-memory log, opening it first
    /// if need be. Called with the bus lock held. A log that fails is left
    /// for good (said with `-v`): chunks still reach `F`.
    fn append(&mut self, paths: &BusPaths, size: usize, staged: &File) {
        if let Log::Untried = self {
            *self = Log::Off;
            if size > 0 && shm_log::wanted(paths.dir()) {
                match LogWriter::open(paths, size) {
                    Ok(writer) => *self = Log::Open(writer),
                    Err(e) => log::info!(
                        "no shared-memory log at {} ({e}); publishing through {} alone",
                        shm_log::log_path(paths).display(),
                        paths.data().display()
                    ),
                }
            }
        }
        if let Log::Open(writer) = self
            && let Err(e) = writer.append(staged, shm_log::current_file(paths))
        {
            log::info!(
                "leaving the shared-memory log {} ({e}); publishing through {} alone",
                shm_log::log_path(paths).display(),
                paths.data().display()
            );
            *self = Log::Off;
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
            log: Log::Untried,
            spare: None,
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
    /// An empty chunk is the end-of-stream marker in lossless mode; use
    /// [`Producer::finish`] for that.
    pub fn publish(&mut self, chunk: &[u8]) -> Result<()> {
        self.publish_with(chunk.len(), |file| file.write_all(chunk))
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
        if self.unnamed_staging {
            let opened = match self.spare.take() {
                Some(file) => Ok(Some(file)),
                None => {
                    let mut unnamed = sys::open_unnamed(self.paths.dir());
                    if unnamed
                        .as_ref()
                        .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
                    {
                        make_dir_again(&self.paths)?;
                        unnamed = sys::open_unnamed(self.paths.dir());
                    }
                    unnamed
                }
            };
            match opened {
                Ok(Some(mut file)) => {
                    if self.preallocate && len > 0 {
                        self.preallocate = sys::preallocate(&file, len as u64);
                    }
                    // Errors name the file the chunk was going to be.
                    fill(&mut file).map_err(Error::io("write", self.paths.staging()))?;
                    // Closed once published and the lock released: the
                    // close is off the path from the input to the consumers.
                    let published = self.publish_staged(Staging::<WrittenAlready>::Unnamed(&file));
                    // With a log, readers were woken before the rename: the
                    // next chunk's file is made now, after that, rather than
                    // on the next chunk's path, where after an idle period
                    // it is the dearest call (docs/latency-profile.md,
                    // finding 2). Without a log it would only move that
                    // cost to the link and the rename, still on the path.
                    if published.is_ok() && matches!(self.log, Log::Open(_)) {
                        self.spare = sys::open_unnamed(self.paths.dir()).ok().flatten();
                    }
                    return published;
                }
                Ok(None) => self.unnamed_staging = false,
                Err(e) => return Err(Error::io("create", self.paths.staging())(e)),
            }
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
                // Before `F` is renamed: readers of the log wake first.
                if let Staging::Unnamed(file) = &staging {
                    self.log
                        .append(&self.paths, self.producer.shm_log_size, file);
                }
                let Some(retention) = &mut self.retention else {
                    return stage_and_rename(&self.paths, staging, |_| Ok(()));
                };
                stage_and_rename(&self.paths, staging, |staged| {
                    self.last_seq = Some(retention.link(staged)?);
                    Ok(())
                })?;
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
                        let published = stage_and_rename(&self.paths, staging, |_| Ok(()));
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
    /// marker and this does nothing.
    pub fn finish(mut self) -> Result<()> {
        if self.options.mode == Mode::Lossy && self.retention.is_none() {
            return Ok(());
        }
        self.publish(&[])
    }
}

/// Takes the bus lock, making `F`'s directory again if it went away since
/// the producer made it (a cleaner removed it, or it was renamed away):
/// consumers wait for it, and the stream goes on.
fn acquire<'a>(lock: &'a mut BusLock, paths: &BusPaths) -> Result<LockGuard<'a>> {
    lock.acquire_remaking(|| make_dir_again(paths).map(|()| true))
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

/// Makes `F.__new__` hold the chunk, hands it to `before_rename` and
/// renames it to `F`. Must be called with the bus lock held.
fn stage_and_rename<F>(
    paths: &BusPaths,
    staging: Staging<F>,
    before_rename: impl FnOnce(&Path) -> Result<()>,
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
    let renamed = staged.and_then(|()| before_rename(name)).and_then(|()| {
        std::fs::rename(name, paths.data()).map_err(|e| match e.raw_os_error() {
            // A neighbour made a directory where the chunk belongs: the
            // same refusal as every other role gives it.
            Some(nix::libc::EISDIR) => Error::NotRegularFile {
                path: paths.data().to_path_buf(),
                kind: "directory",
            },
            _ => Error::io("rename", name)(e),
        })
    });
    if renamed.is_err() {
        // Leave no partial chunk behind; `F` still names the previous one.
        let _ = std::fs::remove_file(name);
    }
    renamed
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
        stage_and_rename(&paths, staging, |_| Ok(())).unwrap();
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
        assert!(stage_and_rename(&paths, failing, |_| Ok(())).is_err());
        assert_eq!(std::fs::read(paths.data()).unwrap(), b"previous");
        assert!(!paths.staging().exists());
    }
}

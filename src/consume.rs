//! Consuming chunks.
//!
//! Lossy consumers take no lock at all: `F` only ever names a whole,
//! never-modified chunk (it is replaced by rename), so opening it is enough to
//! read one consistent chunk. They decide "new chunk" by comparing `F` with
//! the chunk they took last, which they keep open: an inode in use cannot be
//! freed, so its number cannot be handed to a new chunk (the peers compare
//! numbers alone and miss chunks on tmpfs and ext4, which reuse them at once;
//! on filesystems with whole-second timestamps, such as ext3, not even the
//! timestamps and size tell a recycled inode apart).
//!
//! Lossless consumers follow the peers' protocol: under the lock, deliver `F`
//! and then remove it, so that a chunk whose delivery failed stays for another
//! consumer. Before delivering they make sure that they will be able to
//! remove it: a chunk delivered and then left on the bus would be delivered
//! again by the next consumer. See [`crate::output`] for how the lock is kept
//! off a blocked reader.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::unistd::{AccessFlags, faccessat, geteuid};

use crate::error::{Error, Result};
use crate::files::{open_regular, open_regular_by, stat_regular};
use crate::lock::BusLock;
use crate::options::{BusOptions, Mode};
use crate::output::{Output, read_whole};
use crate::paths::BusPaths;
use crate::progress::Progress;
use crate::shm_log::LogFollower;
use crate::sink::{Collect, Sink};
use crate::stop::Stop;
use crate::sys;
use crate::watch::{Awaited, Watcher};

/// What one call to [`Consumer::deliver_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A chunk of this many bytes was written to the output. In lossy mode,
    /// chunks waiting together in the shared-memory log (up to 64 KiB) go
    /// out in one write, and this is their size together: on a descriptor
    /// chunks are bytes in a stream. [`Consumer::recv`] returns one chunk
    /// at a time.
    Chunk(u64),
    /// The lossless end-of-stream marker was consumed; nothing more will come.
    End,
}

/// The chunk a lossy consumer took last, kept open so that its identity
/// stays exact: while the file is open its inode is not freed, so no new
/// chunk can get its device and inode numbers, whatever the filesystem's
/// timestamp resolution. This costs one descriptor, and a replaced chunk's
/// blocks are freed only when the consumer has delivered the next one.
#[derive(Debug)]
struct LastChunk {
    dev: u64,
    ino: u64,
    /// The modification time and the size: with the file held they tell
    /// only a chunk modified in place (by a writer that ignores the
    /// protocol) from the one delivered, and then it counts as new. Not the
    /// change time: the rename that publishes a chunk changes it, and a
    /// consumer may open the chunk before that change shows (seen on ext4
    /// with a consumer polling, and across GlusterFS clients), then take
    /// the same chunk for a new one at its next look.
    changes: ((i64, i64), u64),
    /// Held only to keep the inode in use.
    _file: File,
}

impl LastChunk {
    fn new(file: File, m: &Metadata) -> Self {
        LastChunk {
            dev: m.dev(),
            ino: m.ino(),
            changes: Self::changes(m),
            _file: file,
        }
    }

    fn changes(m: &Metadata) -> ((i64, i64), u64) {
        ((m.mtime(), m.mtime_nsec()), m.size())
    }

    /// Whether the open chunk file described by `m` is this chunk.
    fn is(&self, m: &Metadata) -> bool {
        (self.dev, self.ino, self.changes) == (m.dev(), m.ino(), Self::changes(m))
    }
}

/// The largest lossy chunk the portable path reads whole before writing
/// it out. Larger ones are streamed, so that memory stays bounded whatever
/// a producer publishes; on a shared filesystem, which the portable path
/// cannot recognise, such a chunk may then go out torn (docs/guide.md:
/// Platforms).
const WHOLE_FIRST_LIMIT: u64 = 16 << 20;

/// The reading side of a bus. Obtained from [`crate::Bus::consumer`].
///
/// As an [`Iterator`] it yields chunks as byte vectors and ends at the
/// lossless end-of-stream marker (a lossy bus never ends), or after the
/// first error it yields, so that `filter_map(Result::ok)` cannot spin on
/// one error for ever; [`Consumer::recv`] may be called again to retry.
///
/// # Waiting
///
/// The receiving calls block until there is a chunk. A chunk published
/// meanwhile ends the wait at once with file monitoring (inotify), and
/// within [`BusOptions::sleep_interval`] without it. A [`Stop`] from
/// [`Consumer::stopper`] ends a wait for the bus at once (within a
/// millisecond while polling pauses are shorter than that), and a lossless
/// consumer's wait for room in its output between two pauses of at most
/// the sleep interval. Two things are not interrupted: taking the bus lock
/// (lossless mode), which others hold for a few system calls or, a lossless
/// consumer, for one write of a chunk its output can take (see
/// [`Output`]); and a write to an output whose reader takes nothing, which
/// [`Consumer::deliver`] finishes rather than tear the chunk.
#[derive(Debug)]
pub struct Consumer {
    paths: BusPaths,
    options: BusOptions,
    lock: BusLock,
    watcher: Watcher,
    last: Option<LastChunk>,
    /// A chunk was just delivered: whatever replaces it raises an event, so
    /// the next call can wait first instead of opening `F` again only to
    /// find the same chunk (a third of a lossy consumer's system calls per
    /// chunk, which adds up with many consumers), or, lossless, only to
    /// find the chunk it removed gone (a lock taken for nothing). Without events,
    /// or on a shared filesystem where other hosts' publications raise none,
    /// it checks first: a wait would only delay it, and checking at once
    /// tells the watcher that the last check passed, so that polling starts
    /// over at its shortest pause.
    delivered: bool,
    /// Lossy: the chunk just delivered came from the shared-memory log
    /// before the watcher was armed again (see [`Consumer::next_lossy`]):
    /// the next call arms it and looks before it waits.
    unarmed: bool,
    /// Lossy chunks up to [`WHOLE_FIRST_LIMIT`] are read whole before any
    /// of it goes out, even off a shared filesystem: on the portable path,
    /// which cannot tell one and copies through user space anyway.
    whole_first: bool,
    /// Lossless: the kernel's last answer that chunks may be removed.
    may_remove: Option<MayRemove>,
    /// Lossy: the shared-memory log beside `F`, read before `F` (see
    /// [`crate::shm_log`]).
    log: LogFollower,
    ended: bool,
    /// The iteration yielded an error: it has ended.
    failed: bool,
    progress: Progress,
}

impl Consumer {
    pub(crate) fn new(paths: BusPaths, options: BusOptions) -> Self {
        Consumer {
            lock: BusLock::new(paths.lock().to_path_buf(), options.wait_policy()),
            watcher: Watcher::new(&paths, &options, Awaited::Publication),
            log: LogFollower::new(&paths),
            paths,
            options,
            last: None,
            delivered: false,
            unarmed: false,
            whole_first: sys::portable(),
            may_remove: None,
            ended: false,
            failed: false,
            progress: Progress::new("delivered"),
        }
    }

    /// Blocks until the next chunk and writes it to `out` (a file, pipe,
    /// socket or terminal descriptor, such as standard output), whole pages
    /// without copying them through user space.
    ///
    /// Lossy: the first call delivers the current chunk if there is one, then
    /// each call delivers the newest chunk not yet delivered; empty chunks
    /// (end markers of lossless producers) are skipped. Lossless: each chunk
    /// is removed from the bus only after it was written to `out`; if writing
    /// fails it stays for another consumer. A chunk this consumer could not
    /// remove is not delivered at all ([`Error::NotRemovable`]). A lossless
    /// consumer never waits for the reader of `out` while it holds the bus
    /// lock (see [`Output`] for the exceptions). See
    /// [how it waits](Consumer#waiting).
    ///
    /// This describes `out` afresh on each call: what was written into a
    /// pipe before is then of unknown layout, and a chunk larger than a
    /// page waits until the pipe is nearly empty. [`Consumer::deliver`]
    /// with one [`Output`] keeps that knowledge.
    pub fn deliver_to(&mut self, out: impl AsFd) -> Result<Delivery> {
        self.deliver(&mut Output::new(out.as_fd()))
    }

    /// [`Consumer::deliver_to`] for an output described once, which saves
    /// inspecting the descriptor again for every chunk.
    pub fn deliver(&mut self, output: &mut Output<'_>) -> Result<Delivery> {
        Ok(match self.next_into(output)? {
            Some(size) => Delivery::Chunk(size),
            None => Delivery::End,
        })
    }

    /// Blocks until the next chunk and returns it, or `None` once the
    /// lossless end-of-stream marker has been consumed. See
    /// [how it waits](Consumer#waiting): how long it may take to return
    /// after a publication or a stop.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut collect = Collect::default();
        Ok(self.next_into(&mut collect)?.map(|_| collect.into_bytes()))
    }

    /// [`Consumer::recv`], waiting at most `timeout` for the bus: fails
    /// with [`Error::TimedOut`] when no chunk came in time, as
    /// [`std::sync::mpsc::Receiver::recv_timeout`] does, having taken
    /// nothing. A chunk there at the deadline is still received, and a
    /// lossless consumer may wait for the bus lock past it (see
    /// [how it waits](Consumer#waiting)). `Ok(None)` is the lossless end of the stream,
    /// as for `recv`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use filebus::{Bus, BusOptions, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let mut consumer = bus.consumer()?;
    /// let waited = consumer.recv_timeout(Duration::from_millis(50));
    /// assert!(matches!(waited, Err(Error::TimedOut)));
    /// bus.producer()?.publish(b"news")?;
    /// assert_eq!(consumer.recv_timeout(Duration::from_secs(60))?, Some(b"news".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        // A deadline too far to represent is no deadline.
        self.watcher
            .set_deadline(Instant::now().checked_add(timeout));
        let received = self.recv();
        self.watcher.set_deadline(None);
        received
    }

    /// [`Consumer::recv`] without waiting for the bus: the chunk there now
    /// that this consumer has not received, or [`Error::TimedOut`]. The
    /// same as [`Consumer::recv_timeout`] with a zero timeout.
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let bus = Bus::new(dir.path().join("bus"), BusOptions::default());
    /// let mut consumer = bus.consumer()?;
    /// assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    /// bus.producer()?.publish(b"news")?;
    /// assert_eq!(consumer.try_recv()?, Some(b"news".to_vec()));
    /// assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv_timeout(Duration::ZERO)
    }

    /// A handle that stops this consumer from another thread (see
    /// [`Stop`]); every call returns a clone of the same one. Fails only
    /// when the pipe it wakes waits through cannot be made (out of
    /// descriptors).
    ///
    /// ```
    /// use filebus::{Bus, BusOptions, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut consumer = Bus::new(dir.path().join("bus"), BusOptions::default()).consumer()?;
    /// let stop = consumer.stopper()?;
    /// std::thread::spawn(move || stop.stop());
    /// assert!(matches!(consumer.recv(), Err(Error::Stopped)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stopper(&mut self) -> Result<Stop> {
        self.watcher.stopper()
    }

    fn next_into(&mut self, sink: &mut impl Sink) -> Result<Option<u64>> {
        if self.ended {
            return Ok(None);
        }
        self.watcher.check_stop()?;
        let taken = match self.options.mode {
            Mode::Lossy => self.next_lossy(sink).map(Some),
            Mode::Lossless => self.next_lossless(sink).map(|t| t.map(|size| (size, 1))),
        }?;
        self.ended = taken.is_none();
        if let Some((size, chunks)) = taken {
            self.progress.chunks(chunks, size, || None);
        }
        Ok(taken.map(|(size, _)| size))
    }

    /// The size of what was delivered, and how many chunks it was.
    fn next_lossy(&mut self, sink: &mut impl Sink) -> Result<(u64, u64)> {
        // A record the doorbell announced goes out before anything else:
        // taking it needs no system call, and arming the watcher again (a
        // path lookup when it follows `F` alone) waits until after it,
        // before the next wait. Records always come before a chunk `F`
        // names that was published after them.
        if self.log.pending()
            && let Some(taken) = self.log.take(sink, &mut self.watcher)?
        {
            self.delivered = true;
            self.unarmed = true;
            return Ok(taken);
        }
        if std::mem::take(&mut self.delivered)
            && !std::mem::take(&mut self.unarmed)
            && self.watcher.sees_every_change()
            && !self.log.pending()
        {
            self.watcher.wait()?;
        }
        loop {
            self.watcher.arm();
            if let Some(taken) = self.log.take(sink, &mut self.watcher)? {
                self.delivered = true;
                return Ok(taken);
            }
            // What the log delivered is told from F by a stat, without
            // opening it: F is renamed after every record.
            if self.log.has_record()
                && let Some(meta) = stat_regular(self.paths.data())?
                && self.log.covers(&meta)
            {
                self.watcher.wait()?;
                continue;
            }
            if let Some((mut file, meta)) = open_regular(self.paths.data())?
                && !self.last.as_ref().is_some_and(|last| last.is(&meta))
                && !self.log.covers(&meta)
            {
                // Records committed since the log was read came before
                // this chunk: they go first.
                if self.log.pending() {
                    continue;
                }
                // A log that appeared since holds chunks published before
                // this one: they go first.
                self.log.recheck(&mut self.watcher);
                if self.log.pending() {
                    continue;
                }
                // The chunk this one replaced is closed only after this one
                // went out: its last close frees its storage, which on ext4
                // costs a few hundred µs (see docs/latency-profile.md).
                let replaced = self.last.take();
                if meta.size() > 0 {
                    // On a shared filesystem another host's publish may
                    // remove the chunk while it is read, and the removed
                    // file does not stay readable there as it does locally:
                    // the chunk is read whole before any of it goes out, so
                    // that one that vanishes is looked for again, never
                    // delivered torn. Memory then follows the chunk's size.
                    let whole_first = self.whole_first && meta.size() <= WHOLE_FIRST_LIMIT;
                    let taken = if whole_first || self.watcher.on_shared_filesystem() {
                        read_whole(&file, meta.size()).and_then(|bytes| sink.take_bytes(bytes))
                    } else {
                        sink.take(&mut file, meta.size())
                    };
                    match taken {
                        Ok(()) => {}
                        Err(e) if e.stale_before_output() => {
                            log::info!("{}; looking again", e.at(self.paths.data()));
                            self.last = replaced;
                            self.watcher.wait()?;
                            continue;
                        }
                        Err(e) => return Err(e.at(self.paths.data())),
                    }
                }
                self.last = Some(LastChunk::new(file, &meta));
                self.log.delivered_file(&meta);
                if meta.size() > 0 {
                    self.delivered = true;
                    drop(replaced);
                    return Ok((meta.size(), 1));
                }
            }
            self.watcher.waiting_for(|| awaited(&self.paths));
            self.watcher.wait()?;
        }
    }

    fn next_lossless(&mut self, sink: &mut impl Sink) -> Result<Option<u64>> {
        if std::mem::take(&mut self.delivered) && self.watcher.sees_every_change() {
            self.watcher.wait()?;
        }
        loop {
            // Also between the pauses of a wait for room in the output.
            self.watcher.check_stop()?;
            self.watcher.arm();
            let held = match self.lock.acquire() {
                Ok(held) => held,
                // `F`'s directory is not there (yet, or any more: a cleaner
                // removed it, or it was renamed away): the next producer
                // makes it, and this consumer waits for that as for a chunk.
                Err(e) if e.is_gone() => {
                    self.watcher.wait()?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let opened = open_regular_by(self.paths.data(), sys::removal_facts, |f| f.mode)?;
            let Some((mut file, facts)) = opened else {
                drop(held);
                self.watcher.waiting_for(|| awaited(&self.paths));
                self.watcher.wait()?;
                continue;
            };
            check_removable(&self.paths, &facts, &mut self.may_remove)?;
            let size = facts.size;
            if size == 0 {
                remove_data(&self.paths)?;
                return Ok(None);
            }
            // Sized under the lock, where the chunk is known: a chunk the
            // output cannot take whole now is waited for without the lock,
            // and looked at again after (it may be gone or replaced by
            // then). A chunk not delivered whole stays for another consumer.
            if !sink.has_room(size) {
                drop(held);
                sink.wait_for_room(self.options.sleep_interval);
                continue;
            }
            if !sink
                .try_take(&mut file, size)
                .map_err(|e| e.at(self.paths.data()))?
            {
                // The output took nothing after all (the reader took less
                // than counted on, or another writer took the room).
                continue;
            }
            remove_data(&self.paths)?;
            self.delivered = true;
            // The chunk's last close frees its storage (about 150 µs for
            // 1 MiB on tmpfs): after the unlock, so that the producer can
            // publish the next chunk meanwhile.
            drop(held);
            drop(file);
            return Ok(Some(size));
        }
    }
}

/// What `-v` says a consumer waits for: `F` to appear, or a new chunk in it.
fn awaited(paths: &BusPaths) -> String {
    let data = paths.data().display();
    if paths.data().symlink_metadata().is_ok() {
        format!("waiting for a producer to publish a new chunk in {data}")
    } else {
        format!("waiting for {data} to appear (a producer publishes it)")
    }
}

/// The directory as it was when the kernel last said that this consumer
/// may remove entries from it, and the consumer's effective user then.
#[derive(Debug)]
struct MayRemove {
    dir: sys::RemovalFacts,
    euid: u32,
}

impl MayRemove {
    /// Whether `dir` is the directory the answer was given for, with the
    /// same owner, group and mode. Its size and times change with every
    /// chunk.
    fn holds_for(&self, dir: &sys::RemovalFacts) -> bool {
        let key = |f: &sys::RemovalFacts| (f.id, f.mode, f.uid, f.gid);
        key(&self.dir) == key(dir)
    }
}

/// Refuses a chunk (described by `chunk`) that this consumer could not
/// remove once delivered. The conditions are those of unlink(2): write and
/// search permission on the directory (asked of the kernel, which also
/// accounts for ACLs and read-only mounts), the sticky bit, and the
/// append-only and immutable attributes, which bind even root.
///
/// The directory is looked at for every chunk (one stat), but the kernel
/// is asked about permissions only when the directory is not the one it
/// last answered for, or its owner, group or mode changed since: `known`
/// keeps that answer. What does not show in those (an ACL entry changed
/// without changing the mode, a remount read-only, a change of this
/// process's user or groups) is seen only at the next change that does;
/// until then such a chunk is delivered and its removal fails, as any
/// removal may fail between a check and the unlink.
fn check_removable(
    paths: &BusPaths,
    chunk: &sys::RemovalFacts,
    known: &mut Option<MayRemove>,
) -> Result<()> {
    let dir = paths.dir();
    let refuse = |why: String| Error::NotRemovable {
        path: paths.data().to_path_buf(),
        source: io::Error::new(io::ErrorKind::PermissionDenied, why),
    };
    // Following a symlinked directory, as unlink(2) does.
    let dir_facts = sys::removal_facts_at(dir).map_err(Error::io("stat", dir))?;
    for (facts, what) in [(&dir_facts, dir), (chunk, paths.data())] {
        for (set, name) in [
            (facts.append_only, "append-only"),
            (facts.immutable, "immutable"),
        ] {
            if set {
                return Err(refuse(format!("{} is {name}", what.display())));
            }
        }
    }
    let me = match known {
        Some(answer) if answer.holds_for(&dir_facts) => answer.euid,
        _ => {
            *known = None;
            let access = AccessFlags::W_OK | AccessFlags::X_OK;
            faccessat(AT_FDCWD, dir, access, AtFlags::AT_EACCESS)
                .map_err(|e| refuse(format!("{}: {e}", dir.display())))?;
            let euid = geteuid().as_raw();
            *known = Some(MayRemove {
                dir: dir_facts,
                euid,
            });
            euid
        }
    };
    if dir_facts.sticky && me != chunk.uid && me != dir_facts.uid && !sys::overrides_sticky_bit() {
        return Err(refuse(format!(
            "{} is sticky and neither it nor the chunk belongs to this user",
            dir.display()
        )));
    }
    Ok(())
}

fn remove_data(paths: &BusPaths) -> Result<()> {
    std::fs::remove_file(paths.data()).map_err(Error::io("remove", paths.data()))
}

impl Iterator for Consumer {
    type Item = Result<Vec<u8>>;

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
    use nix::libc;

    use super::*;
    use crate::output::CopyError;

    /// Takes chunks into memory, failing to read the first `failures` with
    /// `errno` after `written` bytes went out.
    struct Flaky {
        failures: usize,
        errno: i32,
        written: u64,
        taken: Vec<Vec<u8>>,
    }

    impl Sink for Flaky {
        fn has_room(&mut self, _: u64) -> bool {
            true
        }
        fn wait_for_room(&mut self, _: Duration) {}
        fn try_take(&mut self, file: &mut File, size: u64) -> Result<bool, CopyError> {
            self.take(file, size).map(|()| true)
        }
        fn take(&mut self, file: &mut File, size: u64) -> Result<(), CopyError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(CopyError::Read {
                    source: io::Error::from_raw_os_error(self.errno),
                    written: self.written,
                });
            }
            self.taken.push(read_whole(file, size)?);
            Ok(())
        }
        fn take_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CopyError> {
            self.taken.push(bytes);
            Ok(())
        }
    }

    fn flaky(failures: usize, errno: i32, written: u64) -> Flaky {
        Flaky {
            failures,
            errno,
            written,
            taken: Vec::new(),
        }
    }

    /// A consumer in `mode` on a bus in `dir` whose `F` holds `chunk`.
    fn consumer(dir: &tempfile::TempDir, mode: Mode, chunk: &[u8]) -> (BusPaths, Consumer) {
        let paths = BusPaths::new(dir.path().join("bus"));
        std::fs::write(paths.data(), chunk).unwrap();
        let options = BusOptions::default()
            .with_mode(mode)
            .with_sleep_interval(Duration::from_millis(5));
        let mut consumer = Consumer::new(paths.clone(), options);
        // These tests feed errors to the sink's copy from the chunk file,
        // which the portable path skips for lossy chunks (it reads them
        // whole first): the copy is tested on either path.
        consumer.whole_first = false;
        (paths, consumer)
    }

    #[test]
    fn lossy_consumers_look_again_when_nothing_went_out() {
        let dir = tempfile::tempdir().unwrap();
        let (_paths, mut consumer) = consumer(&dir, Mode::Lossy, b"chunk");
        let mut sink = flaky(2, libc::ESTALE, 0);
        assert_eq!(consumer.next_into(&mut sink).unwrap(), Some(5));
        assert_eq!(sink.taken, [b"chunk"]);
    }

    #[test]
    fn other_read_errors_end_a_lossy_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let (_paths, mut consumer) = consumer(&dir, Mode::Lossy, b"chunk");
        let err = consumer
            .next_into(&mut flaky(usize::MAX, libc::EIO, 0))
            .unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    #[test]
    fn chunks_not_delivered_whole_are_errors_and_stay() {
        for mode in [Mode::Lossy, Mode::Lossless] {
            let dir = tempfile::tempdir().unwrap();
            let (paths, mut consumer) = consumer(&dir, mode, b"chunk");
            let err = consumer
                .next_into(&mut flaky(1, libc::ESTALE, 2))
                .unwrap_err();
            assert!(
                err.to_string().starts_with("cannot read "),
                "{mode:?}: {err}"
            );
            assert!(paths.data().exists(), "{mode:?}: a torn chunk was removed");
        }
    }
}

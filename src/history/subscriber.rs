//! Durable subscribers: history consumers with a name, whose position the
//! bus itself keeps, so that producers can wait for them (see `tether`).
//!
//! A subscription `NAME` is three entries of `F.history/subscribers/`:
//!
//! * `NAME`, its record: the sequence number of the last chunk it
//!   delivered, a position file replaced by rename (see `position`). A new
//!   subscription writes it before delivering anything, so that producers
//!   wait for it from the moment it exists.
//! * `.NAME.lock`, locked (`flock`) by the process running the
//!   subscription for as long as it runs: a second process with the same
//!   name, and `unsubscribe`, find it held and refuse.
//! * `.NAME.tmp`, the record's staging file, for an instant at each update.
//!
//! Names never start with `.`, so the records are exactly the entries that
//! do not, and no name's lock or staging file can be another name's record.
//! `.generation` counts the registrations: a new subscription may start
//! below every known position, so a producer that looked at the records
//! before taking the bus lock must not prune if the count changed since
//! (registrations happen under the bus lock, pruning too).
//!
//! Everything is reached through descriptors of the directories checked
//! (`O_NOFOLLOW`), so a symbolic link planted at `subscribers` or at any of
//! these names is refused, never followed.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::dir::{HistoryDir, errno_io};
use super::position::PositionFile;
use crate::error::{Error, Result, is_gone};
use crate::files;
use crate::lock::{BusLock, flock_users};
use crate::options::{BusOptions, Start, check_subscriber_name};
use crate::paths::BusPaths;
use crate::sys;

/// The subscribers' directory inside `F.history/`.
pub(super) const SUBSCRIBERS: &str = "subscribers";

/// The count of registrations (see the module's documentation).
const GENERATION: &str = ".generation";

/// `F.history/subscribers/` through one open descriptor.
#[derive(Debug)]
pub(super) struct SubscribersDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl SubscribersDir {
    /// Opens the subscribers' directory of `history`, or `None` when there
    /// is none.
    pub(super) fn open(history: &HistoryDir) -> Result<Option<Self>> {
        let path = history.path.join(SUBSCRIBERS);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(history.fd(), SUBSCRIBERS, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(SubscribersDir {
                path,
                fd: Arc::new(fd),
            })),
            Err(e) if is_gone(Some(e as i32)) => Ok(None),
            // O_DIRECTORY and O_NOFOLLOW on a symbolic link: ENOTDIR.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) if is_symlink(history, SUBSCRIBERS) => {
                Err(Error::Symlink { path })
            }
            Err(e) => Err(errno_io("open directory", &path)(e)),
        }
    }

    /// Opens the subscribers' directory of `history`, creating it first if
    /// needed.
    fn create(history: &HistoryDir) -> Result<Self> {
        files::make_dir_and_open(
            &history.path.join(SUBSCRIBERS),
            || mkdirat(history.fd(), SUBSCRIBERS, Mode::from_bits_truncate(0o777)),
            || SubscribersDir::open(history),
        )
    }

    /// Whether `F.history/subscribers/` exists (as anything) in `history`.
    pub(super) fn exists_in(history: &HistoryDir) -> Result<bool> {
        match fstatat(history.fd(), SUBSCRIBERS, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(e) if is_gone(Some(e as i32)) => Ok(false),
            Err(e) => Err(errno_io("stat", &history.path.join(SUBSCRIBERS))(e)),
        }
    }

    /// The record of subscriber `name`.
    pub(super) fn record(&self, name: &str) -> PositionFile {
        PositionFile::in_dir(
            Arc::clone(&self.fd),
            &self.path,
            name,
            &format!(".{name}.tmp"),
        )
    }

    fn generation_file(&self) -> PositionFile {
        PositionFile::in_dir(
            Arc::clone(&self.fd),
            &self.path,
            GENERATION,
            &format!("{GENERATION}.tmp"),
        )
    }

    /// How many subscriptions were registered, as far as the count goes.
    pub(super) fn generation(&self) -> Result<u64> {
        Ok(self.generation_file().read()?.unwrap_or(0))
    }

    /// The names of the subscribers that have a record, in no order.
    pub(super) fn names(&self) -> Result<Vec<String>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(self.fd.as_fd(), ".", flags, Mode::empty())
            .map_err(errno_io("list", &self.path))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(errno_io("list", &self.path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            // Whatever else a neighbour put there is no subscriber.
            if let Some(name) = name.to_str()
                && check_subscriber_name(name).is_ok()
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn has(&self, name: &str) -> Result<bool> {
        match fstatat(self.fd.as_ref(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(e) if is_gone(Some(e as i32)) => Ok(false),
            Err(e) => Err(errno_io("stat", &self.path.join(name))(e)),
        }
    }

    fn lock_name(name: &str) -> String {
        format!(".{name}.lock")
    }

    /// Opens subscriber `name`'s lock file, creating it if `create`; `None`
    /// when it does not exist.
    fn open_lock(&self, name: &str, create: bool) -> Result<Option<File>> {
        let lock = Self::lock_name(name);
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if create {
            flags |= OFlag::O_CREAT;
        }
        let path = self.path.join(&lock);
        // With O_CREAT: another host creating the file at the same moment
        // can make this fail with EEXIST on a shared filesystem.
        let opened = files::open_creating(&path, || {
            openat(
                self.fd.as_ref(),
                lock.as_str(),
                flags,
                Mode::from_bits_truncate(0o666),
            )
            .map_err(io::Error::from)
        });
        match opened {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e) if !create && is_gone(e.raw_os_error()) => Ok(None),
            Err(e) => Err(Error::io("open lock file", &path)(e)),
        }
    }

    /// Locks subscriber `name`'s lock file without waiting: `Ok(None)`
    /// when another process holds it (see [`SubscribersDir::holder`]), or
    /// when it does not exist and `create` is false.
    fn try_lock(&self, name: &str, create: bool) -> Result<Option<Flock<File>>> {
        let path = self.path.join(Self::lock_name(name));
        loop {
            let Some(mut file) = self.open_lock(name, create)? else {
                return Ok(None);
            };
            let held = loop {
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(held) => break held,
                    Err((f, Errno::EINTR)) => file = f,
                    Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                    Err((_, e)) => return Err(errno_io("lock", &path)(e)),
                }
            };
            // A lock on a file that `unsubscribe` removed meanwhile excludes
            // nobody: lock the one the name leads to now.
            let locked = fstat(&*held).map_err(errno_io("stat", &path))?;
            match fstatat(
                self.fd.as_ref(),
                Self::lock_name(name).as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(named) if sys::file_id(&named) == sys::file_id(&locked) => {
                    return Ok(Some(held));
                }
                Ok(_) => {}
                Err(e) if is_gone(Some(e as i32)) => {}
                Err(e) => return Err(errno_io("stat", &path)(e)),
            }
            if !create {
                return Ok(None);
            }
        }
    }

    /// The process that holds subscriber `name`'s lock, where the system
    /// tells (`/proc/locks`).
    fn holder(&self, name: &str) -> Option<u32> {
        let st = fstatat(
            self.fd.as_ref(),
            Self::lock_name(name).as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let (dev, ino) = sys::file_id(&st);
        flock_users(dev, ino)?.holder
    }
}

/// Whether `name` in `history` is a symbolic link.
fn is_symlink(history: &HistoryDir, name: &str) -> bool {
    fstatat(history.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK)
}

/// A running subscription: holds its lock until dropped.
#[derive(Debug)]
pub(super) struct Subscription {
    lock: Option<Flock<File>>,
    /// Where it was taken. A child made by `fork(2)` shares the lock's
    /// open file description, to which a `flock(2)` lock belongs: its
    /// unlock would release the parent's.
    origin: sys::Origin,
}

impl Subscription {
    fn holding(lock: Flock<File>) -> Subscription {
        Subscription {
            lock: Some(lock),
            origin: sys::Origin::here(),
        }
    }

    /// Whether this process runs it: not a child made by `fork(2)` since
    /// it was taken, which shares its lock with the parent that runs it.
    pub(super) fn is_ours(&self) -> bool {
        self.origin.is_here()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.is_ours() {
            // A child's copy stays open, unlocked by nobody, until the
            // child exits: nix's Flock gives up its descriptor only by
            // unlocking it.
            std::mem::forget(self.lock.take());
        }
    }
}

/// Where a subscription stands when it starts.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) subscription: Subscription,
    /// Its record, to update after each delivered chunk.
    pub(super) record: PositionFile,
    /// The last chunk it delivered (for a new one, the chunk before its
    /// start).
    pub(super) delivered: u64,
    /// Whether it existed before (and so may have delivered the
    /// unsequenced chunk in `F`).
    pub(super) resumed: bool,
}

impl Subscription {
    /// Runs subscription `name` on the bus: registers it, starting at
    /// `start`, or resumes it. Fails when another process runs it.
    pub(super) fn take(
        paths: &BusPaths,
        options: &BusOptions,
        name: &str,
        start: Start,
    ) -> Result<Taken> {
        // The registration must exist before the first producer does.
        files::create_dirs(paths.dir())?;
        let history = HistoryDir::create(paths.history())?;
        let subscribers = SubscribersDir::create(&history)?;
        let Some(lock) = subscribers.try_lock(name, true)? else {
            return Err(Error::SubscriberRunning {
                name: name.to_string(),
                path: paths.data().to_path_buf(),
                pid: subscribers.holder(name),
                removing: false,
            });
        };
        let record = subscribers.record(name);
        if let Some(delivered) = record.read()? {
            log::info!("subscriber {name} resumes after chunk {delivered}");
            return Ok(Taken {
                subscription: Subscription::holding(lock),
                record,
                delivered,
                resumed: true,
            });
        }
        // Under the bus lock, as producers prune: the start chunk cannot
        // be pruned between choosing it and recording it, and a producer
        // that looked at the records before this sees the count change.
        let mut bus_lock = BusLock::new(paths.lock().to_path_buf(), options.wait_policy());
        let held = bus_lock.acquire()?;
        let next = match history.scan(u64::MAX)?.range {
            Some(range) => history.start_at(start, range)?,
            None => match start {
                Start::Seq(seq) => seq.max(1),
                // Numbering starts at 1 in an empty history.
                Start::Newest | Start::Oldest => 1,
            },
        };
        let delivered = next - 1;
        record.write(delivered)?;
        let generation = subscribers.generation()?;
        subscribers
            .generation_file()
            .write(generation.wrapping_add(1))?;
        drop(held);
        log::info!("subscriber {name} registered, starting at chunk {next}");
        Ok(Taken {
            subscription: Subscription::holding(lock),
            record,
            delivered,
            resumed: false,
        })
    }
}

/// Removes subscription `name` (its record, lock and staging files). Fails
/// while a process runs it, and when there is no such subscription.
pub(crate) fn unsubscribe(paths: &BusPaths, name: &str) -> Result<()> {
    let none = || Error::NoSubscriber {
        name: name.to_string(),
        path: paths.data().to_path_buf(),
    };
    let Some(history) = HistoryDir::open(paths.history())? else {
        return Err(none());
    };
    let Some(subscribers) = SubscribersDir::open(&history)? else {
        return Err(none());
    };
    let lock_name = SubscribersDir::lock_name(name);
    let has_lock = subscribers.has(&lock_name)?;
    if !subscribers.has(name)? && !has_lock {
        return Err(none());
    }
    let held = match has_lock {
        true => match subscribers.try_lock(name, false)? {
            Some(held) => Some(held),
            None if subscribers.has(&lock_name)? => {
                return Err(Error::SubscriberRunning {
                    name: name.to_string(),
                    path: paths.data().to_path_buf(),
                    pid: subscribers.holder(name),
                    removing: true,
                });
            }
            // Removed meanwhile, by another `unsubscribe`.
            None => None,
        },
        false => None,
    };
    // The record first: from then on no producer waits for it.
    subscribers.record(name).remove()?;
    if held.is_some() {
        match unlinkat(
            subscribers.fd.as_ref(),
            lock_name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(errno_io("remove", &subscribers.path.join(&lock_name))(e)),
        }
    }
    log::info!("subscriber {name} removed from {}", paths.data().display());
    Ok(())
}

/// One subscription as `filebus status` shows it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) name: String,
    /// The last chunk it delivered, or why its record could not be read:
    /// one bad record must not hide the others.
    pub(crate) delivered: Result<Option<u64>>,
    /// The process running it, if one does and the system tells.
    pub(crate) pid: Option<u32>,
}

/// The subscriptions of the bus, by name.
pub(crate) fn subscriptions(paths: &BusPaths) -> Result<Vec<Recorded>> {
    let Some(history) = HistoryDir::open(paths.history())? else {
        return Ok(Vec::new());
    };
    let Some(subscribers) = SubscribersDir::open(&history)? else {
        return Ok(Vec::new());
    };
    let mut names = subscribers.names()?;
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let delivered = subscribers.record(&name).read();
            // Status changes nothing, so it does not try the lock: it asks
            // who holds it.
            let pid = subscribers.holder(&name);
            Recorded {
                name,
                delivered,
                pid,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (tempfile::TempDir, BusPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        (dir, paths)
    }

    #[test]
    fn names_are_the_entries_without_a_leading_dot() {
        let (_dir, paths) = bus();
        let history = HistoryDir::create(paths.history()).unwrap();
        let subscribers = SubscribersDir::create(&history).unwrap();
        for entry in ["alpha", ".alpha.lock", ".alpha.tmp", ".generation", "beta"] {
            std::fs::write(paths.history().join(SUBSCRIBERS).join(entry), b"1\n").unwrap();
        }
        let mut names = subscribers.names().unwrap();
        names.sort();
        assert_eq!(names, ["alpha", "beta"]);
    }

    #[test]
    fn a_second_process_with_the_same_name_is_refused() {
        let (_dir, paths) = bus();
        let options = BusOptions::default();
        let first = Subscription::take(&paths, &options, "s", Start::Newest).unwrap();
        assert_eq!((first.delivered, first.resumed), (0, false));
        // flock(2) locks belong to the open file: a second open in this
        // process is refused just as another process would be.
        let err = Subscription::take(&paths, &options, "s", Start::Newest).unwrap_err();
        assert!(
            matches!(&err, Error::SubscriberRunning { pid: Some(pid), .. } if *pid == std::process::id()),
            "{err}"
        );
        drop(first);
        let again = Subscription::take(&paths, &options, "s", Start::Oldest).unwrap();
        assert_eq!((again.delivered, again.resumed), (0, true));
    }

    #[test]
    fn each_registration_counts() {
        let (_dir, paths) = bus();
        let options = BusOptions::default();
        let history = HistoryDir::create(paths.history()).unwrap();
        for (k, name) in ["a", "b"].into_iter().enumerate() {
            drop(Subscription::take(&paths, &options, name, Start::Newest).unwrap());
            let subscribers = SubscribersDir::open(&history).unwrap().unwrap();
            assert_eq!(subscribers.generation().unwrap(), k as u64 + 1);
        }
        // Resuming is no registration.
        drop(Subscription::take(&paths, &options, "a", Start::Newest).unwrap());
        let subscribers = SubscribersDir::open(&history).unwrap().unwrap();
        assert_eq!(subscribers.generation().unwrap(), 2);
    }

    /// A child made by `fork(2)` shares the subscription's lock, which
    /// belongs to the open file description: its copy going away must not
    /// unlock the parent's, or a second process could run the same name.
    #[test]
    fn a_forked_child_dropping_its_copy_leaves_the_parent_subscribed() {
        use nix::sys::wait::{WaitStatus, waitpid};

        let (_dir, paths) = bus();
        let options = BusOptions::default();
        let taken = Subscription::take(&paths, &options, "s", Start::Newest).unwrap();
        // The parent's stays held until the end of the test.
        let mut taken = Some(taken);
        let child = sys::fork_child(|| {
            drop(taken.take());
            true
        });
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        let err = Subscription::take(&paths, &options, "s", Start::Newest).unwrap_err();
        assert!(matches!(err, Error::SubscriberRunning { .. }), "{err}");
    }
}

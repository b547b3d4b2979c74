//! The bus lock: `flock(2)` on `F.lock`, exactly as the Python and bash peers
//! take it, so that all implementations exclude one another.
//!
//! The descriptor is kept open between acquisitions to save an `open` per
//! chunk, and every acquisition re-checks that the locked inode is still the
//! one named `F.lock`: a neighbour may have removed or replaced it, and a lock
//! on an orphaned inode excludes nobody. The open inode's identity never
//! changes, so it is read once, when the descriptor is opened; only the name
//! is looked at again.
//!
//! A child made by `fork(2)` inherits the descriptor, but a `flock(2)` lock
//! belongs to the open file description, which parent and child share:
//! through it the child would take the parent's lock as its own, and its
//! unlock would release the parent's. A child opens a descriptor of its own.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;

use crate::error::{Error, Result, is_gone};
use crate::files;
use crate::options::WaitPolicy;
use crate::sys;

/// A reusable handle on `F.lock`.
#[derive(Debug)]
pub(crate) struct BusLock {
    path: PathBuf,
    /// The descriptor between acquisitions, with its inode's (dev, ino).
    idle: Option<(File, Identity)>,
    /// Where the descriptor was opened.
    opened_in: sys::Origin,
    /// How long to retry a held lock without sleeping (see
    /// [`WaitPolicy::eager`]); zero blocks at once.
    eager: Duration,
}

/// A file's (device, inode).
type Identity = (u64, u64);

/// Something that can say, with the bus lock held and without a path
/// lookup, that `F.lock` still names the file this lock's descriptor
/// locked (see [`crate::sentinel`]).
pub(crate) trait Vouch {
    /// Whether `F.lock` has not changed since [`Vouch::checked`].
    fn unchanged(&self) -> bool;
    /// `F.lock` was just found, by path, to name the locked file; called
    /// after an [`Vouch::unchanged`] of the same acquisition.
    fn checked(&self);
}

/// Proof that the bus lock is held; releases it on drop.
pub(crate) struct LockGuard<'a> {
    owner: &'a mut Option<(File, Identity)>,
    held: Option<(Flock<File>, Identity)>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some((held, identity)) = self.held.take() {
            // If unlocking fails the descriptor is closed instead, which
            // releases the lock just as well.
            if let Ok(file) = held.unlock() {
                *self.owner = Some((file, identity));
            }
        }
    }
}

impl BusLock {
    /// A lock on `path`; in lossless mode a held lock is retried eagerly
    /// before sleeping, as lossless waits are (the holder is usually the
    /// other side of the hand-off, about to release it).
    pub(crate) fn new(path: PathBuf, policy: WaitPolicy) -> Self {
        let eager = policy.eager;
        BusLock {
            path,
            idle: None,
            opened_in: sys::Origin::here(),
            eager,
        }
    }

    fn open(&self) -> Result<(File, Identity)> {
        let mut opts = OpenOptions::new();
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        // Another host creating F.lock at the same moment can make this
        // open fail with EEXIST on a shared filesystem.
        let file = files::open_creating(&self.path, || {
            match opts
                .clone()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o666)
                .open(&self.path)
            {
                // A lock file made by another user may be read-only to us;
                // flock(2) does not need write access.
                Err(denied) if denied.kind() == io::ErrorKind::PermissionDenied => {
                    opts.clone().read(true).open(&self.path).map_err(|_| denied)
                }
                other => other,
            }
        })
        .map_err(Error::io("open lock file", &self.path))?;
        let opened = file.metadata().map_err(Error::io("stat", &self.path))?;
        Ok((file, (opened.dev(), opened.ino())))
    }

    /// Blocks until the bus lock is held.
    pub(crate) fn acquire(&mut self) -> Result<LockGuard<'_>> {
        self.acquire_remaking(|| Ok(false))
    }

    /// [`BusLock::acquire`], calling `remake` when the lock file cannot be
    /// opened because its directory is gone: once it made the directory
    /// again (it says so), the lock file is opened once more.
    pub(crate) fn acquire_remaking(
        &mut self,
        remake: impl FnMut() -> Result<bool>,
    ) -> Result<LockGuard<'_>> {
        self.acquire_vouched(remake, None)
    }

    /// [`BusLock::acquire_remaking`], taking `vouch`'s word that the lock
    /// file's name is unchanged where it can give it, instead of looking
    /// it up. `vouch` must serve this lock alone: it vouches for the file
    /// this descriptor locked.
    pub(crate) fn acquire_vouched(
        &mut self,
        mut remake: impl FnMut() -> Result<bool>,
        vouch: Option<&dyn Vouch>,
    ) -> Result<LockGuard<'_>> {
        loop {
            let (mut file, locked, kept) = match self.idle.take() {
                Some((file, locked)) if self.opened_in.is_here() => (file, locked, true),
                // Closing the descriptor a child inherited releases nothing
                // of its parent's.
                _ => {
                    let (file, locked) = match self.open() {
                        Err(e) if e.is_gone() && remake()? => self.open()?,
                        opened => opened?,
                    };
                    self.opened_in = sys::Origin::here();
                    (file, locked, false)
                }
            };
            let eager_until = Instant::now() + self.eager;
            let held = loop {
                let how = if Instant::now() < eager_until {
                    FlockArg::LockExclusiveNonblock
                } else {
                    FlockArg::LockExclusive
                };
                match Flock::lock(file, how) {
                    Ok(held) => break held,
                    Err((f, Errno::EINTR)) => file = f,
                    Err((f, Errno::EWOULDBLOCK)) => {
                        file = f;
                        std::thread::yield_now();
                    }
                    Err((_, errno)) => {
                        return Err(Error::io("lock", &self.path)(io::Error::from(errno)));
                    }
                }
            };
            // Asked even for a descriptor opened just now, which was never
            // vouched for: the answer reads what came before the check
            // below.
            let unchanged = vouch.is_some_and(|v| v.unchanged());
            if kept && unchanged {
                return Ok(LockGuard {
                    owner: &mut self.idle,
                    held: Some((held, locked)),
                });
            }
            match std::fs::symlink_metadata(&self.path) {
                Ok(named) if (named.dev(), named.ino()) == locked => {
                    if let Some(vouch) = vouch {
                        vouch.checked();
                    }
                    return Ok(LockGuard {
                        owner: &mut self.idle,
                        held: Some((held, locked)),
                    });
                }
                Ok(_) => log::debug!(
                    "{} was replaced while locking; locking again",
                    self.path.display()
                ),
                // ESTALE: removed through another client of a network
                // filesystem between the lookup and the stat.
                Err(e) if is_gone(e.raw_os_error()) => {
                    log::debug!(
                        "{} was removed while locking; locking again",
                        self.path.display()
                    )
                }
                Err(e) => return Err(Error::io("stat", &self.path)(e)),
            }
            // Dropping `held` closes the stale descriptor and its lock.
        }
    }
}

/// Who holds and who waits for the `flock(2)` lock on the file `dev`/`ino`.
pub(crate) struct FlockUsers {
    pub(crate) holder: Option<u32>,
    pub(crate) waiting: usize,
}

/// Reads `/proc/locks` (Linux), where each lock is a line such as
/// `1: FLOCK  ADVISORY  WRITE 12275 fe:00:10010931 0 EOF` (the device as
/// hexadecimal major:minor), and a process waiting for it a line with `->`
/// after the number. `None` where the file cannot be read.
///
/// The kernel hands the table out a page per read(2), and finds where
/// each page starts by counting entries from the top again: a lock
/// released elsewhere between two of those reads moves every later line
/// up, and the line that crossed the page boundary is never read. A holder
/// missing from one reading is therefore looked for in a few more (with
/// one reading, 8 to 33 of 2,000 lookups missed it while 150 other locks
/// came and went, in `a_holder_is_found_while_other_locks_come_and_go`);
/// the number waiting can still be off the same way.
pub(crate) fn flock_users(dev: u64, ino: u64) -> Option<FlockUsers> {
    const READINGS: usize = 5;
    let mut users = None;
    for _ in 0..READINGS {
        let table = std::fs::read_to_string("/proc/locks").ok()?;
        let read = parse_locks(&table, dev, ino);
        if read.holder.is_some() {
            return Some(read);
        }
        users = Some(read);
    }
    users
}

fn parse_locks(table: &str, dev: u64, ino: u64) -> FlockUsers {
    // Linux's split of a device number, which only its /proc/locks shows
    // (glibc's gnu_dev_major and gnu_dev_minor).
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    let file = format!("{major:02x}:{minor:02x}:{ino}");
    let mut users = FlockUsers {
        holder: None,
        waiting: 0,
    };
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (waits, rest) = match fields.get(1) {
            Some(&"->") => (true, &fields[2..]),
            _ => (false, fields.get(1..).unwrap_or_default()),
        };
        // FLOCK ADVISORY WRITE PID DEVICE:INODE START END
        if rest.len() < 5 || rest[0] != "FLOCK" || rest[4] != file {
            continue;
        }
        if waits {
            users.waiting += 1;
        } else {
            users.holder = rest[3].parse().ok();
        }
    }
    users
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);

    fn lossy_lock(path: &Path) -> BusLock {
        let policy = WaitPolicy {
            eager: Duration::ZERO,
            first_pause: Duration::from_millis(1),
            interval: Duration::from_millis(100),
        };
        BusLock::new(path.to_path_buf(), policy)
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Takes `F.lock` from another thread, which blocks behind `held` (a
    /// lock on the current `F.lock`) until `change` has run and `held` is
    /// released; returns the inode the thread ended up holding the lock
    /// on, after checking, while it still holds it, that this is the file
    /// named `F.lock` now. (A lock kept on an orphaned inode fails that:
    /// nothing else would have created a new `F.lock`, or it would not be
    /// locked.)
    fn acquire_across(lock_path: &Path, held: Flock<File>, change: impl FnOnce()) -> u64 {
        let first = held.metadata().unwrap();
        let (tx, rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let path = lock_path.to_path_buf();
        let waiter = std::thread::spawn(move || {
            let mut lock = lossy_lock(&path);
            let guard = lock.acquire().unwrap();
            let ino = guard.held.as_ref().unwrap().0.metadata().unwrap().ino();
            tx.send(ino).unwrap();
            release_rx.recv().unwrap();
            drop(guard);
        });
        wait_for("the waiter to block on the first F.lock", || {
            flock_users(first.dev(), first.ino()).unwrap().waiting > 0
        });
        change();
        drop(held);
        let ino = rx
            .recv_timeout(DEADLINE)
            .expect("the waiter never got the lock");
        // While the waiter holds its lock, the file now named F.lock is
        // locked: it excludes whoever comes next.
        let named = File::open(lock_path).unwrap();
        assert_eq!(named.metadata().unwrap().ino(), ino);
        assert!(
            matches!(
                Flock::lock(named, FlockArg::LockExclusiveNonblock),
                Err((_, Errno::EWOULDBLOCK))
            ),
            "the lock is not held on the file named F.lock"
        );
        release_tx.send(()).unwrap();
        waiter.join().unwrap();
        ino
    }

    fn hold(path: &Path) -> Flock<File> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Flock::lock(file, FlockArg::LockExclusive).unwrap()
    }

    /// A child made by fork(2) inherits the parent's idle descriptor, and
    /// with it the open file description that flock(2) locks belong to:
    /// locking through it, the child would share the lock its parent
    /// holds instead of waiting for it.
    #[test]
    fn a_forked_child_waits_for_the_lock_its_parent_holds() {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.lock");
        let released = dir.path().join("released");
        let mut lock = lossy_lock(&path);
        drop(lock.acquire().unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        let (ready_rx, ready_tx) = nix::unistd::pipe().unwrap();
        let child = sys::fork_child(|| {
            let _ = nix::unistd::read(&ready_rx, &mut [0u8; 1]);
            lock.acquire().is_ok() && released.exists()
        });
        let held = lock.acquire().unwrap();
        nix::unistd::write(&ready_tx, b"x").unwrap();
        let start = Instant::now();
        let mut exited = None;
        while flock_users(meta.dev(), meta.ino()).is_none_or(|u| u.waiting == 0) {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::StillAlive => {}
                status => {
                    exited = Some(status);
                    break;
                }
            }
            assert!(start.elapsed() < DEADLINE, "the child never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        File::create(&released).unwrap();
        drop(held);
        let status = exited.unwrap_or_else(|| waitpid(child, None).unwrap());
        assert_eq!(
            status,
            WaitStatus::Exited(child, 0),
            "the child took the lock its parent held"
        );
    }

    #[test]
    fn lock_file_removed_while_waiting_is_locked_again_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.lock");
        let held = hold(&path);
        // The new F.lock may get the old inode's number back once the
        // waiter closed it: the check is that the named file is locked.
        acquire_across(&path, held, || std::fs::remove_file(&path).unwrap());
    }

    #[test]
    fn lock_file_replaced_while_waiting_is_locked_again_on_the_new_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.lock");
        let held = hold(&path);
        let replacement = dir.path().join("replacement");
        File::create(&replacement).unwrap();
        let new_ino = std::fs::metadata(&replacement).unwrap().ino();
        let old_ino = held.metadata().unwrap().ino();
        let ino = acquire_across(&path, held, || {
            std::fs::rename(&replacement, &path).unwrap()
        });
        assert_ne!(ino, old_ino, "the lock stayed on the replaced inode");
        assert_eq!(ino, new_ino);
    }

    /// Whether another open file description can take the lock on `path`.
    fn free(path: &Path) -> bool {
        let file = File::open(path).unwrap();
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
    }

    /// The identity of the lock file is read when it is opened, and the
    /// descriptor kept between acquisitions: a replacement in between is
    /// still seen.
    #[test]
    fn a_lock_file_replaced_between_acquisitions_is_locked_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.lock");
        let mut lock = lossy_lock(&path);
        drop(lock.acquire().unwrap());
        let other = dir.path().join("other");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let held = lock.acquire().unwrap();
        assert!(!free(&path), "the lock held is not on the file named");
        drop(held);
        assert!(free(&path));
    }

    #[test]
    fn planted_symlink_at_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.lock");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let missing = dir.path().join("missing");
        for target in [&victim, &missing] {
            let _ = std::fs::remove_file(&path);
            symlink(target, &path).unwrap();
            let mut lock = lossy_lock(&path);
            let err = lock.acquire().err().expect("locked through a symlink");
            assert!(err.to_string().contains("bus.lock"), "{err}");
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!missing.exists(), "created through a dangling symlink");
    }

    /// Other tests, and on CI a GlusterFS brick, take and release locks
    /// all the time; a lookup of a lock held throughout must find it.
    #[test]
    fn a_holder_is_found_while_other_locks_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let held = hold(&path);
        let meta = held.metadata().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // 150 lines of about 50 bytes: the table spans pages.
        let files: Vec<File> = (0..150)
            .map(|i| File::create(dir.path().join(format!("other{i}"))).unwrap())
            .collect();
        let churn = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let locks: Vec<_> = files
                        .iter()
                        .map(|f| {
                            Flock::lock(f.try_clone().unwrap(), FlockArg::LockExclusive)
                                .map_err(|(_, e)| e)
                                .unwrap()
                        })
                        .collect();
                    drop(locks);
                }
            })
        };
        let missed = (0..2000)
            .filter(|_| {
                flock_users(meta.dev(), meta.ino())
                    .unwrap()
                    .holder
                    .is_none()
            })
            .count();
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(
            missed, 0,
            "the holder was missed in {missed} of 2000 lookups"
        );
    }

    #[test]
    fn the_lock_table_names_holder_and_waiters_of_one_file() {
        let dev = 0xfe << 8; // major 0xfe, minor 0, in Linux's encoding
        let table = "1: FLOCK  ADVISORY  WRITE 12275 fe:00:10010931 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 12276 fe:00:10010931 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 12277 fe:00:10010931 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 999 fe:00:10010931 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 555 fe:00:42 0 EOF\n";
        let users = parse_locks(table, dev, 10010931);
        assert_eq!(users.holder, Some(12275));
        assert_eq!(users.waiting, 2);
        let other = parse_locks(table, dev, 7);
        assert_eq!((other.holder, other.waiting), (None, 0));
    }
}

//! The bus lock: `flock(2)` on `F.lock`, exactly as the Python and bash peers
//! take it, so that all implementations exclude one another.
//!
//! The descriptor is kept open between acquisitions to save an `open` per
//! chunk, and every acquisition re-checks that the locked inode is still the
//! one named `F.lock`: a neighbour may have removed or replaced it, and a lock
//! on an orphaned inode excludes nobody.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;

use crate::error::{Error, Result, is_gone};
use crate::options::WaitPolicy;

/// A reusable handle on `F.lock`.
#[derive(Debug)]
pub(crate) struct BusLock {
    path: PathBuf,
    idle: Option<File>,
    /// How long to retry a held lock without sleeping (see
    /// [`WaitPolicy::eager`]); zero blocks at once.
    eager: Duration,
}

/// Proof that the bus lock is held; releases it on drop.
pub(crate) struct LockGuard<'a> {
    owner: &'a mut Option<File>,
    held: Option<Flock<File>>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            // If unlocking fails the descriptor is closed instead, which
            // releases the lock just as well.
            if let Ok(file) = held.unlock() {
                *self.owner = Some(file);
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
            eager,
        }
    }

    fn open(&self) -> Result<File> {
        let mut opts = OpenOptions::new();
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
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
                opts.read(true).open(&self.path).map_err(|_| denied)
            }
            other => other,
        }
        .map_err(Error::io("open lock file", &self.path))
    }

    /// Blocks until the bus lock is held.
    pub(crate) fn acquire(&mut self) -> Result<LockGuard<'_>> {
        loop {
            let mut file = match self.idle.take() {
                Some(file) => file,
                None => self.open()?,
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
            let locked = held.metadata().map_err(Error::io("stat", &self.path))?;
            match std::fs::symlink_metadata(&self.path) {
                Ok(named) if named.dev() == locked.dev() && named.ino() == locked.ino() => {
                    return Ok(LockGuard {
                        owner: &mut self.idle,
                        held: Some(held),
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
pub(crate) fn flock_users(dev: u64, ino: u64) -> Option<FlockUsers> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse_locks(&table, dev, ino))
}

fn parse_locks(table: &str, dev: u64, ino: u64) -> FlockUsers {
    let file = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_table_names_holder_and_waiters_of_one_file() {
        let dev = nix::sys::stat::makedev(0xfe, 0);
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

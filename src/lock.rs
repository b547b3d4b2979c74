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

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;

use crate::error::{Error, Result};

/// A reusable handle on `F.lock`.
#[derive(Debug)]
pub(crate) struct BusLock {
    path: PathBuf,
    idle: Option<File>,
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
    pub(crate) fn new(path: PathBuf) -> Self {
        BusLock { path, idle: None }
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
            let held = loop {
                match Flock::lock(file, FlockArg::LockExclusive) {
                    Ok(held) => break held,
                    Err((f, Errno::EINTR)) => file = f,
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
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
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

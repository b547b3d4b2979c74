//! A history consumer's position: the sequence number of the last delivered
//! chunk, in a file replaced by rename so that it always holds a whole
//! number, so that a restarted consumer resumes after it. The same kind of
//! file is a position file the user names (`--position-file`) and a
//! subscriber's record in `F.history/subscribers/` (see `subscriber`);
//! the record is reached through the descriptor of its directory, so that a
//! symbolic link planted in place of the directory is never followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result, is_gone};
use crate::files::create_afresh_at;

/// The most a position file holds: a sequence number (20 digits at most),
/// a newline, and room for whitespace a person may have added.
const MAX_LEN: u64 = 4096;

/// The last delivered sequence number, kept in a file across restarts.
#[derive(Debug)]
pub(super) struct PositionFile {
    /// The directory `name` and `staging_name` are in; `None` for the
    /// working directory, where they are whole paths.
    dir: Option<Arc<OwnedFd>>,
    name: PathBuf,
    staging_name: PathBuf,
    /// The file and its staging file, for messages.
    path: PathBuf,
    staging: PathBuf,
}

impl PositionFile {
    /// The position file at `path`, staged in `path.tmp`.
    pub(super) fn new(path: PathBuf) -> Self {
        let mut staging = path.clone().into_os_string();
        staging.push(".tmp");
        let staging = PathBuf::from(staging);
        PositionFile {
            dir: None,
            name: path.clone(),
            staging_name: staging.clone(),
            path,
            staging,
        }
    }

    /// The position file `name` of the directory open as `dir` (whose path
    /// is `dir_path`), staged in `staging_name` there.
    pub(super) fn in_dir(
        dir: Arc<OwnedFd>,
        dir_path: &Path,
        name: &str,
        staging_name: &str,
    ) -> Self {
        PositionFile {
            dir: Some(dir),
            name: name.into(),
            staging_name: staging_name.into(),
            path: dir_path.join(name),
            staging: dir_path.join(staging_name),
        }
    }

    fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_ref().map_or(AT_FDCWD, |dir| dir.as_fd())
    }

    pub(super) fn read(&self) -> Result<Option<u64>> {
        // O_NONBLOCK: opening a FIFO planted in its place must not hang.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let mut file = match openat(self.dir(), &self.name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(e) if is_gone(Some(e as i32)) => return Ok(None),
            Err(e) => return Err(Error::io("open", &self.path)(io::Error::from(e))),
        };
        // Read to a bound: the file is anyone's, and one that never ends (a
        // device) must not be read whole.
        let mut raw = Vec::new();
        (&mut file)
            .take(MAX_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(Error::io("read", &self.path))?;
        let seq = (raw.len() as u64 <= MAX_LEN)
            .then(|| std::str::from_utf8(&raw).ok()?.trim().parse().ok())
            .flatten();
        match seq {
            Some(seq) => Ok(Some(seq)),
            None => Err(Error::BadPosition {
                path: self.path.clone(),
            }),
        }
    }

    /// Fails unless the staging file can be created beside the position
    /// file (its directory exists and is writable), which is what
    /// [`PositionFile::write`] needs.
    pub(super) fn check_writable(&self) -> Result<()> {
        drop(self.create_staging()?);
        self.remove_staging()
    }

    fn remove_staging(&self) -> Result<()> {
        match unlinkat(self.dir(), &self.staging_name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::io("remove", &self.staging)(io::Error::from(e))),
        }
    }

    fn create_staging(&self) -> Result<File> {
        create_afresh_at(self.dir(), &self.staging_name, &self.staging).map_err(|e| match e {
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
    pub(super) fn write(&self, seq: u64) -> Result<()> {
        let mut file = self.create_staging()?;
        writeln!(file, "{seq}").map_err(Error::io("write", &self.staging))?;
        drop(file);
        renameat(self.dir(), &self.staging_name, self.dir(), &self.name)
            .map_err(|e| Error::io("rename", &self.staging)(io::Error::from(e)))
    }

    /// Removes the file and a leftover staging file.
    pub(super) fn remove(&self) -> Result<()> {
        match unlinkat(self.dir(), &self.name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::io("remove", &self.path)(io::Error::from(e))),
        }
        self.remove_staging()
    }
}

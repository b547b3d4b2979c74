//! A history consumer's position file: the sequence number of the last
//! delivered chunk, replaced by rename so that it always holds a whole
//! number, so that a restarted consumer resumes after it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::libc;

use crate::error::{Error, Result};
use crate::files::create_afresh;

/// The last delivered sequence number, kept in a file across restarts.
#[derive(Debug)]
pub(super) struct PositionFile {
    path: PathBuf,
    staging: PathBuf,
}

impl PositionFile {
    pub(super) fn new(path: PathBuf) -> Self {
        let mut staging = path.clone().into_os_string();
        staging.push(".tmp");
        PositionFile {
            path,
            staging: staging.into(),
        }
    }

    pub(super) fn read(&self) -> Result<Option<u64>> {
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
    pub(super) fn check_writable(&self) -> Result<()> {
        drop(self.create_staging()?);
        std::fs::remove_file(&self.staging).map_err(Error::io("remove", &self.staging))
    }

    pub(super) fn create_staging(&self) -> Result<File> {
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
    pub(super) fn write(&self, seq: u64) -> Result<()> {
        let mut file = self.create_staging()?;
        writeln!(file, "{seq}").map_err(Error::io("write", &self.staging))?;
        drop(file);
        std::fs::rename(&self.staging, &self.path).map_err(Error::io("rename", &self.staging))
    }
}

//! The bus is a family of sibling paths derived from one data file name.
//! Keeping the derivation in one place means every part of the crate (and
//! every peer implementation) agrees on exactly which names are shared.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The suffixes of the names beside `F` that a bus cannot do without. The
/// shared-memory log's `F.shm` and `F.shm.__new__` are longer, but a
/// producer that cannot make them publishes through `F` alone, as
/// filebus 0.3.5, whose names are these, always does.
const LOCK: &str = ".lock";
const STAGING: &str = ".__new__";
const HISTORY: &str = ".history";
const SUFFIXES: [&str; 3] = [LOCK, STAGING, HISTORY];

/// The longest name a directory is taken to allow where it cannot be
/// asked, not existing yet: the limit of every common filesystem.
const DEFAULT_NAME_MAX: usize = 255;

/// The files that make up one bus, all derived from the data file path `F`.
#[derive(Debug, Clone)]
pub struct BusPaths {
    data: PathBuf,
    lock: PathBuf,
    new: PathBuf,
    history: PathBuf,
    dir: PathBuf,
    name: OsString,
}

impl BusPaths {
    /// Derives the lock, staging and directory paths from the data file path.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        let data = data.into();
        let with_suffix = |suffix: &str| {
            let mut s = data.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        let dir = match data.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = data
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        BusPaths {
            lock: with_suffix(LOCK),
            new: with_suffix(STAGING),
            history: with_suffix(HISTORY),
            data,
            dir,
            name,
        }
    }

    /// `F`: the current chunk.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// `F.lock`: the `flock(2)` target that serialises writers.
    pub fn lock(&self) -> &Path {
        &self.lock
    }

    /// `F.__new__`: where a producer stages a chunk before renaming it to `F`.
    pub fn staging(&self) -> &Path {
        &self.new
    }

    /// `F.history/`: the retained chunks, named by sequence number.
    pub fn history(&self) -> &Path {
        &self.history
    }

    /// The directory holding `F`, which is what gets watched for events
    /// because `F` itself is replaced on every publish.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of `F` within [`BusPaths::dir`].
    pub fn file_name(&self) -> &OsStr {
        &self.name
    }

    /// Refuses `F` when a name beside it would be longer than its
    /// directory takes: `F.lock` and `F.__new__` could never be made, and
    /// a consumer would wait forever for a chunk.
    pub(crate) fn check_name_length(&self) -> Result<()> {
        let name_max = sys::name_max(&self.dir).unwrap_or(DEFAULT_NAME_MAX);
        let suffix = SUFFIXES.iter().map(|s| s.len()).max().unwrap_or(0);
        let len = self.name.len();
        if len + suffix <= name_max {
            return Ok(());
        }
        Err(Error::NameTooLong {
            path: self.data.clone(),
            len,
            max: name_max.saturating_sub(suffix),
            suffix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_sibling_names() {
        let p = BusPaths::new("/tmp/x/bus");
        assert_eq!(p.lock(), Path::new("/tmp/x/bus.lock"));
        assert_eq!(p.staging(), Path::new("/tmp/x/bus.__new__"));
        assert_eq!(p.history(), Path::new("/tmp/x/bus.history"));
        assert_eq!(p.dir(), Path::new("/tmp/x"));
        assert_eq!(p.file_name(), "bus");
    }

    #[test]
    fn a_name_fits_while_its_longest_companion_does() {
        let dir = tempfile::tempdir().unwrap();
        let name_max = sys::name_max(dir.path()).unwrap();
        let fits = dir.path().join("n".repeat(name_max - STAGING.len()));
        assert!(BusPaths::new(&fits).check_name_length().is_ok());
        let over = dir.path().join("n".repeat(name_max - STAGING.len() + 1));
        let refused = BusPaths::new(&over).check_name_length().unwrap_err();
        assert!(
            refused.to_string().contains(&format!(
                ": name too long for a bus: {} bytes, at most {} (",
                name_max - STAGING.len() + 1,
                name_max - STAGING.len()
            )),
            "{refused}"
        );
        let missing = dir.path().join("later").join("n".repeat(248));
        assert!(BusPaths::new(&missing).check_name_length().is_err());
    }

    #[test]
    fn bare_name_lives_in_current_directory() {
        let p = BusPaths::new("bus");
        assert_eq!(p.dir(), Path::new("."));
        assert_eq!(p.lock(), Path::new("bus.lock"));
    }
}

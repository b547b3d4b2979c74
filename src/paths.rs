//! The bus is a family of sibling paths derived from one data file name.
//! Keeping the derivation in one place means every part of the crate (and
//! every peer implementation) agrees on exactly which names are shared.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

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
            lock: with_suffix(".lock"),
            new: with_suffix(".__new__"),
            history: with_suffix(".history"),
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
    fn bare_name_lives_in_current_directory() {
        let p = BusPaths::new("bus");
        assert_eq!(p.dir(), Path::new("."));
        assert_eq!(p.lock(), Path::new("bus.lock"));
    }
}

//! The history directory `F.history/` through one open descriptor: entries
//! are opened, linked and removed relative to the directory that was
//! checked, so a symbolic link planted in its place is never followed, and a
//! directory that was removed or replaced is noticed. Also where the
//! invariant of the module (entries form one unbroken range) is put to use:
//! the newest entry is found by probing, not listing.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use super::name::{entry_name, parse_entry_name};
use crate::error::{Error, Result, is_gone};
use crate::files;
use crate::options::Start;
use crate::sys;

pub(super) fn errno_io(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let to_error = Error::io(action, path);
    move |errno| to_error(io::Error::from(errno))
}

/// An open handle on `F.history/`. Working through a descriptor opened with
/// `O_NOFOLLOW` means a symlink planted in place of the directory is never
/// followed, and every entry is opened relative to the directory that was
/// checked.
#[derive(Debug)]
pub(super) struct HistoryDir {
    pub(super) path: PathBuf,
    fd: OwnedFd,
    id: (u64, u64),
}

impl HistoryDir {
    /// Opens `F.history/`, or `None` when it does not exist.
    pub(super) fn open(path: &Path) -> Result<Option<Self>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(AT_FDCWD, path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if is_gone(Some(e as i32)) => return Ok(None),
            Err(e) => return Err(errno_io("open directory", path)(e)),
        };
        let meta = fstat(&fd).map_err(errno_io("stat", path))?;
        Ok(Some(HistoryDir {
            path: path.to_path_buf(),
            fd,
            id: sys::file_id(&meta),
        }))
    }

    /// Opens `F.history/`, creating it first if needed (and again if it
    /// "exists" but is not there, see [`files::make_dir_and_open`]).
    pub(super) fn create(path: &Path) -> Result<Self> {
        files::make_dir_and_open(
            path,
            || mkdirat(AT_FDCWD, path, Mode::from_bits_truncate(0o777)),
            || HistoryDir::open(path),
        )
    }

    /// Whether the path still names the directory this handle holds: a
    /// removed or replaced history directory must be opened afresh.
    pub(super) fn still_named(&self) -> Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => Ok((meta.dev(), meta.ino()) == self.id),
            Err(e) if is_gone(e.raw_os_error()) => Ok(false),
            Err(e) => Err(Error::io("stat", &self.path)(e)),
        }
    }

    /// The directory's descriptor, for entries other than chunks (the
    /// subscribers' directory) opened relative to it.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where a consumer starting at `start` begins, given that the entries
    /// `oldest..=newest` are retained.
    pub(super) fn start_at(&self, start: Start, (oldest, newest): (u64, u64)) -> Result<u64> {
        Ok(match start {
            Start::Seq(seq) => seq.max(1),
            Start::Oldest => oldest,
            // An end chunk there closed a stream that is over: a newcomer
            // waits for the next stream instead of ending at once.
            Start::Newest => match self.open_entry(newest)? {
                Some((_, meta)) if meta.size() == 0 => newest + 1,
                _ => newest,
            },
        })
    }

    pub(super) fn entry_path(&self, seq: u64) -> PathBuf {
        self.path.join(entry_name(seq))
    }

    pub(super) fn has(&self, seq: u64) -> Result<bool> {
        Ok(self.stat(seq)?.is_some())
    }

    /// The device and inode numbers of entry `seq`, or `None` when it does
    /// not exist.
    pub(super) fn id_of(&self, seq: u64) -> Result<Option<(u64, u64)>> {
        Ok(self.stat(seq)?.map(|st| sys::file_id(&st)))
    }

    /// What entry `seq` is (the name, never followed), or `None` when it
    /// does not exist.
    fn stat(&self, seq: u64) -> Result<Option<FileStat>> {
        match fstatat(
            &self.fd,
            entry_name(seq).as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(st)),
            Err(e) if is_gone(Some(e as i32)) => Ok(None),
            Err(e) => Err(errno_io("stat", &self.entry_path(seq))(e)),
        }
    }

    /// Whether `id` is one of the two entries before `next`. A consumer
    /// that has every entry up to `next - 1` and looks at `F` can find
    /// there no other numbered chunk (see [`look_at_data`]).
    pub(super) fn precedes(&self, next: u64, id: (u64, u64)) -> Result<bool> {
        for seq in next.saturating_sub(2).max(1)..next {
            if self.id_of(seq)? == Some(id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Opens entry `seq` for reading, or `None` when it does not exist.
    pub(super) fn open_entry(&self, seq: u64) -> Result<Option<(File, Metadata)>> {
        // O_NONBLOCK: opening a FIFO planted as an entry must not hang.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match openat(&self.fd, entry_name(seq).as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(e) if is_gone(Some(e as i32)) => return Ok(None),
            Err(e) => return Err(errno_io("open", &self.entry_path(seq))(e)),
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) if is_gone(e.raw_os_error()) => return Ok(None),
            Err(e) => return Err(Error::io("stat", &self.entry_path(seq))(e)),
        };
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: self.entry_path(seq),
                kind: "special file",
            });
        }
        Ok(Some((file, meta)))
    }

    /// Links `staging` as entry `seq`; `false` when that entry exists
    /// already (another producer published it).
    pub(super) fn link(&self, staging: &Path, seq: u64) -> Result<bool> {
        // No AT_SYMLINK_FOLLOW: the staged file itself is linked.
        match linkat(
            AT_FDCWD,
            staging,
            &self.fd,
            entry_name(seq).as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(errno_io("link into", &self.entry_path(seq))(e)),
        }
    }

    /// Removes entry `seq`; `false` when there was none.
    pub(super) fn remove(&self, seq: u64) -> Result<bool> {
        match unlinkat(
            &self.fd,
            entry_name(seq).as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno_io("remove", &self.entry_path(seq))(e)),
        }
    }

    /// Calls `each` with the sequence number of every name of the listing
    /// that is an entry's, and its type when the listing tells.
    fn list(&self, mut each: impl FnMut(u64, Option<Type>) -> Result<()>) -> Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(&self.fd, ".", flags, Mode::empty())
            .map_err(errno_io("list", &self.path))?;
        for entry in dir.iter() {
            let entry = entry.map_err(errno_io("list", &self.path))?;
            if let Some(seq) = parse_entry_name(OsStr::from_bytes(entry.file_name().to_bytes())) {
                each(seq, entry.file_type())?;
            }
        }
        Ok(())
    }

    /// Lists the directory: the oldest and newest entries, and the oldest
    /// one after `after`.
    pub(super) fn scan(&self, after: u64) -> Result<Scan> {
        let mut scan = Scan::default();
        self.list(|seq, _| {
            scan.add(seq, after);
            Ok(())
        })?;
        Ok(scan)
    }

    /// The oldest and newest entries that are chunks: regular files. What
    /// else is named as an entry (a directory, a FIFO, a symbolic link)
    /// was put there by hand and holds no chunk, so it does not stretch the
    /// range a person is shown.
    pub(super) fn chunk_range(&self) -> Result<Option<(u64, u64)>> {
        let mut scan = Scan::default();
        self.list(|seq, kind| {
            let regular = match kind {
                Some(kind) => kind == Type::File,
                // The file system does not tell in the listing.
                None => self
                    .stat(seq)?
                    .is_some_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG),
            };
            if regular {
                scan.add(seq, u64::MAX);
            }
            Ok(())
        })?;
        Ok(scan.range)
    }

    /// The newest entry, given that `present` exists: doubles the step until
    /// an entry is missing, then bisects, relying on the entries forming one
    /// contiguous range.
    pub(super) fn newest_from(&self, present: u64) -> Result<u64> {
        let mut lo = present;
        let mut step = 1u64;
        let hi = loop {
            let probe = lo.saturating_add(step);
            if probe == lo || !self.has(probe)? {
                break probe;
            }
            lo = probe;
            step = step.saturating_mul(2);
        };
        let mut hi = hi;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.has(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// What a listing of the history directory found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Oldest and newest entries.
    pub(super) range: Option<(u64, u64)>,
    /// The oldest entry after the number asked about.
    pub(super) first_after: Option<u64>,
}

impl Scan {
    fn add(&mut self, seq: u64, after: u64) {
        let (lo, hi) = self.range.unwrap_or((seq, seq));
        self.range = Some((lo.min(seq), hi.max(seq)));
        if seq > after {
            self.first_after = Some(self.first_after.unwrap_or(seq).min(seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listing finds the retained range and the first entry after a
    /// number across gaps, and ignores names that are not entries.
    #[test]
    fn scan_locates_entries_around_gaps() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = HistoryDir::create(&tmp.path().join("bus.history")).unwrap();
        for seq in [2, 3, 7, 9] {
            std::fs::write(dir.entry_path(seq), b"x").unwrap();
        }
        std::fs::write(tmp.path().join("bus.history").join("stray"), b"").unwrap();
        let scan = dir.scan(3).unwrap();
        assert_eq!(scan.range, Some((2, 9)));
        assert_eq!(scan.first_after, Some(7));
        assert_eq!(dir.scan(0).unwrap().first_after, Some(2));
        assert_eq!(dir.scan(7).unwrap().first_after, Some(9));
        assert_eq!(dir.scan(9).unwrap().first_after, None);
        assert!(dir.has(3).unwrap() && !dir.has(4).unwrap());
    }
}

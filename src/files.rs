//! Opening and creating files in a directory that other users share. Every
//! role needs the same few operations, and each must hold against a
//! neighbour who plants a symbolic link, a hard link, a FIFO or a leftover
//! where a bus file belongs: such an entry is refused or replaced, never
//! followed, never written through, and never waited on.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::libc;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result, is_gone};

/// Creates `dir` and its missing parents, as a producer or a subscriber
/// does for `F`'s directory. An entry in the way that is not a directory is
/// reported as the kernel reports one in the middle of a path, "Not a
/// directory", rather than as `create_dir_all` does, "File exists".
pub(crate) fn create_dirs(dir: &Path) -> Result<()> {
    match std::fs::create_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Error::io("create directory", dir)(
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ))
        }
        other => other.map_err(Error::io("create directory", dir)),
    }
}

/// What is at `path`, without following a symbolic link: `None` when
/// nothing is there (or it went stale on a network filesystem, removed by
/// another client between the lookup and the stat), an error for anything
/// but a regular file.
pub(crate) fn stat_regular(path: &Path) -> Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Error::unless_regular(path, meta.mode()).map(|()| Some(meta)),
        Err(e) if is_gone(e.raw_os_error()) => Ok(None),
        Err(e) => Err(Error::io("stat", path)(e)),
    }
}

/// Opens the regular file at `path` for reading, or `None` when nothing is
/// there, or when the file opened went stale before its `fstat` (replaced
/// through another client of a network filesystem). Not following a symbolic link, not hanging on a FIFO
/// (`O_NONBLOCK`), and refusing anything but a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<Option<(File, Metadata)>> {
    open_regular_by(path, File::metadata, Metadata::mode)
}

/// [`open_regular`], describing the file opened with `stat`, whose answer
/// gives its type through `mode` (`st_mode`).
pub(crate) fn open_regular_by<S>(
    path: &Path,
    stat: impl FnOnce(&File) -> io::Result<S>,
    mode: impl FnOnce(&S) -> u32,
) -> Result<Option<(File, S)>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if is_gone(e.raw_os_error()) => return Ok(None),
        Err(e) => return Err(Error::io("open", path)(e)),
    };
    let meta = match stat(&file) {
        Ok(meta) => meta,
        Err(e) if is_gone(e.raw_os_error()) => return Ok(None),
        Err(e) => return Err(Error::io("stat", path)(e)),
    };
    Error::unless_regular(path, mode(&meta))?;
    Ok(Some((file, meta)))
}

/// Opens a new file at `path` for writing. `O_EXCL` never follows a symlink
/// and never reuses an inode a neighbour planted (a hard link to someone
/// else's file would otherwise be truncated).
pub(crate) fn create_afresh(path: &Path) -> Result<File> {
    create_afresh_at(AT_FDCWD, path, path)
}

/// [`create_afresh`] for the entry `name` of the directory open as `dir`,
/// so that nothing planted in place of the directory is followed either;
/// `path` names the file in messages.
pub(crate) fn create_afresh_at(dir: BorrowedFd<'_>, name: &Path, path: &Path) -> Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    afresh(
        path,
        || {
            openat(
                dir,
                name,
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o666),
            )
            .map(File::from)
            .map_err(io::Error::from)
        },
        || unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from),
    )
}

/// Runs `make`, which creates `name` and fails if anything is there. What is
/// there is a leftover of a dead process or a neighbour's plant, so the entry
/// itself (never what it points to) is removed and `make` runs once more.
pub(crate) fn make_afresh<T>(name: &Path, make: impl Fn() -> io::Result<T>) -> Result<T> {
    afresh(name, make, || std::fs::remove_file(name))
}

fn afresh<T>(
    name: &Path,
    make: impl Fn() -> io::Result<T>,
    remove: impl FnOnce() -> io::Result<()>,
) -> Result<T> {
    match make() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            log::debug!("removing stale {}", name.display());
            remove().map_err(Error::io("remove stale", name))?;
            make()
        }
        other => other,
    }
    .map_err(Error::io("create", name))
}

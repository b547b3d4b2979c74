//! Opening and creating files in a directory that other users share. Every
//! role needs the same few operations, and each must hold against a
//! neighbour who plants a symbolic link, a hard link, a FIFO or a leftover
//! where a bus file belongs: such an entry is refused or replaced, never
//! followed, never written through, and never waited on. The directories
//! themselves are made here too, where other hosts may be making them at
//! the same moment.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::libc;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result, is_gone, kind_of};

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

/// How long making a directory or a lock file may keep meeting one that
/// "exists" yet is not there when looked up or opened before it fails
/// ([`create_dirs`], [`make_dir_and_open`], [`open_creating`]): long enough
/// for a shared filesystem to settle a race between hosts, short enough
/// that a user is not left waiting.
const SETTLE: Duration = Duration::from_secs(2);

/// The pauses between looks at an entry that has not settled: from 1 ms,
/// doubling up to 50 ms, until a deadline.
struct LookAgain {
    deadline: Instant,
    pause: Duration,
}

impl LookAgain {
    fn within(limit: Duration) -> Self {
        LookAgain {
            deadline: Instant::now() + limit,
            pause: Duration::from_millis(1),
        }
    }

    /// Waits before the next look; `false`, at once, when the deadline has
    /// passed.
    fn pause(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(self.pause.min(left));
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        true
    }
}

/// Creates the directory `path` and whichever of its parents are missing,
/// as `mkdir -p` does, where other hosts may be creating them at the same
/// moment. Through two GlusterFS clients, two `mkdir` of one new directory
/// at once were both answered `EEXIST` while a lookup right after found
/// nothing (`ENOENT`; the client log showed `ESTALE`) and a second
/// `mkdir` made it (3 rounds in 1000), where `std::fs::create_dir_all`
/// gave up with "File exists" (issue 20; tests/cluster.rs races two
/// producers so). So "exists" means "look again": a directory there ends
/// the call, nothing or a stale handle there means making it again, for up
/// to [`SETTLE`].
///
/// A symbolic link on the way, the last component included, is followed
/// when it leads to a directory, as by `mkdir -p` and by every participant
/// that opens the directory: the user names the directory (perhaps through
/// `/var/run` -> `/run`), and what is never followed are the bus files in
/// it. Anything else in the way is refused ([`Error::NotDirectory`]).
pub(crate) fn create_dirs(path: &Path) -> Result<()> {
    create_dirs_by(
        path,
        &mut LookAgain::within(SETTLE),
        &|p| std::fs::create_dir(p),
        &|p, follow| {
            let meta = if follow {
                std::fs::metadata(p)
            } else {
                std::fs::symlink_metadata(p)
            };
            meta.map(|m| m.mode())
        },
    )
}

/// [`create_dirs`] with its two calls given: `mkdir`, and `mode`, which
/// answers `st_mode` of what is at a path, following a symbolic link when
/// asked to.
fn create_dirs_by(
    path: &Path,
    again: &mut LookAgain,
    mkdir: &impl Fn(&Path) -> io::Result<()>,
    mode: &impl Fn(&Path, bool) -> io::Result<u32>,
) -> Result<()> {
    let mut parent_made = false;
    loop {
        let error = match mkdir(path) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let last = match error.raw_os_error() {
            Some(libc::EEXIST) => match look_at_dir(path, mode)? {
                None => return Ok(()),
                Some(gone) => gone,
            },
            // A parent is missing, or was removed meanwhile, or is not a
            // directory: it is made (or refused), then this one at once.
            Some(libc::ENOENT | libc::ENOTDIR) if !parent_made => {
                match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => {
                        create_dirs_by(parent, again, mkdir, mode)?;
                        parent_made = true;
                        continue;
                    }
                    None => return Err(Error::io("create directory", path)(error)),
                }
            }
            // The parent went again as soon as it was made, or its handle
            // is stale.
            Some(libc::ENOENT | libc::ESTALE) => error,
            _ => return Err(Error::io("create directory", path)(error)),
        };
        log::debug!("{}: {last}; looking again", path.display());
        if !again.pause() {
            return Err(Error::Unsettled {
                path: path.to_path_buf(),
                source: last,
            });
        }
        parent_made = false;
    }
}

/// What is at `path`, which `mkdir` said exists: `None` for a directory (or
/// a symbolic link to one), the error when nothing is there or the handle
/// is stale (look again), [`Error::NotDirectory`] for anything else.
fn look_at_dir(
    path: &Path,
    mode: &impl Fn(&Path, bool) -> io::Result<u32>,
) -> Result<Option<io::Error>> {
    let is_dir = |m: u32| m as libc::mode_t & libc::S_IFMT == libc::S_IFDIR;
    let m = match mode(path, false) {
        Ok(m) => m,
        Err(e) if is_gone(e.raw_os_error()) => return Ok(Some(e)),
        Err(e) => return Err(Error::io("stat", path)(e)),
    };
    let kind = if is_dir(m) {
        return Ok(None);
    } else if m as libc::mode_t & libc::S_IFMT == libc::S_IFLNK {
        match mode(path, true) {
            Ok(m) if is_dir(m) => return Ok(None),
            Ok(_) => "symbolic link to something other than a directory",
            Err(e) if is_gone(e.raw_os_error()) => "symbolic link to nothing",
            Err(e) => return Err(Error::io("stat", path)(e)),
        }
    } else {
        kind_of(m)
    };
    Err(Error::NotDirectory {
        path: path.to_path_buf(),
        kind,
    })
}

/// Makes a directory with `mkdir` unless it is there, and opens it with
/// `open`, which answers `None` when nothing is there (`ENOENT`, `ESTALE`).
/// As in [`create_dirs`], "exists" followed by nothing there means making
/// it again, for up to [`SETTLE`]; `path` names it in messages.
pub(crate) fn make_dir_and_open<T>(
    path: &Path,
    mkdir: impl Fn() -> nix::Result<()>,
    open: impl Fn() -> Result<Option<T>>,
) -> Result<T> {
    let mut again = LookAgain::within(SETTLE);
    loop {
        let last = match mkdir() {
            Ok(()) | Err(Errno::EEXIST) => match open()? {
                Some(dir) => return Ok(dir),
                None => io::Error::from(io::ErrorKind::NotFound),
            },
            Err(Errno::ESTALE) => io::Error::from(Errno::ESTALE),
            Err(e) => return Err(Error::io("create directory", path)(e.into())),
        };
        log::debug!("{}: {last}; looking again", path.display());
        if !again.pause() {
            return Err(Error::Unsettled {
                path: path.to_path_buf(),
                source: last,
            });
        }
    }
}

/// Runs `open`, an `open(2)` with `O_CREAT` but not `O_EXCL`, again while
/// it fails with `EEXIST`, for up to [`SETTLE`]. Such an open cannot fail
/// so on a local filesystem; through GlusterFS it did when another client
/// created the same file at the same moment (`F.lock`, in 1 round of 445
/// of tests/cluster.rs's race of two new producers): the file is there, and
/// opening it again finds it. After the deadline, the last error.
pub(crate) fn open_creating<T>(path: &Path, open: impl Fn() -> io::Result<T>) -> io::Result<T> {
    let mut again = LookAgain::within(SETTLE);
    loop {
        match open() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                log::debug!("{}: {e}; opening again", path.display());
                if !again.pause() {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::{Arc, Barrier};

    /// Threads making one new nested directory at once, round after
    /// round: every one succeeds, whoever made each level.
    #[test]
    fn racing_creators_of_one_new_directory_all_succeed() {
        let tmp = tempfile::tempdir().unwrap();
        const THREADS: usize = 6;
        for round in 0..100 {
            let path = tmp.path().join(format!("r{round}/a/b/c"));
            let barrier = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        create_dirs(&path)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            assert!(path.is_dir());
        }
    }

    /// A file (or FIFO) where a directory belongs, at the end or on the
    /// way, is refused in one line naming it.
    #[test]
    fn a_file_in_the_way_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        for (path, what) in [
            (file.clone(), "regular file"),
            (file.join("sub/dir"), "regular file"),
            (fifo.clone(), "FIFO"),
        ] {
            let err = create_dirs(&path).unwrap_err();
            let at = if what == "FIFO" { &fifo } else { &file };
            assert_eq!(
                err.to_string(),
                format!("{} is a {what}, not a directory", at.display())
            );
        }
    }

    /// As before (`std::fs::create_dir_all`), a symbolic link to a
    /// directory is followed, at the end or on the way; one to nothing or
    /// to a file is refused.
    #[test]
    fn a_symbolic_link_is_followed_only_to_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        create_dirs(&link).unwrap();
        create_dirs(&link.join("sub")).unwrap();
        assert!(real.join("sub").is_dir());

        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        for (name, target, kind) in [
            (
                "to-nothing",
                tmp.path().join("nothing"),
                "symbolic link to nothing",
            ),
            (
                "to-file",
                file,
                "symbolic link to something other than a directory",
            ),
        ] {
            let link = tmp.path().join(name);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let err = create_dirs(&link.join("sub")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{} is a {kind}, not a directory", link.display())
            );
            assert!(!target.join("sub").exists());
        }
    }

    /// Calls a fake filesystem answers as GlusterFS did: `mkdir` of the
    /// new directory first says `EEXIST` while a lookup finds nothing or a
    /// stale handle, `looks` times; then `mkdir` makes it.
    struct RacedMkdir {
        looks: usize,
        stale: bool,
        calls: RefCell<Vec<String>>,
    }

    impl RacedMkdir {
        fn new(looks: usize, stale: bool) -> Self {
            RacedMkdir {
                looks,
                stale,
                calls: RefCell::new(Vec::new()),
            }
        }

        fn create(&self, path: &Path, limit: Duration) -> Result<()> {
            let made = RefCell::new(false);
            let failed = || self.calls.borrow().iter().filter(|c| *c == "gone").count();
            create_dirs_by(
                path,
                &mut LookAgain::within(limit),
                &|p| {
                    self.calls
                        .borrow_mut()
                        .push(format!("mkdir {}", p.display()));
                    if p != path || *made.borrow() || failed() < self.looks {
                        Err(io::Error::from_raw_os_error(libc::EEXIST))
                    } else {
                        *made.borrow_mut() = true;
                        Ok(())
                    }
                },
                &|p, _| {
                    if p == path && !*made.borrow() {
                        self.calls.borrow_mut().push("gone".into());
                        let errno = if self.stale {
                            libc::ESTALE
                        } else {
                            libc::ENOENT
                        };
                        Err(io::Error::from_raw_os_error(errno))
                    } else {
                        // S_IFDIR | 0o755 (mode_t is 16 bits on some systems).
                        Ok(0o040_755)
                    }
                },
            )
        }
    }

    #[test]
    fn exists_then_nothing_or_stale_there_means_make_it_again() {
        for stale in [false, true] {
            let fs = RacedMkdir::new(3, stale);
            fs.create(Path::new("/shared/new"), SETTLE).unwrap();
            let calls = fs.calls.borrow();
            let mkdirs = calls.iter().filter(|c| *c == "mkdir /shared/new").count();
            assert_eq!(mkdirs, 4, "stale {stale}: {calls:?}");
        }
    }

    #[test]
    fn a_directory_that_never_settles_fails_at_the_deadline_in_one_line() {
        let fs = RacedMkdir::new(usize::MAX, true);
        let start = Instant::now();
        let limit = Duration::from_millis(100);
        let err = fs.create(Path::new("/shared/new"), limit).unwrap_err();
        assert!(start.elapsed() >= limit);
        assert!(matches!(err, Error::Unsettled { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create directory /shared/new: it exists, yet")
                && text.contains("Stale file handle")
                && !text.contains('\n'),
            "{text}"
        );
    }

    /// [`make_dir_and_open`]: "exists", then not there when opened, twice,
    /// then there.
    #[test]
    fn a_directory_made_and_opened_is_made_again_when_it_is_not_there() {
        let opens = RefCell::new(0);
        let mkdirs = RefCell::new(0);
        let got = make_dir_and_open(
            Path::new("/shared/F.history"),
            || {
                *mkdirs.borrow_mut() += 1;
                Err(Errno::EEXIST)
            },
            || {
                *opens.borrow_mut() += 1;
                Ok((*opens.borrow() > 2).then_some("dir"))
            },
        )
        .unwrap();
        assert_eq!((got, *mkdirs.borrow(), *opens.borrow()), ("dir", 3, 3));
    }

    /// [`open_creating`]: an open that says `EEXIST` twice, as a racing
    /// creator on GlusterFS makes it, then opens; other errors at once.
    #[test]
    fn an_open_creating_a_file_another_host_creates_is_made_again() {
        let opens = RefCell::new(0);
        let got = open_creating(Path::new("/shared/F.lock"), || {
            *opens.borrow_mut() += 1;
            if *opens.borrow() <= 2 {
                Err(io::Error::from_raw_os_error(libc::EEXIST))
            } else {
                Ok("file")
            }
        });
        assert_eq!((got.unwrap(), *opens.borrow()), ("file", 3));
        let opens = RefCell::new(0);
        let denied = open_creating(Path::new("/shared/F.lock"), || -> io::Result<()> {
            *opens.borrow_mut() += 1;
            Err(io::Error::from_raw_os_error(libc::EACCES))
        });
        assert_eq!(denied.unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert_eq!(*opens.borrow(), 1);
    }
}

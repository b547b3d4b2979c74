//! One error type for the whole library, so that every failure reaches the
//! user as a single line naming the path involved and the cause.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while operating a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on one of the bus files failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted, as a verb phrase ("open", "rename to").
        action: &'static str,
        /// The file it was attempted on.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A bus file exists but is not a regular file (a directory, a FIFO, ...).
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A bus file is a symbolic link; filebus never follows links in a
    /// shared directory, since a neighbour could aim them at any file.
    #[error("{} is a symbolic link; refusing to follow it", path.display())]
    Symlink {
        /// The offending path.
        path: PathBuf,
    },
    /// A directory the bus needs is something else: a file, a FIFO, a
    /// symbolic link that leads nowhere or not to a directory.
    #[error("{} is a {kind}, not a directory", path.display())]
    NotDirectory {
        /// The offending path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Creating a directory the bus needs kept answering that it exists,
    /// and looking it up kept finding nothing there (`ENOENT`) or a stale
    /// handle (`ESTALE`), until the deadline: another host removes it as
    /// fast as it is made, or the shared filesystem does not settle.
    #[error(
        "cannot create directory {}: it exists, yet looking it up kept failing ({source})",
        path.display()
    )]
    Unsettled {
        /// The directory.
        path: PathBuf,
        /// Why the last look failed.
        #[source]
        source: io::Error,
    },
    /// The data file's name leaves no room for the names beside it
    /// (`F.lock`, `F.__new__`, `F.history`) within the longest name its
    /// directory takes: no producer could ever publish on the bus.
    #[error(
        "{}: name too long for a bus: {len} bytes, at most {max} (its directory takes \
         names of up to {} bytes, and FILE.__new__ adds {})",
        path.display(),
        max + suffix,
        suffix
    )]
    NameTooLong {
        /// The data file.
        path: PathBuf,
        /// The length of its name, in bytes.
        len: usize,
        /// The longest name it may have there.
        max: usize,
        /// The length of the longest suffix of the names beside it.
        suffix: usize,
    },
    /// Options that cannot work together were combined.
    #[error("{0}")]
    Incompatible(&'static str),
    /// An option was given a value outside what it takes.
    #[error("{option} {value}: expected {expected}")]
    OutOfRange {
        /// The option, as the library names it.
        option: &'static str,
        /// The value given.
        value: u64,
        /// What it takes, in words.
        expected: String,
    },
    /// A strict history consumer fell behind the retained history.
    #[error("{loss} on {}; stopping (strict)", path.display())]
    FellBehind {
        /// The bus data file.
        path: PathBuf,
        /// What was lost.
        loss: Loss,
    },
    /// A history consumer's position file holds no sequence number.
    #[error("{} does not hold a chunk sequence number", path.display())]
    BadPosition {
        /// The position file.
        path: PathBuf,
    },
    /// A subscriber name (see [`crate::HistoryOptions::subscribe`]) that
    /// is not 1 to 64 bytes of `A-Z a-z 0-9 . _ -` not starting with `.`.
    #[error(
        "{name:?} is not a subscriber name: 1 to 64 characters of A-Z a-z 0-9 . _ -, \
         not starting with '.'"
    )]
    BadSubscriberName {
        /// The name given.
        name: String,
    },
    /// Another process runs this subscription (it holds its lock), so it
    /// can neither be run twice nor be removed now.
    #[error(
        "{}subscriber {name} on {} is {}running{}",
        if *removing { "cannot unsubscribe: " } else { "" },
        path.display(),
        if *removing { "" } else { "already " },
        pid.map_or(String::new(), |pid| format!(" (PID {pid})"))
    )]
    SubscriberRunning {
        /// The subscription's name.
        name: String,
        /// The bus data file.
        path: PathBuf,
        /// The process running it, where the system tells.
        pid: Option<u32>,
        /// Whether this was an attempt to remove it.
        removing: bool,
    },
    /// [`crate::Bus::unsubscribe`] was asked for a subscription the bus
    /// does not have.
    #[error("{} has no subscriber {name}", path.display())]
    NoSubscriber {
        /// The name asked for.
        name: String,
        /// The bus data file.
        path: PathBuf,
    },
    /// A lossless consumer could not remove the chunk once delivered, so it
    /// did not deliver it: the next consumer would have delivered it again.
    #[error(
        "{} not delivered: this consumer could not remove it afterwards ({source}); \
         it stays on the bus for another consumer",
        path.display()
    )]
    NotRemovable {
        /// The bus data file.
        path: PathBuf,
        /// Why it cannot be removed.
        #[source]
        source: io::Error,
    },
    /// Reading the producer's input failed.
    #[error("cannot read input: {0}")]
    Input(#[source] io::Error),
    /// Writing to the consumer's output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
    /// The producer or consumer was stopped through its [`crate::Stop`]
    /// handle; the call changed nothing on the bus.
    #[error("stopped")]
    Stopped,
    /// `recv_timeout` or `try_recv` found nothing to receive before the
    /// deadline; the call changed nothing on the bus.
    #[error("timed out waiting for a chunk")]
    TimedOut,
}

/// Chunks a history consumer fell too far behind to deliver: the producer
/// had pruned them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The first lost sequence number.
    pub first: u64,
    /// The last lost sequence number.
    pub last: u64,
    /// The sequence number delivery continues with (unless strict).
    pub resume_at: u64,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "lost chunk {} (fell behind)", self.first)
        } else {
            write!(f, "lost chunks {}-{} (fell behind)", self.first, self.last)
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a lookup, open or stat of a bus file failed because the name no
/// longer leads to a file. Besides `ENOENT`, network filesystems (NFS, FUSE
/// clients such as GlusterFS) answer `ESTALE` when another host replaced or
/// removed the file between the lookup and the open or `fstat`: the name
/// moved on, and looking again finds the new file or none.
pub(crate) fn is_gone(errno: Option<i32>) -> bool {
    matches!(errno, Some(nix::libc::ENOENT | nix::libc::ESTALE))
}

/// [`kind_of`] a regular file.
pub(crate) const REGULAR_FILE: &str = "regular file";

/// [`kind_of`] a directory.
pub(crate) const DIRECTORY: &str = "directory";

/// What kind of file the type bits of `mode` (`st_mode`) say, in words.
pub(crate) fn kind_of(mode: u32) -> &'static str {
    use nix::libc::{S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
    // mode_t is 16 bits on some systems.
    match mode as nix::libc::mode_t & S_IFMT {
        S_IFREG => REGULAR_FILE,
        S_IFLNK => "symbolic link",
        S_IFDIR => DIRECTORY,
        S_IFIFO => "FIFO",
        S_IFSOCK => "socket",
        _ => "device",
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| {
            if source.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::Symlink { path }
            } else {
                Error::Io {
                    action,
                    path,
                    source,
                }
            }
        }
    }

    /// Refuses a bus file that is not a regular file: only a neighbour puts
    /// anything else there, and waiting for it to become a chunk would never
    /// end.
    pub(crate) fn unless_regular(path: &Path, mode: u32) -> Result<()> {
        use nix::libc::{S_IFLNK, S_IFMT, S_IFREG};
        match mode as nix::libc::mode_t & S_IFMT {
            S_IFREG => Ok(()),
            S_IFLNK => Err(Error::Symlink {
                path: path.to_path_buf(),
            }),
            _ => Err(Error::NotRegularFile {
                path: path.to_path_buf(),
                kind: kind_of(mode),
            }),
        }
    }

    /// Whether this is a failure of a lookup, open or stat because the
    /// name no longer leads to a file (see [`is_gone`]).
    pub(crate) fn is_gone(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_gone(source.raw_os_error()))
    }

    /// The underlying I/O error kind, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. }
            | Error::NotRemovable { source, .. }
            | Error::Unsettled { source, .. }
            | Error::Input(source)
            | Error::Output(source) => Some(source.kind()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_reports_name_the_lost_numbers() {
        let range = Loss {
            first: 17,
            last: 42,
            resume_at: 43,
        };
        assert_eq!(range.to_string(), "lost chunks 17-42 (fell behind)");
        let single = Loss {
            first: 5,
            last: 5,
            resume_at: 6,
        };
        assert_eq!(single.to_string(), "lost chunk 5 (fell behind)");
    }

    #[test]
    fn stale_handles_count_as_gone_like_missing_files() {
        use nix::libc;
        assert!(is_gone(Some(libc::ENOENT)));
        assert!(is_gone(Some(libc::ESTALE)));
        assert!(!is_gone(Some(libc::EACCES)));
        assert!(!is_gone(Some(libc::EIO)));
        assert!(!is_gone(None));
    }
}

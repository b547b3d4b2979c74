//! What a person asks when a bus misbehaves: is there a chunk, how old, who
//! holds the lock, did a producer die mid-publish, how much history is kept
//! and how far behind each recorded consumer is. Collecting it takes no lock
//! and changes nothing, so it is safe to run against a live bus of any
//! implementation. Durable subscribers are listed with their position and
//! whether a process runs them.
//!
//! The snapshot serializes (serde) as the document `filebus status --json`
//! prints, whose schema docs/status-json.md describes field by field and
//! [`Status::SCHEMA_VERSION`] numbers; the tests hold the two together.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::error::{DIRECTORY, Error, REGULAR_FILE, Result, kind_of};
use crate::history::{position_of, retained_range, subscriptions};
use crate::lock::flock_users;
use crate::paths::BusPaths;

/// One bus file as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FileState {
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was last modified (zero if its time is in the future).
    #[serde(rename = "age_seconds", serialize_with = "seconds")]
    pub age: Duration,
    /// What it is: `"regular file"`, the only kind that holds a chunk, or
    /// `"directory"`, `"symbolic link"` (never followed), `"FIFO"`,
    /// `"socket"` or `"device"`, which a neighbour put in its place.
    pub kind: &'static str,
}

impl FileState {
    fn is_regular(&self) -> bool {
        self.kind == REGULAR_FILE
    }

    fn is_directory(&self) -> bool {
        self.kind == DIRECTORY
    }
}

/// A process holding or waiting for the bus lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockUser {
    /// Its process ID.
    pub pid: u32,
    /// Its command line, when it can be read.
    pub command: Option<String>,
}

/// The lock file and its users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockState {
    /// Who holds it now; `None` where the system cannot tell (no
    /// `/proc/locks`).
    #[serde(flatten, serialize_with = "holder_fields")]
    pub holder: Option<Option<LockUser>>,
    /// How many processes wait for it, where the system can tell.
    pub waiting: Option<usize>,
}

/// A history consumer's recorded position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PositionState {
    /// The position file.
    #[serde(flatten, serialize_with = "path_fields")]
    pub path: PathBuf,
    /// The last sequence number it delivered, or `None` if the file does not
    /// exist yet or could not be read (see `error`).
    pub delivered: Option<u64>,
    /// Chunks retained after that one: how far behind it is.
    pub lag: Option<u64>,
    /// Why the file could not be read (it holds no sequence number, it is a
    /// directory, ...): the one-line message of the error; `None` when it
    /// was read or does not exist.
    pub error: Option<String>,
}

/// A durable subscription (see [`crate::HistoryOptions::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SubscriberState {
    /// Its name.
    pub name: String,
    /// The last sequence number it delivered (for one that delivered
    /// nothing yet, the one before its start); `None` if its record is
    /// missing or could not be read (see `error`).
    pub delivered: Option<u64>,
    /// Chunks retained after that one: how far behind it is.
    pub lag: Option<u64>,
    /// The process running it; `None` when none does (or the system does
    /// not tell: no `/proc/locks`).
    pub pid: Option<u32>,
    /// Its next chunk is no longer retained: it lost chunks, and producers
    /// do not wait for it until it has caught up.
    pub untethered: bool,
    /// Why its record could not be read, as for [`PositionState::error`].
    pub error: Option<String>,
}

/// A snapshot of a bus, from [`crate::Bus::status`]. It serializes as the
/// document of `filebus status --json` (docs/status-json.md): for instance
/// `serde_json::to_string(&status)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// Serialized as `"version"`: [`Status::SCHEMA_VERSION`].
    version: SchemaVersion,
    /// The data file `F`.
    #[serde(flatten, serialize_with = "path_fields")]
    pub path: PathBuf,
    /// `F`: the chunk waiting to be consumed (lossless) or the latest one.
    pub data: Option<FileState>,
    /// `F.lock`, if it exists.
    pub lock: Option<LockState>,
    /// A leftover `F.__new__`: a producer died while publishing (or is
    /// publishing at this instant).
    pub staging: Option<FileState>,
    /// The oldest and newest retained sequence numbers in `F.history/`:
    /// of the entries that are regular files, the only ones that are
    /// chunks.
    #[serde(serialize_with = "range")]
    pub history: Option<(u64, u64)>,
    /// The position files asked about.
    pub positions: Vec<PositionState>,
    /// The durable subscriptions, by name.
    pub subscribers: Vec<SubscriberState>,
}

/// What is at `path`, found by `lstat`: nothing there is opened (a FIFO
/// would block, a device could be read forever) or followed.
fn file_state(path: &Path) -> Result<Option<FileState>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(FileState {
            kind: kind_of(meta.mode()),
            size: meta.size(),
            age: meta
                .modified()
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path)(e)),
    }
}

fn lock_user(pid: u32) -> LockUser {
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    LockUser { pid, command }
}

impl Status {
    /// The version of the schema of the serialized document (its
    /// `"version"` field). It grows when a field changes meaning or goes;
    /// new fields may appear within a version.
    pub const SCHEMA_VERSION: u32 = 2;

    /// Why each position file or subscriber's record that could not be
    /// read was not, in the order printed. The rest of the bus is described
    /// all the same; `filebus status` exits 1 when there is any.
    pub fn errors(&self) -> impl Iterator<Item = &str> {
        self.positions
            .iter()
            .filter_map(|p| p.error.as_deref())
            .chain(self.subscribers.iter().filter_map(|s| s.error.as_deref()))
    }

    pub(crate) fn collect(paths: &BusPaths, position_files: &[PathBuf]) -> Result<Status> {
        let lock = match std::fs::symlink_metadata(paths.lock()) {
            Ok(meta) => Some(match flock_users(meta.dev(), meta.ino()) {
                Some(users) => LockState {
                    holder: Some(users.holder.map(lock_user)),
                    waiting: Some(users.waiting),
                },
                None => LockState {
                    holder: None,
                    waiting: None,
                },
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("stat", paths.lock())(e)),
        };
        let history = retained_range(paths)?;
        let positions = position_files
            .iter()
            .map(|path| {
                let (delivered, error) = split(position_of(path));
                PositionState {
                    path: path.clone(),
                    delivered,
                    lag: lag(delivered, history),
                    error,
                }
            })
            .collect();
        let subscribers = subscriptions(paths)?
            .into_iter()
            .map(|recorded| {
                let (delivered, error) = split(recorded.delivered);
                SubscriberState {
                    lag: lag(delivered, history),
                    untethered: match (delivered, history) {
                        (Some(at), Some((oldest, _))) => at.saturating_add(1) < oldest,
                        _ => false,
                    },
                    name: recorded.name,
                    delivered,
                    pid: recorded.pid,
                    error,
                }
            })
            .collect();
        Ok(Status {
            version: SchemaVersion,
            path: paths.data().to_path_buf(),
            data: file_state(paths.data())?,
            lock,
            staging: file_state(paths.staging())?,
            history,
            positions,
            subscribers,
        })
    }
}

/// A recorded position, or the message of the error that kept it from
/// being read: one bad file is flagged on its own line rather than hiding
/// the whole bus.
fn split(read: Result<Option<u64>>) -> (Option<u64>, Option<String>) {
    match read {
        Ok(delivered) => (delivered, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// How far behind the newest retained chunk a consumer that delivered `at`
/// is.
fn lag(at: Option<u64>, history: Option<(u64, u64)>) -> Option<u64> {
    Some(history?.1.saturating_sub(at?))
}

/// The `"version"` field, the same in every document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u32(Status::SCHEMA_VERSION)
    }
}

/// A path as two fields: `path`, a string (exact when the path is valid
/// UTF-8, else with U+FFFD in place of the bytes that are not), and
/// `path_hex`, `null` when `path` is exact, else the path's bytes in
/// hexadecimal, so that no path is lost yet the usual case reads as a plain
/// string.
fn path_fields<S: Serializer>(path: &Path, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct PathFields<'a> {
        path: Cow<'a, str>,
        path_hex: Option<String>,
    }
    let bytes = path.as_os_str().as_bytes();
    let path_hex = std::str::from_utf8(bytes).is_err().then(|| {
        bytes.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    });
    PathFields {
        path: path.to_string_lossy(),
        path_hex,
    }
    .serialize(serializer)
}

/// The lock's holder as two fields: `state` (`unknown`, `free` or `held`)
/// and `holder` (`null` unless held), so that each field has one type.
fn holder_fields<S: Serializer>(
    holder: &Option<Option<LockUser>>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Unknown,
        Free,
        Held,
    }
    #[derive(Serialize)]
    struct HolderFields<'a> {
        state: State,
        holder: Option<&'a LockUser>,
    }
    let (state, holder) = match holder {
        None => (State::Unknown, None),
        Some(None) => (State::Free, None),
        Some(Some(user)) => (State::Held, Some(user)),
    };
    HolderFields { state, holder }.serialize(serializer)
}

/// The retained range as `{"oldest": N, "newest": N}`, or `null`.
fn range<S: Serializer>(
    range: &Option<(u64, u64)>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Range {
        oldest: u64,
        newest: u64,
    }
    range
        .map(|(oldest, newest)| Range { oldest, newest })
        .serialize(serializer)
}

/// A duration in seconds, to the millisecond.
fn seconds<S: Serializer>(d: &Duration, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_millis() as f64 / 1000.0)
}

fn age(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bus      {}", self.path.display())?;
        match &self.data {
            // What a producer does to it: a rename replaces anything but a
            // directory.
            Some(d) if d.is_directory() => writeln!(
                f,
                "data     a directory, not a regular file: producers and consumers refuse \
                 the bus until it is removed"
            )?,
            Some(d) if !d.is_regular() => writeln!(
                f,
                "data     a {}, not a regular file: consumers refuse it until a producer \
                 replaces it",
                d.kind
            )?,
            Some(d) if d.size == 0 => writeln!(
                f,
                "data     end-of-stream marker, written {} ago",
                age(d.age)
            )?,
            Some(d) => writeln!(f, "data     {} bytes, written {} ago", d.size, age(d.age))?,
            None => writeln!(f, "data     none (nothing published yet, or consumed)")?,
        }
        match &self.lock {
            None => writeln!(f, "lock     no lock file yet")?,
            Some(LockState { holder: None, .. }) => {
                writeln!(f, "lock     holder unknown (no /proc/locks)")?
            }
            Some(LockState {
                holder: Some(holder),
                waiting,
            }) => {
                match holder {
                    None => write!(f, "lock     free")?,
                    Some(user) => {
                        write!(f, "lock     held by PID {}", user.pid)?;
                        if let Some(command) = &user.command {
                            write!(f, " ({command})")?;
                        }
                    }
                }
                match waiting {
                    Some(n) if *n > 0 => writeln!(f, ", {n} waiting")?,
                    _ => writeln!(f)?,
                }
            }
        }
        match &self.staging {
            // A producer removes what is there, which fails on a directory.
            Some(s) if s.is_directory() => writeln!(
                f,
                "staging  {}.__new__ is a directory, not a regular file: producers cannot \
                 publish until it is removed",
                self.path.display()
            )?,
            Some(s) if !s.is_regular() => writeln!(
                f,
                "staging  {}.__new__ is a {}, not a regular file: the next producer removes it",
                self.path.display(),
                s.kind
            )?,
            Some(s) => writeln!(
                f,
                "staging  leftover {}.__new__ ({} bytes, {} old): a producer died mid-publish; \
                 the next producer removes it",
                self.path.display(),
                s.size,
                age(s.age)
            )?,
            None => writeln!(f, "staging  clean")?,
        }
        match self.history {
            Some((oldest, newest)) => writeln!(
                f,
                "history  chunks {oldest}-{newest} retained ({})",
                newest - oldest + 1
            )?,
            None => writeln!(f, "history  none")?,
        }
        for p in &self.positions {
            if let Some(error) = &p.error {
                writeln!(f, "position {}: not read: {error}", p.path.display())?;
                continue;
            }
            match (p.delivered, p.lag) {
                (None, _) => writeln!(f, "position {}: not written yet", p.path.display())?,
                (Some(at), Some(lag)) => writeln!(
                    f,
                    "position {}: delivered {at}, {lag} chunk{} behind",
                    p.path.display(),
                    if lag == 1 { "" } else { "s" }
                )?,
                (Some(at), None) => writeln!(
                    f,
                    "position {}: delivered {at}, no history to compare",
                    p.path.display()
                )?,
            }
        }
        for sub in &self.subscribers {
            write!(f, "subscriber {}: ", sub.name)?;
            match (&sub.error, sub.delivered, sub.lag) {
                (Some(error), ..) => write!(f, "not read: {error}")?,
                (None, None, _) => write!(f, "no record")?,
                (None, Some(at), Some(lag)) => write!(
                    f,
                    "delivered {at}, {lag} chunk{} behind",
                    if lag == 1 { "" } else { "s" }
                )?,
                (None, Some(at), None) => write!(f, "delivered {at}")?,
            }
            match sub.pid {
                Some(pid) => write!(f, ", running (PID {pid})")?,
                None => write!(f, ", not running")?,
            }
            if sub.untethered {
                write!(
                    f,
                    ", untethered (lost chunks; tethered again once caught up)"
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_json(holder: Option<Option<LockUser>>, waiting: Option<usize>) -> String {
        serde_json::to_string(&LockState { holder, waiting }).unwrap()
    }

    #[test]
    fn the_lock_state_is_named_and_the_holder_is_an_object_or_null() {
        assert_eq!(
            lock_json(None, None),
            r#"{"state":"unknown","holder":null,"waiting":null}"#
        );
        assert_eq!(
            lock_json(Some(None), Some(0)),
            r#"{"state":"free","holder":null,"waiting":0}"#
        );
        let user = LockUser {
            pid: 7,
            command: None,
        };
        assert_eq!(
            lock_json(Some(Some(user)), Some(2)),
            r#"{"state":"held","holder":{"pid":7,"command":null},"waiting":2}"#
        );
    }

    #[test]
    fn a_path_has_hex_only_when_not_utf8() {
        let json = |bytes: &[u8]| {
            let position = PositionState {
                path: PathBuf::from(std::ffi::OsStr::from_bytes(bytes)),
                delivered: None,
                lag: None,
                error: None,
            };
            serde_json::to_string(&position).unwrap()
        };
        assert_eq!(
            json(b"a\n\"\xc3\xa9"),
            r#"{"path":"a\n\"é","path_hex":null,"delivered":null,"lag":null,"error":null}"#
        );
        assert_eq!(
            json(b"a\xff"),
            r#"{"path":"a�","path_hex":"61ff","delivered":null,"lag":null,"error":null}"#
        );
    }
}

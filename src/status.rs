//! What a person asks when a bus misbehaves: is there a chunk, how old, who
//! holds the lock, did a producer die mid-publish, how much history is kept
//! and how far behind each recorded consumer is. Collecting it takes no lock
//! and changes nothing, so it is safe to run against a live bus of any
//! implementation. Durable subscribers are listed with their position and
//! whether a process runs them.

use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::history::{position_of, retained_range, subscriptions};
use crate::lock::flock_users;
use crate::paths::BusPaths;

/// One bus file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileState {
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was last modified (zero if its time is in the future).
    pub age: Duration,
}

/// A process holding or waiting for the bus lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockUser {
    /// Its process ID.
    pub pid: u32,
    /// Its command line, when it can be read.
    pub command: Option<String>,
}

/// The lock file and its users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockState {
    /// Who holds it now; `None` where the system cannot tell (no
    /// `/proc/locks`).
    pub holder: Option<Option<LockUser>>,
    /// How many processes wait for it, where the system can tell.
    pub waiting: Option<usize>,
}

/// A history consumer's recorded position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PositionState {
    /// The position file.
    pub path: PathBuf,
    /// The last sequence number it delivered, or `None` if the file does not
    /// exist yet.
    pub delivered: Option<u64>,
    /// Chunks retained after that one: how far behind it is.
    pub lag: Option<u64>,
}

/// A durable subscription (see [`crate::HistoryOptions::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberState {
    /// Its name.
    pub name: String,
    /// The last sequence number it delivered (for one that delivered
    /// nothing yet, the one before its start); `None` if its record is
    /// missing.
    pub delivered: Option<u64>,
    /// Chunks retained after that one: how far behind it is.
    pub lag: Option<u64>,
    /// The process running it; `None` when none does (or the system does
    /// not tell: no `/proc/locks`).
    pub pid: Option<u32>,
    /// Its next chunk is no longer retained: it lost chunks, and producers
    /// do not wait for it until it has caught up.
    pub untethered: bool,
}

/// A snapshot of a bus, from [`crate::Bus::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The data file `F`.
    pub path: PathBuf,
    /// `F`: the chunk waiting to be consumed (lossless) or the latest one.
    pub data: Option<FileState>,
    /// `F.lock`, if it exists.
    pub lock: Option<LockState>,
    /// A leftover `F.__new__`: a producer died while publishing (or is
    /// publishing at this instant).
    pub staging: Option<FileState>,
    /// The oldest and newest retained sequence numbers in `F.history/`.
    pub history: Option<(u64, u64)>,
    /// The position files asked about.
    pub positions: Vec<PositionState>,
    /// The durable subscriptions, by name.
    pub subscribers: Vec<SubscriberState>,
}

fn file_state(path: &Path) -> Result<Option<FileState>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(FileState {
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
                let delivered = position_of(path)?;
                let lag = match (delivered, history) {
                    (Some(at), Some((_, newest))) => Some(newest.saturating_sub(at)),
                    _ => None,
                };
                Ok(PositionState {
                    path: path.clone(),
                    delivered,
                    lag,
                })
            })
            .collect::<Result<_>>()?;
        let subscribers = subscriptions(paths)?
            .into_iter()
            .map(|recorded| SubscriberState {
                lag: match (recorded.delivered, history) {
                    (Some(at), Some((_, newest))) => Some(newest.saturating_sub(at)),
                    _ => None,
                },
                untethered: match (recorded.delivered, history) {
                    (Some(at), Some((oldest, _))) => at.saturating_add(1) < oldest,
                    _ => false,
                },
                name: recorded.name,
                delivered: recorded.delivered,
                pid: recorded.pid,
            })
            .collect();
        Ok(Status {
            path: paths.data().to_path_buf(),
            data: file_state(paths.data())?,
            lock,
            staging: file_state(paths.staging())?,
            history,
            positions,
            subscribers,
        })
    }

    /// The snapshot as one JSON object, for scripts.
    pub fn to_json(&self) -> String {
        let file = |f: &Option<FileState>| match f {
            Some(f) => format!(
                "{{\"size\":{},\"age_seconds\":{:.3}}}",
                f.size,
                f.age.as_secs_f64()
            ),
            None => "null".into(),
        };
        let opt = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"path\":{},\"data\":{},\"staging\":{},",
            json_string(&self.path.to_string_lossy()),
            file(&self.data),
            file(&self.staging)
        );
        let lock = match &self.lock {
            None => "null".to_string(),
            Some(lock) => {
                let holder = match &lock.holder {
                    None => "null".to_string(),
                    Some(None) => "\"free\"".to_string(),
                    Some(Some(user)) => format!(
                        "{{\"pid\":{},\"command\":{}}}",
                        user.pid,
                        user.command.as_deref().map_or("null".into(), json_string)
                    ),
                };
                format!(
                    "{{\"holder\":{holder},\"waiting\":{}}}",
                    opt(lock.waiting.map(|w| w as u64))
                )
            }
        };
        let _ = write!(out, "\"lock\":{lock},\"history\":");
        match self.history {
            Some((oldest, newest)) => {
                let _ = write!(out, "{{\"oldest\":{oldest},\"newest\":{newest}}}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"positions\":[");
        for (i, p) in self.positions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"path\":{},\"delivered\":{},\"lag\":{}}}",
                json_string(&p.path.to_string_lossy()),
                opt(p.delivered),
                opt(p.lag)
            );
        }
        out.push_str("],\"subscribers\":[");
        for (i, sub) in self.subscribers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"name\":{},\"delivered\":{},\"lag\":{},\"pid\":{},\"untethered\":{}}}",
                json_string(&sub.name),
                opt(sub.delivered),
                opt(sub.lag),
                opt(sub.pid.map(u64::from)),
                sub.untethered
            );
        }
        out.push_str("]}");
        out
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
            match (sub.delivered, sub.lag) {
                (None, _) => write!(f, "no record")?,
                (Some(at), Some(lag)) => write!(
                    f,
                    "delivered {at}, {lag} chunk{} behind",
                    if lag == 1 { "" } else { "s" }
                )?,
                (Some(at), None) => write!(f, "delivered {at}")?,
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

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

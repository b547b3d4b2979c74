//! Retained history: lossless multicast on top of the lossy bus.
//!
//! The base protocol makes users choose between one lossless consumer and
//! many lossy ones. A producer with retention also keeps the newest `N`
//! chunks as hard links in `F.history/`, named by sequence number (20
//! zero-padded digits, so names sort in publication order), and prunes older
//! ones, all under the bus lock. History consumers then read
//! `F.history/<seq>`, `<seq + 1>`, ... without any lock (entries are never
//! modified), so every one of them gets every chunk, in order, for as long as
//! it keeps within `N`; when it falls further behind it learns exactly which
//! sequence numbers it lost. Peers that know nothing of this keep using `F`.
//!
//! Sequence numbers live only in the directory: the next one is the highest
//! entry plus one, which is why a producer keeps at least the newest entry
//! (`N >= 1`) and numbering continues across producers and restarts.
//!
//! Entries are added in increasing order and removed oldest first, so the
//! retained entries always form one contiguous range. Both sides rely on it:
//! a producer finds the newest entry by probing instead of listing, and a
//! consumer concludes it lost chunk `s` when `s` is missing while a newer
//! entry exists (`s` can no longer appear, since it is linked before any
//! newer one). An entry is published only once `F.__new__` no longer names
//! it: a producer whose rename to `F` fails removes it again, under the lock,
//! so consumers wait for the rename rather than read it before.
//!
//! Producers that know nothing of the history (peers, or ours without
//! retention) may still publish on the bus: their chunks appear only as `F`.
//! A history consumer therefore also looks at `F` whenever it has delivered
//! every entry there is, and delivers a chunk in `F` that has no history
//! entry as unsequenced, in its place between the numbered ones. On a bus without
//! history it does the same for every chunk, as a lossy consumer, until
//! `F.history/` appears.
//!
//! Durable subscribers (`subscriber`) are history consumers whose position
//! the bus keeps, in `F.history/subscribers/`; a producer with retention
//! waits for them rather than prune a chunk they still need (`tether`), so
//! that they get every chunk on bounded disk, unless one of them holds the
//! producer back for too long.
//!
//! One concept a file: `name` (entry names), `dir` (the
//! directory through one descriptor, listing and probing), `retention` (the
//! producer's side), `tether` (the producer waiting for subscribers),
//! `position` (position files and subscribers' records), `subscriber`
//! (registering, running and removing a subscription), `consumer` (the
//! history consumer's state machine).

mod consumer;
mod dir;
mod name;
mod position;
mod retention;
mod subscriber;
mod tether;

use std::path::Path;

use crate::error::Result;
use crate::paths::BusPaths;

pub use consumer::{HistoryConsumer, HistoryEvent};
pub(crate) use retention::Retention;
pub(crate) use subscriber::{subscriptions, unsubscribe};

use dir::HistoryDir;
use position::PositionFile;

/// The oldest and newest retained chunks of the bus (entries that are
/// regular files), or `None` without history; for [`crate::Status`], which
/// must not lock or change anything.
pub(crate) fn retained_range(paths: &BusPaths) -> Result<Option<(u64, u64)>> {
    match HistoryDir::open(paths.history())? {
        Some(dir) => dir.chunk_range(),
        None => Ok(None),
    }
}

/// The sequence number recorded in a position file, or `None` when the
/// file does not exist.
pub(crate) fn position_of(path: &Path) -> Result<Option<u64>> {
    PositionFile::new(path.to_path_buf()).read()
}

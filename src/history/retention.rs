//! The producer's side of the history: numbering, linking and pruning, all
//! under the bus lock, so that entries appear in order and disappear oldest
//! first; and, before the lock is taken, waiting for durable subscribers
//! that still need what pruning would remove (see `tether`).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dir::HistoryDir;
use super::tether::Tether;
use crate::error::Result;
use crate::options::BusOptions;
use crate::paths::BusPaths;
use crate::stop::Stop;

/// The producer's side of the history: numbering, linking and pruning.
/// [`Retention::hold_back`] is called before the bus lock is taken, every
/// other method with the bus lock held.
#[derive(Debug)]
pub(crate) struct Retention {
    path: PathBuf,
    keep: u64,
    dir: Option<HistoryDir>,
    /// The number the next chunk gets, as far as this producer knows.
    next: Option<u64>,
    /// The oldest entry that may still exist.
    oldest: u64,
    /// Waiting for subscribers; `None` when the untether time is zero.
    tether: Option<Tether>,
    /// The newest entry the next prune may remove, as the tether allowed.
    prunable: u64,
}

impl Retention {
    /// Keeps the newest `keep` chunks, and waits for a subscriber that
    /// still needs an older one for at most `untether_after` (zero: never).
    pub(crate) fn new(
        paths: &BusPaths,
        options: &BusOptions,
        keep: NonZeroU64,
        untether_after: Duration,
    ) -> Self {
        Retention {
            path: paths.history().to_path_buf(),
            keep: keep.get(),
            dir: None,
            next: None,
            oldest: 1,
            tether: (!untether_after.is_zero())
                .then(|| Tether::new(keep.get(), untether_after, options)),
            prunable: u64::MAX,
        }
    }

    /// Makes `stop` end the waits for subscribers too.
    pub(crate) fn share_stop(&mut self, stop: Stop) {
        if let Some(tether) = &mut self.tether {
            tether.share_stop(stop);
        }
    }

    /// Before the bus lock is taken to publish a chunk: waits while a
    /// tethered subscriber still needs a chunk that publishing it would
    /// prune (back pressure), for at most the untether time at a time.
    pub(crate) fn hold_back(&mut self) -> Result<()> {
        self.prunable = u64::MAX;
        let Some(tether) = &mut self.tether else {
            return Ok(());
        };
        let dir = match &mut self.dir {
            Some(dir) if dir.still_named()? => dir,
            slot => {
                self.next = None;
                *slot = HistoryDir::open(&self.path)?;
                match slot {
                    Some(dir) => dir,
                    // No history, so no subscribers yet; one that registers
                    // before the prune is noticed there.
                    None => {
                        tether.no_history();
                        return Ok(());
                    }
                }
            }
        };
        let next = match self.next {
            Some(next) => next,
            None => dir
                .scan(u64::MAX)?
                .range
                .map_or(1, |(_, newest)| newest + 1),
        };
        self.prunable = tether.hold(dir, next)?;
        Ok(())
    }

    /// Links the staged chunk into the history under the next sequence
    /// number, which it returns. The staged chunk is not renamed to `F` yet.
    pub(crate) fn link(&mut self, staging: &Path) -> Result<u64> {
        let dir = match &mut self.dir {
            Some(dir) if dir.still_named()? => dir,
            slot => {
                // A new or replaced directory: its numbering is unknown,
                // and its subscribers were not looked at.
                self.next = None;
                if self.tether.is_some() {
                    self.prunable = 0;
                }
                slot.insert(HistoryDir::create(&self.path)?)
            }
        };
        loop {
            // Our own last entry still being there means nobody pruned past
            // it; the link below fails if anyone published after it.
            let seq = match self.next {
                Some(next) if next == 1 || dir.has(next - 1)? => next,
                _ => {
                    let scan = dir.scan(u64::MAX)?;
                    let (oldest, newest) = scan.range.unwrap_or((1, 0));
                    if scan.range.is_none() {
                        log::debug!("{} has no entries; numbering from 1", dir.path.display());
                    }
                    self.oldest = oldest;
                    newest + 1
                }
            };
            if dir.link(staging, seq)? {
                self.next = Some(seq + 1);
                return Ok(seq);
            }
            log::debug!("chunk {seq} was published by another producer");
            self.next = Some(dir.newest_from(seq)? + 1);
        }
    }

    /// Takes back entry `seq`, just linked by [`Retention::link`], whose
    /// rename to `F` failed: it was never published (history consumers
    /// deliver no entry that `F.__new__` still names), so its number goes
    /// to the next chunk. `false` when it could not be removed (said on
    /// standard error); it is then left to the next publication, as after a
    /// producer killed between link and rename.
    pub(crate) fn withdraw(&mut self, seq: u64) -> bool {
        let Some(dir) = &self.dir else {
            return true;
        };
        match dir.remove(seq) {
            Ok(_) => {
                self.next = Some(seq);
                true
            }
            Err(e) => {
                log::warn!("{e}; chunk {seq} stays in the history");
                false
            }
        }
    }

    /// Removes the entries older than the newest `N`, after publishing,
    /// but none that [`Retention::hold_back`] did not clear.
    pub(crate) fn prune(&mut self) -> Result<()> {
        let (Some(dir), Some(next)) = (&self.dir, self.next) else {
            return Ok(());
        };
        if let Some(tether) = &self.tether
            && !tether.unchanged(dir)?
        {
            log::debug!("a subscriber registered meanwhile; pruning after the next chunk");
            return Ok(());
        }
        let newest = next - 1;
        let Some(cutoff) = newest.checked_sub(self.keep).map(|c| c.min(self.prunable)) else {
            return Ok(());
        };
        while self.oldest <= cutoff {
            if dir.remove(self.oldest)? {
                self.oldest += 1;
                continue;
            }
            // Not there: the next entry may be far ahead (one made by hand
            // or planted, numbered a billion on): the listing says where,
            // rather than a removal of each number in between, under the
            // lock.
            self.oldest = match dir.scan(self.oldest)?.first_after {
                Some(seq) => seq.min(cutoff + 1),
                None => cutoff + 1,
            };
        }
        Ok(())
    }
}

//! The producer's side of the history: numbering, linking and pruning, all
//! under the bus lock, so that entries appear in order and disappear oldest
//! first.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use super::dir::HistoryDir;
use crate::error::Result;
use crate::paths::BusPaths;

/// The producer's side of the history: numbering, linking and pruning.
/// Every method must be called with the bus lock held.
#[derive(Debug)]
pub(crate) struct Retention {
    path: PathBuf,
    keep: u64,
    dir: Option<HistoryDir>,
    /// The number the next chunk gets, as far as this producer knows.
    next: Option<u64>,
    /// The oldest entry that may still exist.
    oldest: u64,
}

impl Retention {
    pub(crate) fn new(paths: &BusPaths, keep: NonZeroU64) -> Self {
        Retention {
            path: paths.history().to_path_buf(),
            keep: keep.get(),
            dir: None,
            next: None,
            oldest: 1,
        }
    }

    /// Links the staged chunk into the history under the next sequence
    /// number, which it returns. The staged chunk is not renamed to `F` yet.
    pub(crate) fn link(&mut self, staging: &Path) -> Result<u64> {
        let dir = match &mut self.dir {
            Some(dir) if dir.still_named()? => dir,
            slot => {
                // A new or replaced directory: its numbering is unknown.
                self.next = None;
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

    /// Removes the entries older than the newest `N`, after publishing.
    pub(crate) fn prune(&mut self) -> Result<()> {
        let (Some(dir), Some(next)) = (&self.dir, self.next) else {
            return Ok(());
        };
        let newest = next - 1;
        while self.oldest.saturating_add(self.keep) <= newest {
            dir.remove(self.oldest)?;
            self.oldest += 1;
        }
        Ok(())
    }
}

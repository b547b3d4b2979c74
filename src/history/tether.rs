//! The producer's side of durable subscriptions: a producer with retention
//! does not prune a chunk that a subscriber still needs; it waits for it
//! instead (back pressure), without the bus lock, and for at most the
//! untether time per subscriber.
//!
//! The rule uses nothing but what is on disk, so it holds across producer
//! restarts and between producers: a subscriber whose record says `p` needs
//! entry `p + 1`. If that entry exists and the next publication would prune
//! it, the subscriber is tethered and the producer waits. If it no longer
//! exists, the subscriber has already lost chunks: it is untethered, and it
//! will get the exact loss report, resume at the oldest entry and, once its
//! record shows it there, be tethered again. A subscriber that makes no
//! progress for the untether time (stopped, stuck, or dead: a record whose
//! process is gone holds the producer like a slow one, so that a quick
//! restart loses nothing) is let go: the producer prunes anyway, with one
//! warning line.
//!
//! The records are read before the bus lock is taken, and pruning happens
//! under it. In between, records only advance, which is safe, except for a
//! new subscription, which may start below every position read; new
//! subscriptions are registered under the bus lock and counted, so the
//! producer prunes nothing when the count changed in between (the next
//! publication looks again).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::dir::HistoryDir;
use super::subscriber::{SUBSCRIBERS, SubscribersDir};
use crate::error::{Error, Result};
use crate::options::BusOptions;
use crate::stop::Stop;
use crate::watch::{Awaited, Watcher};

/// What the producer last knew of one subscriber.
#[derive(Debug, Default)]
struct Known {
    /// Its recorded position when last read. Records only advance (but
    /// for a new registration, see [`Tether::generation`]), so one known to
    /// be past the chunks to prune need not be read again.
    position: Option<u64>,
    /// The position at which it started holding the producer back, and
    /// when.
    held: Option<(u64, Instant)>,
    /// The position at which it was untethered, so that it is reported once.
    released: Option<u64>,
}

/// The producer's tether to the subscribers of one history directory.
#[derive(Debug)]
pub(super) struct Tether {
    keep: u64,
    untether_after: Duration,
    options: BusOptions,
    watcher: Option<Watcher>,
    stop: Option<Stop>,
    known: HashMap<String, Known>,
    /// The subscribers' directory as opened by the last [`Tether::hold`];
    /// `None` when it did not exist.
    looked: Option<SubscribersDir>,
    /// Its registration count when the records were last read.
    generation: Option<u64>,
}

impl Tether {
    pub(super) fn new(keep: u64, untether_after: Duration, options: &BusOptions) -> Self {
        Tether {
            keep,
            untether_after,
            options: options.clone(),
            watcher: None,
            stop: None,
            known: HashMap::new(),
            looked: None,
            generation: None,
        }
    }

    /// Makes `stop` end the waits for subscribers too.
    pub(super) fn share_stop(&mut self, stop: Stop) {
        if let Some(watcher) = &mut self.watcher {
            watcher.share_stop(stop.clone());
        }
        self.stop = Some(stop);
    }

    /// Before the bus lock is taken for publishing chunk `next` (as far as
    /// this producer knows): waits while a tethered subscriber still needs
    /// an entry that publishing it would prune. Returns the newest entry
    /// that may be pruned: none that a subscriber seen here still needs,
    /// unless it was untethered.
    pub(super) fn hold(&mut self, history: &HistoryDir, next: u64) -> Result<u64> {
        let limit = next.saturating_sub(self.keep);
        loop {
            if let Some(watcher) = &mut self.watcher {
                watcher.arm();
            }
            self.looked = None;
            let Some(subscribers) = SubscribersDir::open(history)? else {
                return Ok(limit);
            };
            let generation = subscribers.generation()?;
            let names = subscribers.names()?;
            if self.generation != Some(generation) {
                // A new subscription may be below what was known.
                for known in self.known.values_mut() {
                    known.position = None;
                }
                self.generation = Some(generation);
            }
            self.known.retain(|name, _| names.contains(name));
            let now = Instant::now();
            let mut wake: Option<Instant> = None;
            for name in names {
                let known = self.known.entry(name.clone()).or_default();
                if known.position.is_some_and(|p| p >= limit) {
                    continue;
                }
                let position = match subscribers.record(&name).read() {
                    Ok(Some(position)) => position,
                    Ok(None) => continue,
                    // A record that cannot be read tethers nothing: a
                    // neighbour's plant must not stop the producer.
                    Err(e) => {
                        log::debug!("ignoring subscriber {name}: {e}");
                        continue;
                    }
                };
                known.position = Some(position);
                let needed = position.saturating_add(1);
                if needed > limit || !history.has(needed)? {
                    known.held = None;
                    continue;
                }
                let since = match known.held {
                    Some((at, since)) if at == position => since,
                    _ => {
                        log::debug!("subscriber {name} still needs chunk {needed}; waiting for it");
                        known.held = Some((position, now));
                        now
                    }
                };
                match since.checked_add(self.untether_after) {
                    Some(until) if until <= now => {
                        // How many it misses depends on when it reads
                        // again: its loss report will say.
                        if known.released != Some(position) {
                            known.released = Some(position);
                            log::warn!(
                                "subscriber {name} of {} made no progress for {:?} at chunk \
                                 {position}; untethered: pruning chunks from {needed} on \
                                 without it (it will report which it lost)",
                                history.path.display(),
                                self.untether_after
                            );
                        }
                    }
                    until => {
                        // No representable end: it never gives way.
                        let until = until.unwrap_or(now + Duration::from_secs(86400));
                        wake = Some(wake.map_or(until, |wake| wake.min(until)));
                    }
                }
            }
            self.looked = Some(subscribers);
            match wake {
                Some(wake) => self.wait(history, wake)?,
                None => return Ok(limit),
            }
        }
    }

    /// Waits for a record to change, or until `wake`.
    fn wait(&mut self, history: &HistoryDir, wake: Instant) -> Result<()> {
        let Some(watcher) = &mut self.watcher else {
            // Made at the first wait, so that a producer never held back
            // takes no inotify instance. It was not armed when the records
            // were read: return to read them again, armed.
            let dir = history.path.join(SUBSCRIBERS);
            let mut watcher = Watcher::on_directory(dir, &self.options, Awaited::Records);
            if let Some(stop) = &self.stop {
                watcher.share_stop(stop.clone());
            }
            self.watcher = Some(watcher);
            return Ok(());
        };
        let untether_after = self.untether_after;
        watcher.waiting_for(|| {
            format!(
                "waiting for subscribers of {} to deliver a chunk before it is pruned (at most \
                 {untether_after:?} without progress)",
                history.path.display()
            )
        });
        watcher.set_deadline(Some(wake));
        let waited = watcher.wait();
        watcher.set_deadline(None);
        match waited {
            Ok(()) | Err(Error::TimedOut) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Notes that there was no history to look at before the lock.
    pub(super) fn no_history(&mut self) {
        self.looked = None;
    }

    /// Under the bus lock, before pruning: whether no subscription was
    /// registered since [`Tether::hold`] read the records.
    pub(super) fn unchanged(&self, history: &HistoryDir) -> Result<bool> {
        match &self.looked {
            Some(subscribers) => Ok(Some(subscribers.generation()?) == self.generation),
            None => Ok(!SubscribersDir::exists_in(history)?),
        }
    }
}

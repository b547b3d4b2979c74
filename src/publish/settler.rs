//! Putting off the rename of `F` behind a program that publishes through
//! the API, as a stream's producer does (see [`super::SETTLE_BOUND`]).
//!
//! With a shared-memory log, readers of this crate are woken by the log's
//! doorbell; `F` is for everyone else, who were only ever promised the
//! latest chunk. Renaming `F` before `publish` returns puts a few hundred
//! µs of file work (on a small machine) beside the readers the doorbell
//! just woke, and it is most of what a publication costs the caller. A
//! stream's producer puts it off while it waits for input; a program that
//! publishes through the API may never call again, so a thread of the
//! producer's own keeps the bound: it renames the newest chunk once the
//! oldest chunk not yet in `F` went into the log [`super::SETTLE_BOUND`]
//! ago, and at once when the producer is finished or dropped.
//!
//! The thread takes the bus lock like any other producer (a lock of its
//! own: `flock(2)` serialises it with the producer it serves). The
//! producer hands it the chunk while it holds the bus lock, so once the
//! thread holds the lock, what it was handed is the producer's newest
//! record or nothing. It sleeps on an alarm ([`sys::Alarm`]) that the
//! producer sets when it hands over a chunk: handing over wakes nobody,
//! where a notified thread would compete, on a small machine, with the
//! readers the doorbell just woke.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Deferred, LogSide, SETTLE_BOUND, acquire, settle_if_newest};
use crate::error::{Error, Result};
use crate::lock::BusLock;
use crate::options::WaitPolicy;
use crate::paths::BusPaths;
use crate::sentinel::Sentinel;
use crate::shm_log::{FileId, LogWriter};
use crate::sys;

/// The thread that renames a library producer's newest chunk to `F`.
#[derive(Debug)]
pub(super) struct Settler {
    shared: Arc<Shared>,
    /// `F`, which errors name.
    data: PathBuf,
    thread: Option<JoinHandle<()>>,
    /// Where the thread started: a child made by `fork(2)` has no such
    /// thread (see [`Settler::is_ours`]).
    origin: sys::Origin,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Goes off at the deadline of the chunk handed over, or at once when
    /// the producer is finished.
    alarm: sys::Alarm,
}

#[derive(Debug, Default)]
struct State {
    /// The newest chunk, in the log, not yet in `F`.
    deferred: Option<Deferred>,
    /// Why the last rename failed, for the producer's next call.
    failed: Option<Error>,
    /// The producer is finished or dropped: rename what is left, then end.
    quit: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics with it held; a poisoned lock's state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the thread needs to rename chunks as the producer would.
struct Renamer {
    paths: BusPaths,
    lock: BusLock,
    log: Arc<LogWriter>,
    /// The producer's sentinel, told of the renames made here.
    sentinel: Option<Arc<Sentinel>>,
    spare: Option<File>,
    preallocate: bool,
}

impl Settler {
    /// Starts the thread. It renames through `log`'s bus with a lock of
    /// its own, into unnamed files made as `spare` was, and tells the
    /// producer's sentinel (beside the log) of each rename.
    pub(super) fn start(
        paths: &BusPaths,
        policy: WaitPolicy,
        (log, sentinel): (Arc<LogWriter>, Option<Arc<Sentinel>>),
        spare: Option<File>,
        preallocate: bool,
    ) -> Result<Settler> {
        let data = paths.data().to_path_buf();
        let alarm = sys::Alarm::new().map_err(Error::io("make an alarm for", &data))?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            alarm,
        });
        let mut renamer = Renamer {
            lock: BusLock::new(paths.lock().to_path_buf(), policy),
            paths: paths.clone(),
            log,
            sentinel,
            spare,
            preallocate,
        };
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("filebus-settle".into())
            .spawn(move || renamer.run(&theirs))
            .map_err(Error::io("start a thread for", &data))?;
        Ok(Settler {
            shared,
            data,
            thread: Some(thread),
            origin: sys::Origin::here(),
        })
    }

    /// Whether the thread runs in this process. In a child made by
    /// `fork(2)` (Python's multiprocessing, say) it does not: the child's
    /// producer starts its own in place of this one, whose drop touches
    /// neither the parent's thread nor its alarm.
    pub(super) fn is_ours(&self) -> bool {
        self.origin.is_here()
    }

    /// Hands over chunk `seq`, appended to the log while `F` was the file
    /// `replaces`. Called with the bus lock held, after the doorbell: the
    /// copy is off the readers' path. The deadline is kept from a chunk
    /// handed over before and not renamed yet.
    pub(super) fn defer(&self, seq: u64, replaces: Option<FileId>, chunk: &[u8]) -> Result<()> {
        let mut state = self.shared.state();
        let (deadline, mut bytes) = match state.deferred.take() {
            Some(older) => (older.deadline, older.bytes),
            None => {
                self.shared
                    .alarm
                    .set(SETTLE_BOUND)
                    .map_err(Error::io("set an alarm for", &self.data))?;
                (Instant::now() + SETTLE_BOUND, Vec::new())
            }
        };
        bytes.clear();
        bytes.extend_from_slice(chunk);
        state.deferred = Some(Deferred {
            seq,
            deadline,
            replaces,
            bytes,
        });
        Ok(())
    }

    /// Forgets the chunk handed over, if any: a newer one reaches `F`
    /// otherwise. Called with the bus lock held.
    pub(super) fn cancel(&self) {
        self.shared.state().deferred = None;
    }

    /// Why the thread's last rename failed, once.
    pub(super) fn failure(&self) -> Result<()> {
        match self.shared.state().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Renames what was handed over at once and ends the thread.
    pub(super) fn finish(mut self) -> Result<()> {
        self.stop();
        self.failure()
    }

    fn stop(&mut self) {
        if !self.is_ours() {
            // Its handle names the parent's thread. Dropping it would detach
            // whatever thread of this process took over its place (glibc
            // hands a forked-away thread's descriptor to the next thread
            // made), and that thread's join would then fail.
            std::mem::forget(self.thread.take());
            return;
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.state().quit = true;
        if self.shared.alarm.set(Duration::ZERO).is_ok() {
            let _ = thread.join();
        }
        // An alarm that cannot be set leaves the thread asleep: it goes
        // with the process, and what it was handed does not reach `F`.
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = self.failure() {
            log::info!("{e}");
        }
    }
}

impl Renamer {
    fn run(&mut self, shared: &Shared) {
        loop {
            if let Err(e) = shared.alarm.wait() {
                // Renaming at once keeps the bound.
                log::debug!("the alarm failed ({e}); renaming at once");
            }
            let state = shared.state();
            let quit = state.quit;
            if let Some(deferred) = &state.deferred {
                let left = deferred.deadline.saturating_duration_since(Instant::now());
                if !quit && !left.is_zero() && shared.alarm.set(left).is_ok() {
                    continue;
                }
            }
            drop(state);
            if let Err(e) = self.rename(shared) {
                let mut state = shared.state();
                state.failed = Some(e);
                // `F` lags: the next chunk's rename is its chance.
                state.deferred = None;
            }
            if quit {
                return;
            }
        }
    }

    /// Under the bus lock, renames to `F` the chunk handed over, unless
    /// it is no longer the newest record or `F` changed since it was
    /// appended (a newer chunk is there: `F` never goes back).
    fn rename(&mut self, shared: &Shared) -> Result<()> {
        if shared.state().deferred.is_none() {
            return Ok(());
        }
        let mut spare = match self.spare.take() {
            Some(file) => file,
            None => sys::open_unnamed(self.paths.dir())
                .and_then(|file| file.ok_or_else(|| io::Error::other("no unnamed files")))
                .map_err(Error::io("create", self.paths.staging()))?,
        };
        let held = acquire(&mut self.lock, &self.paths)?;
        let Some(deferred) = shared.state().deferred.take() else {
            self.spare = Some(spare);
            return Ok(());
        };
        let log = LogSide {
            writer: &self.log,
            sentinel: self.sentinel.as_deref(),
        };
        let Some(settled) = settle_if_newest(
            &self.paths,
            log,
            &mut spare,
            &deferred,
            &mut self.preallocate,
        ) else {
            self.spare = Some(spare);
            return Ok(());
        };
        drop(held);
        drop(spare);
        settled?;
        // The next chunk's file, made now rather than on its path.
        self.spare = sys::open_unnamed(self.paths.dir()).ok().flatten();
        Ok(())
    }
}

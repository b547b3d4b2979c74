//! Knowing, without a path lookup, that `F.lock` and `F` are what a
//! producer last saw.
//!
//! A chunk appended to the shared-memory log records which file `F` was
//! (its `replaces`, docs/PROTOCOL.md), and a bus lock just taken must still
//! be the file named `F.lock`: two `statx(2)` calls by path under the lock,
//! before the doorbell, on every publish. After an idle pause the first
//! path lookup is the dearest system call a publish makes
//! (docs/design/shared-memory-log.md, "Measured").
//!
//! The kernel queues a name's inotify event inside the system call that
//! changes the name, before it returns: a change made under the bus lock is
//! queued before that lock is released. So a producer that holds the lock
//! and finds the queue of its watch on the bus directory empty knows that
//! neither name changed since it last looked, and reading an empty queue
//! looks up no path. Changes made without the lock (a user's `rm`) are
//! queued the same way. A change to `F` sends the next publish to look at
//! it again. A change to `F.lock`, which no participant ever makes, ends
//! the watch for good: removing it is how `rm -rf` of the directory
//! begins, and a watch on a removed directory would never hear of the one
//! made in its place. So does anything that loses events: the queue
//! overflowing, the directory renamed.
//!
//! What it does not see: a directory above the bus's renamed or mounted
//! over while a producer runs (the watch follows the directory it was
//! added to; a producer already holds its log and lock descriptors across
//! that, and a new participant finds the new directory); and `F` written
//! in place, or its modification time alone set, which raise `IN_MODIFY`.
//! That event is not watched: every ring of the log's doorbell and every
//! write into an unnamed chunk file raise it too. No implementation
//! changes `F` in place (each replaces it by rename), and a reader already
//! takes an `F` changed in place after a record was appended for a chunk
//! of its own.
//!
//! It costs a producer of the log one inotify instance of the user's
//! `fs.inotify.max_user_instances` (128 by default; consumers take one
//! each); where none is to be had the producer looks by path.
//!
//! A directory that other files share (`/tmp`) would queue an event for
//! every change of theirs while the producer is idle, costing kernel memory
//! and a longer read at the next publish: the first event about a name
//! that is not the bus's own ends the watch for good, and the producer
//! looks by path from then on, as without a sentinel.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, PoisonError};

use crate::lock::Vouch;
use crate::paths::BusPaths;
use crate::shm_log::{self, FileId};
use crate::sys::{self, Events, NameEvent, Wd};

/// A watch on the bus directory's names, shared by a producer and its
/// settling thread; both use it only while holding the bus lock.
#[derive(Debug)]
pub(crate) struct Sentinel {
    state: Mutex<State>,
    paths: BusPaths,
    /// Where it was made. A child made by `fork(2)` shares the inotify
    /// descriptor, and each event is read once: a child that read the
    /// queue would hide changes from its parent. It never reads it.
    origin: sys::Origin,
}

#[derive(Debug)]
struct State {
    /// `None` once given up.
    watch: Option<(Events, Wd)>,
    /// `F.lock` named the producer's locked file when last checked (and
    /// has not changed since, or the watch would be gone).
    lock: bool,
    /// What `F` was when last looked at (`None` inside: no file), if it has
    /// not changed since.
    data: Option<Option<FileId>>,
}

impl Sentinel {
    /// A sentinel on the directory of `paths`; `None` where there are no
    /// file events (the portable path, `fs.inotify.max_user_instances`
    /// reached) or no watch to be had.
    pub(crate) fn new(paths: &BusPaths) -> Option<Sentinel> {
        let events = sys::events().ok()?;
        let wd = events.watch_names(paths.dir()).ok()?;
        Some(Sentinel {
            state: Mutex::new(State {
                watch: Some((events, wd)),
                lock: false,
                data: None,
            }),
            paths: paths.clone(),
            origin: sys::Origin::here(),
        })
    }

    /// What `F` is (see [`shm_log::current_file`]): as last seen if its
    /// name has not changed since, else looked at now. Called with the bus
    /// lock held.
    pub(crate) fn current_file(&self) -> Option<FileId> {
        let mut state = self.state();
        self.read(&mut state);
        if let Some(known) = state.data {
            return known;
        }
        // Looked at after the queue was read: a change from now on is
        // queued for the next look.
        let now = shm_log::current_file(self.paths.data());
        if state.watch.is_some() {
            state.data = Some(now);
        }
        now
    }

    /// The producer renamed the file `id` to `F` itself, with the bus lock
    /// still held: what came before is superseded, and nobody who takes the
    /// lock can have changed `F` since.
    pub(crate) fn renamed(&self, id: FileId) {
        let mut state = self.state();
        self.read(&mut state);
        if state.watch.is_some() {
            state.data = Some(Some(id));
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few flags, each write a whole value: one left by
        // a thread that panicked is as good as any.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the queued events into `state`.
    fn read(&self, state: &mut State) {
        let Some((events, wd)) = &state.watch else {
            return;
        };
        // In a child made by fork(2), dropping its copy of the descriptor
        // leaves the parent's watch as it is.
        let mut lost = !self.origin.is_here();
        let mut data_changed = false;
        if !lost {
            let name = self.paths.file_name().as_bytes();
            let lock = self.paths.lock().file_name().map(OsStr::as_bytes);
            events.drain_names(*wd, |event| match event {
                NameEvent::Changed(changed) if changed == name => data_changed = true,
                // The bus's own files but its lock: `F.__new__`, `F.shm`,
                // `F.history`...
                NameEvent::Changed(changed) if Some(changed) != lock && is_own(name, changed) => {}
                NameEvent::Changed(_) | NameEvent::Lost => lost = true,
                NameEvent::Other => {}
            });
        }
        if lost {
            log::debug!(
                "{}: its names are looked at by path from now on",
                self.paths.dir().display()
            );
            *state = State {
                watch: None,
                lock: false,
                data: None,
            };
            return;
        }
        if data_changed {
            state.data = None;
        }
    }
}

/// Whether the entry `entry` of the bus directory is one of the bus's own
/// files, named `F.` and a suffix.
fn is_own(name: &[u8], entry: &[u8]) -> bool {
    entry
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(b"."))
}

impl Vouch for Sentinel {
    fn unchanged(&self) -> bool {
        let mut state = self.state();
        self.read(&mut state);
        state.lock
    }

    fn checked(&self) {
        let mut state = self.state();
        state.lock = state.watch.is_some();
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, FileTimes};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;

    /// A bus in a fresh directory, with its lock file and a sentinel on it,
    /// made as a producer makes one (under the lock); `None` on the
    /// portable path, which has none (checked here).
    fn watched() -> Option<(tempfile::TempDir, BusPaths, Sentinel)> {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        std::fs::write(paths.lock(), b"").unwrap();
        let sentinel = Sentinel::new(&paths);
        if sys::portable() {
            assert!(sentinel.is_none(), "a sentinel without file events");
            return None;
        }
        Some((
            dir,
            paths,
            sentinel.expect("a sentinel on a local directory"),
        ))
    }

    fn id(path: &Path) -> Option<FileId> {
        shm_log::current_file(path)
    }

    /// Makes a file `name` beside `F` holding `bytes`; returns its path.
    fn beside(paths: &BusPaths, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = paths.dir().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn f_is_as_last_seen_until_its_name_changes() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        assert_eq!(sentinel.current_file(), None);
        std::fs::write(paths.data(), b"one").unwrap();
        assert_eq!(sentinel.current_file(), id(paths.data()));
        assert!(sentinel.current_file().is_some());
        rename_over_f(&paths, b"two");
        assert_eq!(sentinel.current_file(), id(paths.data()), "renamed over");
        // Touched (both times, as touch(1) sets them): the identity holds
        // the modification time.
        let touched = SystemTime::now() - Duration::from_secs(3600);
        let times = FileTimes::new().set_accessed(touched).set_modified(touched);
        File::options()
            .write(true)
            .open(paths.data())
            .unwrap()
            .set_times(times)
            .unwrap();
        assert_eq!(sentinel.current_file(), id(paths.data()), "touched");
        std::fs::remove_file(paths.data()).unwrap();
        assert_eq!(sentinel.current_file(), None, "removed");
        let three = beside(&paths, "three", b"three");
        std::fs::hard_link(&three, paths.data()).unwrap();
        assert_eq!(sentinel.current_file(), id(paths.data()), "linked");
    }

    #[test]
    fn a_rename_of_its_own_is_the_known_f_until_the_next_change() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        std::fs::write(paths.data(), b"old").unwrap();
        assert_eq!(sentinel.current_file(), id(paths.data()));
        let own = beside(&paths, "bus.__new__", b"own");
        let own_id = id(&own);
        std::fs::rename(&own, paths.data()).unwrap();
        sentinel.renamed(own_id.unwrap());
        assert_eq!(sentinel.current_file(), own_id);
        rename_over_f(&paths, b"theirs");
        assert_eq!(sentinel.current_file(), id(paths.data()));
        assert_ne!(sentinel.current_file(), own_id);
    }

    #[test]
    fn the_lock_is_vouched_for_until_its_name_changes() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        assert!(!sentinel.unchanged(), "never checked");
        sentinel.checked();
        assert!(sentinel.unchanged());
        // Changes to F and the bus's other files say nothing of the lock.
        std::fs::write(paths.data(), b"chunk").unwrap();
        beside(&paths, "bus.__new__", b"staged");
        assert!(sentinel.unchanged());
        let replacement = beside(&paths, "bus.__new__", b"");
        std::fs::rename(&replacement, paths.lock()).unwrap();
        // Read for F first, as the settling thread does: the lock's news
        // is not lost on the producer.
        assert_eq!(sentinel.current_file(), id(paths.data()));
        assert!(!sentinel.unchanged(), "replaced");
        assert_given_up(&paths, &sentinel);
    }

    /// `rm -rf` of the bus directory removes `F.lock` first; the watch
    /// would stay on the removed directory, deaf to the one made again.
    #[test]
    fn a_lock_file_removed_ends_the_watch() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        sentinel.checked();
        assert!(sentinel.unchanged());
        std::fs::remove_file(paths.lock()).unwrap();
        assert!(!sentinel.unchanged());
        assert_given_up(&paths, &sentinel);
    }

    /// Renames a new file holding `bytes` over `F`, as any producer does.
    fn rename_over_f(paths: &BusPaths, bytes: &[u8]) {
        let staged = beside(paths, "bus.__new__", bytes);
        std::fs::rename(&staged, paths.data()).unwrap();
    }

    /// Gives up for good, and from then on every answer is looked up.
    fn assert_given_up(paths: &BusPaths, sentinel: &Sentinel) {
        sentinel.checked();
        assert!(!sentinel.unchanged(), "still vouching");
        rename_over_f(paths, b"next");
        assert_eq!(sentinel.current_file(), id(paths.data()));
        assert!(sentinel.state().watch.is_none());
    }

    #[test]
    fn a_neighbours_name_ends_the_watch() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        sentinel.checked();
        assert!(sentinel.unchanged());
        beside(&paths, "neighbour", b"chunk");
        assert!(!sentinel.unchanged());
        assert_given_up(&paths, &sentinel);
    }

    #[test]
    fn events_lost_to_a_full_queue_end_the_watch() {
        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        std::fs::write(paths.data(), b"chunk").unwrap();
        sentinel.checked();
        assert_eq!(sentinel.current_file(), id(paths.data()));
        let queue: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Each staging file made and removed queues two events of the
        // bus's own, which say nothing; past the queue's end the next
        // event, whatever it was, is lost.
        let staging = paths.staging();
        for _ in 0..queue / 2 + 1 {
            File::create(staging).unwrap();
            std::fs::remove_file(staging).unwrap();
        }
        assert!(!sentinel.unchanged());
        assert_given_up(&paths, &sentinel);
    }

    #[test]
    fn own_names_are_the_bus_name_and_a_suffix() {
        assert!(is_own(b"bus", b"bus.__new__"));
        assert!(is_own(b"bus", b"bus.shm"));
        assert!(!is_own(b"bus", b"bus"));
        assert!(!is_own(b"bus", b"bus2"));
        assert!(!is_own(b"bus", b"other"));
    }

    /// A child made by fork(2) shares the parent's event queue: were it to
    /// read it, the parent would miss what it read.
    #[test]
    fn a_forked_child_leaves_the_queue_to_its_parent() {
        use nix::sys::wait::{WaitStatus, waitpid};

        let Some((_dir, paths, sentinel)) = watched() else {
            return;
        };
        std::fs::write(paths.data(), b"before").unwrap();
        assert_eq!(sentinel.current_file(), id(paths.data()));
        rename_over_f(&paths, b"after");
        let child = sys::fork_child(|| sentinel.current_file() == id(paths.data()));
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        assert_eq!(
            sentinel.current_file(),
            id(paths.data()),
            "the event was read"
        );
    }
}

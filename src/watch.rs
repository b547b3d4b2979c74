//! Waiting for the data file to change (or, for a producer that a durable
//! subscriber holds back, for the subscribers' records to change).
//!
//! `F` is replaced by rename on every publish, so the directory that holds it
//! is watched (inotify), not `F` itself. Events only shorten a wait: every
//! wait is also bounded by the sleep interval, which keeps the bus working on
//! filesystems that deliver no events (NFS) and covers any event we miss.
//!
//! Callers follow one pattern, which cannot lose a wake-up: [`Watcher::arm`],
//! then check their condition, then [`Watcher::wait`]. An event that lands
//! between the check and the wait is already queued on the inotify
//! descriptor, so the wait returns at once.
//!
//! Without events (no inotify instance or watch to be had: a user past
//! `fs.inotify.max_user_instances`, which 128 lossless consumers of one user
//! reach, or past `max_user_watches`; `--no-file-monitoring`; `F`'s
//! directory not there yet), waits poll adaptively. A lossless chunk costs a
//! round trip of waits, so polling at the sleep interval alone would move
//! about ten chunks a second; instead the pause starts short after activity
//! ([`WaitPolicy::first_pause`]) and doubles while nothing happens, up to the sleep
//! interval, which keeps an idle process at a few wake-ups a second.
//! Activity is a check that passed: the caller then returns and comes back
//! with its next [`Watcher::arm`] without having waited.
//!
//! On a shared filesystem (NFS, a FUSE client such as GlusterFS: see
//! [`crate::remote`]) events come only for this host's changes, so waits
//! with events end at those same polling pauses too, not at the sleep
//! interval alone.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};
use crate::options::{BusOptions, WaitPolicy};
use crate::paths::BusPaths;
use crate::remote;
use crate::stop::Stop;
use crate::sys::{self, Events, Seen};

pub(crate) use crate::sys::Awaited;

/// How often a watcher asks again for file events the system refused. A
/// refused request costs one system call; a process that got them back
/// says so with `-v`.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// Waits for changes to one bus file, or to any entry of one directory, by
/// events when possible and by polling always.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// Whether events are wanted: they are set up at the first
    /// [`Watcher::arm`], so that a process that never waits (a lossy
    /// producer) takes none of the few inotify instances a user may have.
    file_monitoring: bool,
    started: bool,
    inotify: Option<Events>,
    watching: bool,
    dir: PathBuf,
    /// The entry of `dir` waited for; `None`: any.
    name: Option<OsString>,
    interval: Duration,
    awaited: Awaited,
    /// How long to keep checking for the event before going to sleep.
    eager: Duration,
    /// How long the first wait without events sleeps after activity.
    first_pause: Duration,
    /// How long the next wait without events sleeps.
    pause: Duration,
    /// Whether [`Watcher::wait`] was called since the last
    /// [`Watcher::arm`]; if not, the check in between passed.
    waited: bool,
    /// The last wait ended with the event queue read to its end (or found
    /// nothing queued when it timed out): the next [`Watcher::arm`] has
    /// nothing of its own to discard.
    drained: bool,
    /// How waits without events poll, for the diagnostics.
    polling: String,
    /// Whether the failure to watch `F`'s directory was reported.
    reported_no_watch: bool,
    /// When to ask for file events again, after the system refused them
    /// (past `fs.inotify.max_user_instances`): instances free up as other
    /// processes exit, and a long-lived consumer should not poll for good.
    retry_events: Option<Instant>,
    /// Made on request only: it costs two descriptors.
    stop: Option<Stop>,
    /// When waits give up with [`Error::TimedOut`].
    deadline: Option<Instant>,
    /// `F` is on a shared filesystem, where events come only for this
    /// host's changes: waits with events are bounded by the polling pauses
    /// too, not by the sleep interval alone.
    shared: bool,
    /// A file watched for writes besides the directory (the shared-memory
    /// log, whose doorbell is a write: see [`crate::shm_log`]), and its
    /// watch once in place.
    file: Option<PathBuf>,
    file_watch: Option<i32>,
}

impl Watcher {
    /// A watcher for `F`, by the bus's options: polling alone without file
    /// monitoring, and waits that start eagerly or poll as the
    /// [`WaitPolicy`] of the bus's mode says.
    pub(crate) fn new(paths: &BusPaths, options: &BusOptions, awaited: Awaited) -> Self {
        let name = Some(paths.file_name().to_os_string());
        Watcher::on(paths.dir().to_path_buf(), name, options, awaited)
    }

    /// A watcher for changes to any entry of `dir`, waiting as
    /// [`Watcher::new`] does.
    pub(crate) fn on_directory(dir: PathBuf, options: &BusOptions, awaited: Awaited) -> Self {
        Watcher::on(dir, None, options, awaited)
    }

    fn on(dir: PathBuf, name: Option<OsString>, options: &BusOptions, awaited: Awaited) -> Self {
        let WaitPolicy {
            eager,
            first_pause,
            interval,
        } = options.wait_policy();
        Watcher {
            file_monitoring: options.file_monitoring,
            started: false,
            inotify: None,
            watching: false,
            dir,
            name,
            interval,
            awaited,
            eager,
            first_pause,
            pause: first_pause,
            waited: false,
            drained: false,
            polling: format!(
                "polling, every {first_pause:?} after activity and backing off to every \
                 {interval:?} while idle"
            ),
            reported_no_watch: false,
            retry_events: None,
            stop: None,
            deadline: None,
            shared: false,
            file: None,
            file_watch: None,
        }
    }

    /// Makes waits end also when `file` is written (`None`: no file).
    pub(crate) fn watch_file(&mut self, file: Option<PathBuf>) {
        self.file = file;
        self.file_watch = None;
        self.watch_file_now();
    }

    fn watch_file_now(&mut self) {
        // Whenever the directory's watch is (re)made: a watch on the same
        // file again gives the same number.
        if let (Some(events), Some(file), true) = (&self.inotify, &self.file, self.watching) {
            match events.watch_file(file) {
                Ok(wd) => self.file_watch = Some(wd),
                Err(e) => log::debug!("cannot watch {}: {e}", file.display()),
            }
        }
    }

    /// Sets up events, or says (with `-v`) why waits poll instead.
    fn start(&mut self) {
        self.started = true;
        if let Some(kind) = remote::shared_filesystem(&self.dir) {
            self.shared = true;
            log::info!(
                "{} is on {kind}: changes made on other hosts raise no events here, so \
                 waits for them end at the next poll ({})",
                self.dir.display(),
                self.polling
            );
        }
        if !self.file_monitoring {
            log::info!("file monitoring off; {}", self.polling);
            return;
        }
        match sys::events() {
            Ok(events) => self.inotify = Some(events),
            Err(e) => {
                log::info!("inotify unavailable ({e}); {}", self.polling);
                // The portable path has none to give, however long it waits.
                if e.kind() != std::io::ErrorKind::Unsupported {
                    self.retry_events = Some(Instant::now() + EVENTS_RETRY);
                }
            }
        }
    }

    /// Asks for file events again, once [`EVENTS_RETRY`] has passed since
    /// the system last refused them.
    fn retry_events(&mut self) {
        if self.retry_events.is_none_or(|at| Instant::now() < at) {
            return;
        }
        match sys::events() {
            Ok(events) => {
                self.inotify = Some(events);
                self.retry_events = None;
                log::info!("inotify available now; waits end on events again");
            }
            Err(_) => self.retry_events = Some(Instant::now() + EVENTS_RETRY),
        }
    }

    /// Whether the next wait ends on events rather than by polling.
    pub(crate) fn has_events(&self) -> bool {
        self.inotify.is_some() && self.watching
    }

    /// Whether `F` is on a shared filesystem (NFS, a FUSE client, ...).
    pub(crate) fn on_shared_filesystem(&self) -> bool {
        self.shared
    }

    /// Whether every change to `F` raises an event here: not without
    /// events, nor on a shared filesystem, where other hosts' changes raise
    /// none.
    pub(crate) fn sees_every_change(&self) -> bool {
        self.has_events() && !self.shared
    }

    /// Makes sure events are being collected before the caller checks its
    /// condition. Cheap once the watch is in place; while `F`'s directory
    /// does not exist yet, polling covers the wait.
    ///
    /// Events already queued are discarded: the caller's check comes after
    /// them and sees their effect. Without this, a process is woken by the
    /// echo of its own publish or removal, once per chunk. Right after a
    /// wait that read the queue to its end there is nothing to discard but
    /// what came since, which at worst ends the next wait early, so the
    /// queue is not read again.
    pub(crate) fn arm(&mut self) {
        if !self.started {
            self.start();
        }
        if self.inotify.is_none() {
            self.retry_events();
        }
        if !std::mem::take(&mut self.waited) {
            self.pause = self.first_pause;
        }
        let drained = std::mem::take(&mut self.drained);
        if self.watching {
            if drained {
                return;
            }
            if self.drain().lost_watch {
                self.watching = false;
                self.file_watch = None;
            } else {
                return;
            }
        }
        if let Some(inotify) = &self.inotify {
            match inotify.watch(&self.dir, self.awaited) {
                Ok(_) => {
                    self.watching = true;
                    log::debug!("watching {} for events", self.dir.display());
                    self.watch_file_now();
                }
                // The directory is made by the first producer; until then
                // polling is expected.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::debug!("cannot watch {} yet: it does not exist", self.dir.display())
                }
                Err(e) if !self.reported_no_watch => {
                    self.reported_no_watch = true;
                    log::info!(
                        "cannot watch {} ({e}); {}",
                        self.dir.display(),
                        self.polling
                    );
                }
                Err(e) => log::debug!("cannot watch {}: {e}", self.dir.display()),
            }
        }
    }

    /// Blocks until an event concerning `F` arrives or the sleep interval
    /// passes, whichever is first; without events, for the next pause of
    /// polling. Fails with [`Error::Stopped`] once stopped, and with
    /// [`Error::TimedOut`] once the deadline passed and no event concerning
    /// `F` is queued (the caller has then checked its condition after the
    /// deadline). Sleeps end at the deadline, and at once on a stop (but
    /// for polling pauses under a millisecond, which are slept out).
    pub(crate) fn wait(&mut self) -> Result<()> {
        self.check_stop()?;
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            if self.has_events() && self.drain().relevant {
                return Ok(());
            }
            return Err(Error::TimedOut);
        }
        self.waited = true;
        if !self.has_events() {
            self.pause_polling(self.capped(self.pause));
            self.pause = (self.pause * 2).min(self.interval);
        } else {
            if !self.caught_eagerly() {
                self.sleep_until_event();
            }
            self.drained = true;
            if self.shared {
                self.pause = (self.pause * 2).min(self.interval);
            }
        }
        self.check_stop()
    }

    /// The handle that stops this watcher's waits, made at the first call.
    pub(crate) fn stopper(&mut self) -> Result<Stop> {
        if self.stop.is_none() {
            self.stop = Some(Stop::new()?);
        }
        Ok(self.stop.clone().expect("made above"))
    }

    /// Makes `stop` end this watcher's waits too, as it ends those of the
    /// watcher it came from.
    pub(crate) fn share_stop(&mut self, stop: Stop) {
        self.stop = Some(stop);
    }

    /// Fails with [`Error::Stopped`] once stopped.
    pub(crate) fn check_stop(&self) -> Result<()> {
        match &self.stop {
            Some(stop) if stop.is_stopped() => Err(Error::Stopped),
            _ => Ok(()),
        }
    }

    /// Sets (or with `None` clears) the time after which waits fail with
    /// [`Error::TimedOut`].
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// `wait` shortened to end at the deadline.
    fn capped(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }

    /// Sleeps one polling pause; a stop ends it, unless it is too short
    /// for `poll(2)`, which counts milliseconds.
    fn pause_polling(&self, pause: Duration) {
        match &self.stop {
            Some(stop) if pause >= Duration::from_millis(1) => {
                let timeout = PollTimeout::try_from(pause).unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut [PollFd::new(stop.fd(), PollFlags::POLLIN)], timeout);
            }
            _ => std::thread::sleep(pause),
        }
    }

    /// Checks for an event until the eager period ends; reports whether one
    /// arrived.
    fn caught_eagerly(&mut self) -> bool {
        let until = Instant::now() + self.eager;
        while Instant::now() < until {
            let seen = self.drain();
            if seen.relevant {
                self.watching &= !seen.lost_watch;
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    fn sleep_until_event(&mut self) {
        let Some(inotify) = self.inotify.as_ref() else {
            return;
        };
        let bound = if self.shared {
            self.pause
        } else {
            self.interval
        };
        let deadline = Instant::now() + self.capped(bound);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let inotify_fd = PollFd::new(inotify.fd(), PollFlags::POLLIN);
            let mut fds = match &self.stop {
                Some(stop) => vec![inotify_fd, PollFd::new(stop.fd(), PollFlags::POLLIN)],
                None => vec![inotify_fd],
            };
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) if self.check_stop().is_err() => return,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::info!("waiting for inotify failed ({e}); {}", self.polling);
                    self.watching = false;
                    self.inotify = None;
                    return;
                }
            }
            let seen = self.drain();
            self.watching &= !seen.lost_watch;
            if seen.relevant || left.is_zero() {
                return;
            }
        }
    }

    /// Reads every queued event: whether any concerned `F`, and whether the
    /// directory watch itself went away.
    fn drain(&self) -> Seen {
        match &self.inotify {
            Some(events) => events.drain(
                self.name.as_deref().map(OsStrExt::as_bytes),
                self.file_watch,
            ),
            None => Seen::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Mode;
    fn options(file_monitoring: bool, sleep_interval: Duration) -> BusOptions {
        BusOptions::default()
            .with_file_monitoring(file_monitoring)
            .with_sleep_interval(sleep_interval)
    }

    /// Times one wait of `watcher`.
    fn timed_wait(watcher: &mut Watcher) -> Duration {
        let start = Instant::now();
        watcher.wait().unwrap();
        start.elapsed()
    }

    /// The pauses of `rounds` failed checks in a row, by a watcher without
    /// events in `mode`; then checks that it starts over after a check
    /// that passed.
    fn idle_pauses(mode: Mode, interval: Duration, rounds: usize) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let options = options(false, interval).with_mode(mode);
        let mut watcher = Watcher::new(&paths, &options, Awaited::Publication);
        assert!(!watcher.has_events());
        watcher.arm();
        let first = watcher.pause;
        let mut pauses = Vec::new();
        for _ in 0..rounds {
            pauses.push(watcher.pause.as_micros() as u64);
            watcher.wait().unwrap();
            watcher.arm();
        }
        // The last arm came after a wait: still idle.
        assert_eq!(watcher.pause, interval);
        // An arm without a wait since the previous one: that check passed.
        watcher.arm();
        assert_eq!(watcher.pause, first);
        pauses
    }

    #[test]
    fn lossless_polling_starts_at_50us_and_backs_off_while_idle() {
        assert_eq!(
            idle_pauses(Mode::Lossless, Duration::from_millis(2), 8),
            [50, 100, 200, 400, 800, 1600, 2000, 2000]
        );
    }

    #[test]
    fn lossy_polling_starts_at_1ms_and_backs_off_while_idle() {
        assert_eq!(
            idle_pauses(Mode::Lossy, Duration::from_millis(5), 5),
            [1000, 2000, 4000, 5000, 5000]
        );
    }

    #[test]
    fn polling_never_pauses_longer_than_the_sleep_interval() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let interval = Duration::from_micros(20);
        let mut watcher = Watcher::new(&paths, &options(false, interval), Awaited::Removal);
        watcher.arm();
        assert_eq!(watcher.pause, interval);
        watcher.wait().unwrap();
        assert_eq!(watcher.pause, interval);
    }

    /// A watcher with events on a fresh directory, armed, whose waits would
    /// otherwise last a minute.
    /// Whether these tests can watch: not on the portable path, which has
    /// no file events (checked here).
    fn events_available() -> bool {
        if !sys::portable() {
            return true;
        }
        assert!(sys::events().is_err());
        false
    }

    fn armed(awaited: Awaited) -> (tempfile::TempDir, BusPaths, Watcher) {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let mut watcher = Watcher::new(&paths, &options(true, Duration::from_secs(60)), awaited);
        watcher.arm();
        assert!(watcher.has_events(), "no inotify here");
        (dir, paths, watcher)
    }

    fn publish(paths: &BusPaths) {
        std::fs::write(paths.staging(), b"chunk").unwrap();
        std::fs::rename(paths.staging(), paths.data()).unwrap();
    }

    #[test]
    fn on_a_shared_filesystem_waits_with_events_poll_too() {
        if !events_available() {
            return;
        }
        // What start() finds on NFS or a FUSE client such as GlusterFS,
        // where another host's publication raises no event here.
        let (_dir, _paths, mut watcher) = armed(Awaited::Publication);
        watcher.shared = true;
        assert!(!watcher.sees_every_change());
        assert!(timed_wait(&mut watcher) < Duration::from_secs(30));
        assert_eq!(
            watcher.pause,
            watcher.first_pause * 2,
            "backs off while idle"
        );
    }

    #[test]
    fn a_publication_ends_a_wait() {
        if !events_available() {
            return;
        }
        let (_dir, paths, mut watcher) = armed(Awaited::Publication);
        publish(&paths);
        assert!(timed_wait(&mut watcher) < Duration::from_secs(30));
    }

    #[test]
    fn a_removal_ends_a_wait() {
        if !events_available() {
            return;
        }
        let (_dir, paths, mut watcher) = armed(Awaited::Removal);
        publish(&paths);
        // Arming again discards the events of the caller's own doing.
        watcher.arm();
        std::fs::remove_file(paths.data()).unwrap();
        assert!(timed_wait(&mut watcher) < Duration::from_secs(30));
    }

    #[test]
    fn events_about_other_files_do_not_end_a_wait() {
        if !events_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let interval = Duration::from_millis(300);
        let mut watcher = Watcher::new(&paths, &options(true, interval), Awaited::Publication);
        watcher.arm();
        assert!(watcher.has_events(), "no inotify here");
        std::fs::write(dir.path().join("other.__new__"), b"x").unwrap();
        std::fs::rename(dir.path().join("other.__new__"), dir.path().join("other")).unwrap();
        // poll(2) counts whole milliseconds, so the interval may end a
        // little early; an event would have ended it at once.
        assert!(timed_wait(&mut watcher) >= interval / 2);
        // Nor do events that were queued before the caller armed (but for
        // those that came right after a wait, which the arm that follows it
        // leaves queued: see the next test).
        watcher.arm();
        publish(&paths);
        watcher.arm();
        assert!(timed_wait(&mut watcher) >= interval / 2);
    }

    #[test]
    fn the_arm_right_after_a_wait_does_not_read_the_queue_again() {
        if !events_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let interval = Duration::from_secs(5);
        let mut watcher = Watcher::new(&paths, &options(true, interval), Awaited::Publication);
        watcher.arm();
        publish(&paths);
        assert!(
            timed_wait(&mut watcher) < interval / 2,
            "the event was missed"
        );
        // The wait read the queue to its end; a publication that comes
        // before the next arm is left queued by it, and ends the next wait
        // at once: a check too many at worst, never a wake-up lost.
        publish(&paths);
        watcher.arm();
        assert!(
            timed_wait(&mut watcher) < interval / 2,
            "the event was lost"
        );
    }

    #[test]
    fn a_directory_made_later_is_watched_from_then_on() {
        if !events_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("later").join("bus"));
        let mut watcher = Watcher::new(
            &paths,
            &options(true, Duration::from_secs(60)),
            Awaited::Publication,
        );
        watcher.arm();
        assert!(!watcher.has_events());
        std::fs::create_dir(paths.dir()).unwrap();
        watcher.arm();
        assert!(watcher.has_events());
        publish(&paths);
        assert!(timed_wait(&mut watcher) < Duration::from_secs(30));
    }

    #[test]
    fn removing_the_directory_loses_the_watch_and_ends_the_wait() {
        if !events_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("sub").join("bus"));
        std::fs::create_dir(paths.dir()).unwrap();
        let mut watcher = Watcher::new(
            &paths,
            &options(true, Duration::from_secs(60)),
            Awaited::Publication,
        );
        watcher.arm();
        assert!(watcher.has_events());
        std::fs::remove_dir(paths.dir()).unwrap();
        assert!(timed_wait(&mut watcher) < Duration::from_secs(30));
        assert!(!watcher.has_events());
    }
}

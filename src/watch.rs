//! Waiting for the data file to change (or, for a producer that a durable
//! subscriber holds back, for the subscribers' records to change).
//!
//! `F` is replaced by rename on every publish, so the directory that holds it
//! is watched (inotify) for the entry `F`. Events only shorten a wait: every
//! wait is also bounded by the sleep interval, which keeps the bus working on
//! filesystems that deliver no events (NFS) and covers any event we miss.
//!
//! A directory's entry events come for every file in it, and many buses in
//! one directory (`/tmp`, `/run/app/`) is the ordinary layout: each
//! neighbour's chunk would wake every idle participant here. So the first
//! wait woken for nothing but other entries follows the file named `F`
//! alone: a one-shot watch on it (being renamed over or removed changes its
//! link count, whoever does it), with the directory's entry events off;
//! the directory stays watched for its own removal or rename. Entry events
//! come back on when the file watch cannot be had, chiefly while `F` does
//! not exist. Busy participants keep the directory's entry events, which
//! cost nothing per chunk once set (docs/PROTOCOL.md, "How a participant
//! waits").
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

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};
use crate::options::{BusOptions, WaitPolicy};
use crate::paths::BusPaths;
use crate::remote;
use crate::stop::Stop;
use crate::sys::{self, Events, Interest, Seen, Wd};

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
    /// producer) takes none of the few inotify instances a user may have
    /// for waiting (a producer of the shared-memory log takes one for its
    /// [`crate::sentinel::Sentinel`]).
    file_monitoring: bool,
    started: bool,
    inotify: Option<Events>,
    /// The watch on `dir`, once set.
    dir_watch: Option<Wd>,
    /// Whether the watch on `dir` reports the entry events the wait needs;
    /// off while `file_watch` follows `F` alone.
    entries: bool,
    /// The one-shot watch on the file named `F`, while it has not fired.
    file_watch: Option<Wd>,
    dir: PathBuf,
    /// `F`, the entry of `dir` waited for; `None`: any.
    file: Option<PathBuf>,
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
    /// Whether `-vv` said that the directory is missing, since the last
    /// watch was set up: once, not at every poll.
    reported_missing: bool,
    /// What `-v` said the last wait was for (see [`Watcher::waiting_for`]).
    said: Option<String>,
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
    /// A file watched for writes besides `F` (the shared-memory log, whose
    /// doorbell is a write: see [`crate::shm_log`]), and its watch once in
    /// place.
    doorbell: Option<PathBuf>,
    doorbell_watch: Option<Wd>,
    /// Where the queue was made: a child made by `fork(2)` shares its
    /// parent's, where each event is read once, and makes one of its own
    /// (see [`Watcher::own_queue`]).
    origin: sys::Origin,
}

impl Watcher {
    /// A watcher for `F`, by the bus's options: polling alone without file
    /// monitoring, and waits that start eagerly or poll as the
    /// [`WaitPolicy`] of the bus's mode says.
    pub(crate) fn new(paths: &BusPaths, options: &BusOptions, awaited: Awaited) -> Self {
        let file = Some(paths.data().to_path_buf());
        Watcher::on(paths.dir().to_path_buf(), file, options, awaited)
    }

    /// A watcher for changes to any entry of `dir`, waiting as
    /// [`Watcher::new`] does.
    pub(crate) fn on_directory(dir: PathBuf, options: &BusOptions, awaited: Awaited) -> Self {
        Watcher::on(dir, None, options, awaited)
    }

    fn on(dir: PathBuf, file: Option<PathBuf>, options: &BusOptions, awaited: Awaited) -> Self {
        let WaitPolicy {
            eager,
            first_pause,
            interval,
        } = options.wait_policy();
        Watcher {
            file_monitoring: options.file_monitoring,
            started: false,
            inotify: None,
            dir_watch: None,
            entries: false,
            file_watch: None,
            dir,
            file,
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
            reported_missing: false,
            said: None,
            retry_events: None,
            stop: None,
            deadline: None,
            shared: false,
            doorbell: None,
            doorbell_watch: None,
            origin: sys::Origin::here(),
        }
    }

    /// Makes waits end also when `file` is written (`None`: no file).
    pub(crate) fn watch_doorbell(&mut self, file: Option<PathBuf>) {
        if let (Some(wd), Some(inotify)) = (self.doorbell_watch.take(), &self.inotify) {
            inotify.unwatch(wd);
        }
        self.doorbell = file;
        self.watch_doorbell_now();
    }

    /// Watches the doorbell, once there is a watch on the directory: made
    /// again whenever that one is (a watch on the same file again gives
    /// the same number).
    fn watch_doorbell_now(&mut self) {
        if let (Some(events), Some(file), Some(_)) = (&self.inotify, &self.doorbell, self.dir_watch)
        {
            match events.watch_doorbell(file) {
                Ok(wd) => self.doorbell_watch = Some(wd),
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

    /// In a child made by `fork(2)`: leaves the parent's queue to the
    /// parent (closing the child's copy of its descriptor) and starts over,
    /// so that the next [`Watcher::arm`] makes a queue and watches of the
    /// child's own. Each event is read once: reading a shared queue, either
    /// process would hide from the other an event it waits for.
    fn own_queue(&mut self) {
        if self.origin.is_here() {
            return;
        }
        self.origin = sys::Origin::here();
        self.started = false;
        self.inotify = None;
        self.dir_watch = None;
        self.file_watch = None;
        self.doorbell_watch = None;
        self.entries = false;
        self.retry_events = None;
    }

    /// Whether the next wait ends on events rather than by polling.
    pub(crate) fn has_events(&self) -> bool {
        self.inotify.is_some()
            && (self.file_watch.is_some() || (self.dir_watch.is_some() && self.entries))
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
        self.own_queue();
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
        if !drained && (self.dir_watch.is_some() || self.file_watch.is_some()) {
            let seen = self.drain();
            self.absorb(seen);
        }
        if self.has_events() {
            return;
        }
        let Some(inotify) = &self.inotify else {
            return;
        };
        // Following `F` alone, whose last change was seen: its next one is
        // watched afresh, and the directory's entries stay quiet.
        if self.dir_watch.is_some()
            && !self.entries
            && let Some(file) = &self.file
            && let Ok(wd) = inotify.watch_file(file)
        {
            self.file_watch = Some(wd);
            return;
        }
        match inotify.watch_dir(&self.dir, Some(self.awaited)) {
            Ok(wd) => {
                self.replace_dir_watch(wd);
                self.entries = true;
                self.reported_missing = false;
                log::debug!("watching {} for events", self.dir.display());
                self.watch_doorbell_now();
            }
            // The directory is made by the first producer; until then
            // polling is expected.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !std::mem::replace(&mut self.reported_missing, true) {
                    log::debug!("cannot watch {} yet: it does not exist", self.dir.display())
                }
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

    /// Makes `wd` the watch on `dir`. The path may lead to another
    /// directory than the one watched before (replaced meanwhile): that
    /// one's watch is given up, or its entries would still wake us.
    fn replace_dir_watch(&mut self, wd: Wd) {
        if let Some(old) = self.dir_watch.replace(wd)
            && old != wd
            && let Some(inotify) = &self.inotify
        {
            inotify.unwatch(old);
        }
    }

    /// Takes in what a batch of events says of the watches.
    fn absorb(&mut self, seen: Seen) {
        if seen.file_fired {
            self.file_watch = None;
        }
        if seen.lost_watch {
            self.dir_watch = None;
            self.entries = false;
            // The files it followed may be in the directory moved away.
            for wd in [self.file_watch.take(), self.doorbell_watch.take()]
                .into_iter()
                .flatten()
            {
                if let Some(inotify) = &self.inotify {
                    inotify.unwatch(wd);
                }
            }
        }
    }

    /// After a wake-up for other entries of the directory alone: follows
    /// the file named `F` by itself from now on, if it exists, so that
    /// neighbours wake this process no more. Entry events are turned off
    /// only once the file watch is in place; one that came in between is
    /// queued already.
    fn follow_file_alone(&mut self) {
        if !self.entries || self.file_watch.is_some() {
            return;
        }
        let (Some(inotify), Some(file)) = (&self.inotify, &self.file) else {
            return;
        };
        let Ok(wd) = inotify.watch_file(file) else {
            return;
        };
        self.file_watch = Some(wd);
        // When the directory is gone, the event that says so is queued.
        if let Ok(wd) = inotify.watch_dir(&self.dir, None) {
            log::debug!(
                "woken by other files' events in {}: following {} alone",
                self.dir.display(),
                file.display()
            );
            self.replace_dir_watch(wd);
            self.entries = false;
        }
    }

    /// Says with `-v` what the coming wait is for and what would end it,
    /// as `why` puts it: once when a wait for that begins, never again at
    /// each poll or event that does not end it. `why` runs only with `-v`.
    pub(crate) fn waiting_for(&mut self, why: impl FnOnce() -> String) {
        if log::log_enabled!(log::Level::Info) {
            let why = why();
            if self.said.as_ref() != Some(&why) {
                log::info!("{why}");
                self.said = Some(why);
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
        self.own_queue();
        self.check_stop()?;
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            if self.has_events() {
                let seen = self.drain();
                self.absorb(seen);
                if seen.relevant {
                    return Ok(());
                }
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
        match self.stop.as_ref().and_then(Stop::fd) {
            Some(stop) if pause >= Duration::from_millis(1) => {
                let timeout = PollTimeout::try_from(pause).unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut [PollFd::new(stop, PollFlags::POLLIN)], timeout);
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
            self.absorb(seen);
            if seen.relevant {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    fn sleep_until_event(&mut self) {
        if self.inotify.is_none() {
            return;
        }
        let bound = if self.shared {
            self.pause
        } else {
            self.interval
        };
        let deadline = Instant::now() + self.capped(bound);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let Some(inotify) = &self.inotify else {
                return;
            };
            let inotify_fd = PollFd::new(inotify.fd(), PollFlags::POLLIN);
            let mut fds = match self.stop.as_ref().and_then(Stop::fd) {
                Some(stop) => vec![inotify_fd, PollFd::new(stop, PollFlags::POLLIN)],
                None => vec![inotify_fd],
            };
            let polled = poll(&mut fds, timeout);
            drop(fds);
            match polled {
                Ok(0) => return,
                Ok(_) if self.check_stop().is_err() => return,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::info!("waiting for inotify failed ({e}); {}", self.polling);
                    self.dir_watch = None;
                    self.file_watch = None;
                    self.doorbell_watch = None;
                    self.entries = false;
                    self.inotify = None;
                    return;
                }
            }
            let seen = self.drain();
            self.absorb(seen);
            if seen.relevant || left.is_zero() {
                return;
            }
            if seen.other {
                self.follow_file_alone();
            }
        }
    }

    /// Reads every queued event: whether any concerned `F`, and what
    /// became of the watches.
    fn drain(&self) -> Seen {
        match &self.inotify {
            Some(events) => events.drain(&Interest {
                dir: self.dir_watch,
                name: self
                    .file
                    .as_deref()
                    .and_then(Path::file_name)
                    .map(OsStrExt::as_bytes),
                file: self.file_watch,
                doorbell: self.doorbell_watch,
            }),
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
        armed_with(awaited, Duration::from_secs(60))
    }

    /// [`armed`], with waits that last `interval` unless something ends
    /// them.
    fn armed_with(awaited: Awaited, interval: Duration) -> (tempfile::TempDir, BusPaths, Watcher) {
        let dir = tempfile::tempdir().unwrap();
        let paths = BusPaths::new(dir.path().join("bus"));
        let mut watcher = Watcher::new(&paths, &options(true, interval), awaited);
        watcher.arm();
        assert!(watcher.has_events(), "no inotify here");
        (dir, paths, watcher)
    }

    fn publish(paths: &BusPaths) {
        std::fs::write(paths.staging(), b"chunk").unwrap();
        std::fs::rename(paths.staging(), paths.data()).unwrap();
    }

    /// A child made by `fork(2)` shares its parent's inotify queue, where
    /// each event is read once: unless the child waits on a queue of its
    /// own, one of the two sleeps through a publication the other read.
    #[test]
    fn a_forked_child_and_its_parent_each_wake_for_a_publication() {
        use nix::sys::wait::{WaitStatus, waitpid};

        if !events_available() {
            return;
        }
        let bound = Duration::from_secs(10);
        let (_dir, paths, mut watcher) = armed(Awaited::Publication);
        let (ready_rx, ready_tx) = nix::unistd::pipe().unwrap();
        let child = sys::fork_child(|| {
            watcher.arm();
            let armed = nix::unistd::write(&ready_tx, b"x").is_ok();
            armed && timed_wait(&mut watcher) < bound && paths.data().exists()
        });
        assert_eq!(nix::unistd::read(&ready_rx, &mut [0u8; 1]).unwrap(), 1);
        publish(&paths);
        let waited = timed_wait(&mut watcher);
        let status = waitpid(child, None).unwrap();
        assert!(waited < bound, "the parent slept through it: {waited:?}");
        assert_eq!(
            status,
            WaitStatus::Exited(child, 0),
            "the child slept through it"
        );
    }

    /// A child made by `fork(2)` inherits its parent's stop handle, whose
    /// pipe stays readable once stopped: a stop in the parent must neither
    /// end the child's waits nor make them spin.
    #[test]
    fn a_stop_in_the_parent_leaves_a_forked_childs_waits_asleep() {
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::time::{ClockId, clock_gettime};

        if !events_available() {
            return;
        }
        let interval = Duration::from_secs(1);
        let (_dir, _paths, mut watcher) = armed_with(Awaited::Publication, interval);
        let stop = watcher.stopper().unwrap();
        let (stopped_rx, stopped_tx) = nix::unistd::pipe().unwrap();
        let cpu = || Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap());
        let child = sys::fork_child(|| {
            let told = nix::unistd::read(&stopped_rx, &mut [0u8; 1]).is_ok_and(|n| n == 1);
            watcher.arm();
            let (start, used) = (Instant::now(), cpu());
            let waited = watcher.wait().is_ok();
            // Asleep, a wait of a second takes a few ms of processor at
            // most; spinning, most of the second.
            let asleep = cpu() - used < interval / 4 && start.elapsed() >= interval / 2;
            told && waited && asleep
        });
        stop.stop();
        nix::unistd::write(&stopped_tx, b"x").unwrap();
        let status = waitpid(child, None).unwrap();
        assert_eq!(status, WaitStatus::Exited(child, 0), "the child's wait");
        assert!(matches!(watcher.wait(), Err(Error::Stopped)));
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
        let interval = Duration::from_millis(300);
        let (dir, paths, mut watcher) = armed_with(Awaited::Publication, interval);
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
        let interval = Duration::from_secs(5);
        let (_dir, paths, mut watcher) = armed_with(Awaited::Publication, interval);
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

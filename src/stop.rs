//! Ending a producer's or consumer's wait from another thread.
//!
//! Waits sleep in `poll(2)` (on inotify) or between polls, where a flag
//! alone would be seen only at the next wake-up, up to a sleep interval
//! later. So a stop also writes a byte into a pipe whose read end every
//! wait polls beside its other descriptors (the self-pipe trick, as the
//! `notify` and `mio` crates' wakers do): the wait ends at once. The byte
//! is never read, which keeps the pipe readable and makes the stop final:
//! every later wait ends at once too.
//!
//! A child made by `fork(2)` gets a copy of the handle, flag included, but
//! the very same pipe: a byte its parent wrote would keep the child's polls
//! readable with its own flag down, and they would spin. So the pipe serves
//! only the process that made it. In a child, a stop is the flag alone,
//! which its waits see when they next wake (within the sleep interval).

use std::io::{PipeReader, PipeWriter};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::sys;

/// A handle that stops one [`crate::Producer`], [`crate::Consumer`] or
/// [`crate::HistoryConsumer`] from any thread, obtained from its `stopper`
/// method. Clones stop the same one. In a child made by `fork(2)`, a
/// handle inherited from the parent stops the child's copy only, whose
/// waits then end within the sleep interval rather than at once.
///
/// Once stopped, the producer or consumer is done for good: a call blocked
/// in it returns [`Error::Stopped`] within the bound its documentation
/// gives (at once while it waits for the bus to change), and every later
/// call that publishes or receives returns [`Error::Stopped`] at once,
/// leaving the bus as it was. A chunk being written to an output when the
/// stop comes is finished first: a chunk is never torn.
///
/// ```
/// use std::time::{Duration, Instant};
/// use filebus::{Bus, BusOptions, Error};
///
/// let dir = tempfile::tempdir()?;
/// let options = BusOptions::default().with_sleep_interval(Duration::from_secs(60));
/// let mut consumer = Bus::new(dir.path().join("bus"), options).consumer()?;
/// let stop = consumer.stopper()?;
/// let waiting = std::thread::spawn(move || consumer.recv());
/// let start = Instant::now();
/// stop.stop();
/// assert!(matches!(waiting.join().unwrap(), Err(Error::Stopped)));
/// assert!(start.elapsed() < Duration::from_secs(30));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stopped: AtomicBool,
    reader: PipeReader,
    writer: PipeWriter,
    /// Where the pipe was made.
    origin: sys::Origin,
}

impl Stop {
    pub(crate) fn new() -> Result<Stop> {
        let (reader, writer) = std::io::pipe().map_err(|source| Error::Io {
            action: "create",
            path: "a pipe to stop waits".into(),
            source,
        })?;
        Ok(Stop {
            inner: Arc::new(Inner {
                stopped: AtomicBool::new(false),
                reader,
                writer,
                origin: sys::Origin::here(),
            }),
        })
    }

    /// Stops the producer or consumer this handle belongs to, ending any
    /// wait it is in. Never blocks; stopping again does nothing.
    pub fn stop(&self) {
        // The flag goes first: a waiter woken by the byte must see it.
        if !self.inner.stopped.swap(true, Ordering::SeqCst) && self.pipe_is_ours() {
            // One byte into an empty pipe cannot block or fail short of
            // the reader being closed, which this handle keeps open.
            let _ = nix::unistd::write(&self.inner.writer, &[1]);
        }
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// The descriptor that becomes readable when stopped, for `poll(2)`;
    /// none in a child made by `fork(2)` since the handle was made (see
    /// the module's comment).
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe_is_ours().then(|| self.inner.reader.as_fd())
    }

    fn pipe_is_ours(&self) -> bool {
        self.inner.origin.is_here()
    }
}

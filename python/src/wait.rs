//! Blocking the way a Python program expects. A wait runs without the GIL,
//! so that other Python threads go on; but Python runs its signal handlers
//! (Ctrl-C's `KeyboardInterrupt`) only in the main thread and only when it
//! holds the GIL, so a wait is cut into slices of at most [`SLICE`]: between
//! two the thread takes the GIL back and lets Python run its handlers. The
//! library's timed receive gives up a slice having taken nothing, so
//! slicing a wait changes nothing on the bus.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use filebus::Stop;
use pyo3::prelude::*;

use crate::errors;

/// The longest a blocking call goes without letting Python see a signal:
/// Ctrl-C ends a wait within about this time (the issue asks for 100 ms).
const SLICE: Duration = Duration::from_millis(20);

/// A library producer or consumer shared by Python threads: one call at a
/// time uses it, and [`Shared::stop`] ends the wait of a call in progress
/// from another thread. Once closed ([`Shared::take`]) it holds nothing,
/// not even the stop handle's pipe, so that a closed object keeps no
/// descriptor while Python keeps the wrapper.
pub(crate) struct Shared<T> {
    inner: Mutex<Option<T>>,
    stop: Mutex<Option<Stop>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(object: T, stop: Stop) -> Self {
        Shared {
            inner: Mutex::new(Some(object)),
            stop: Mutex::new(Some(stop)),
        }
    }

    /// Calls `f` on the object, or returns `None` once it is closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        lock(&self.inner).as_mut().map(f)
    }

    /// Stops the object: a call waiting in it returns
    /// [`filebus::Error::Stopped`], and so does every later one.
    pub(crate) fn stop(&self) {
        if let Some(stop) = lock(&self.stop).as_ref() {
            stop.stop();
        }
    }

    /// Takes the object out (once a call in progress returned), closing
    /// this for every later call.
    pub(crate) fn take(&self) -> Option<T> {
        let object = lock(&self.inner).take();
        lock(&self.stop).take();
        object
    }

    /// Whether [`Shared::take`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.stop).is_none()
    }
}

/// The mutex's content. A panic in a call (a bug; Python sees a
/// `PanicException`) poisons the lock: later calls go on with the object
/// rather than fail for ever.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls `step` on the object in `shared` with a slice of the time left,
/// without the GIL, until it returns something other than
/// [`filebus::Error::TimedOut`], `timeout` has passed (then `None`), or a
/// signal handler raised. `what` names the object in errors.
pub(crate) fn sliced<T: Send, R: Send>(
    py: Python<'_>,
    shared: &Shared<T>,
    what: &str,
    timeout: Option<Duration>,
    step: impl Fn(&mut T, Duration) -> filebus::Result<R> + Sync,
) -> PyResult<Option<R>> {
    // A deadline too far to represent is no deadline.
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        let slice = match deadline {
            Some(deadline) => SLICE.min(deadline.saturating_duration_since(Instant::now())),
            None => SLICE,
        };
        match py.detach(|| shared.with(|inner| step(inner, slice))) {
            Some(Ok(received)) => return Ok(Some(received)),
            Some(Err(filebus::Error::TimedOut)) => {}
            Some(Err(error)) => return Err(errors::from_library(py, error, what)),
            None => return Err(errors::closed(py, what)),
        }
        py.check_signals()?;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
    }
}

/// Runs `call`, which may wait for the bus for as long as it takes (a
/// lossless publish waiting for a consumer, a producer held back by a
/// subscriber), on a thread of its own, while this thread, without the GIL
/// but for a moment every [`SLICE`], lets Python run its signal handlers.
/// A handler that raised (Ctrl-C's `KeyboardInterrupt`) stops `shared`, so
/// that the call gives up having published nothing, and its exception is
/// returned: the object is closed from then on, as after `close()` from
/// another thread. `what` names the object in errors.
pub(crate) fn interruptible<T: Send, R: Send>(
    py: Python<'_>,
    shared: &Shared<T>,
    what: &str,
    call: impl FnOnce(&mut T) -> filebus::Result<R> + Send,
) -> PyResult<R> {
    let (done, mut result) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // The receiver waits for this answer whatever happens.
            let _ = done.send(shared.with(call));
        });
        let answer = loop {
            // The receiver goes along into the wait and back: it is not
            // to be shared between threads.
            let (received, back) = py.detach(move || (result.recv_timeout(SLICE), result));
            result = back;
            match received {
                Ok(answer) => break answer,
                Err(RecvTimeoutError::Timeout) => {}
                // The call panicked; the scope passes the panic on.
                Err(RecvTimeoutError::Disconnected) => break None,
            }
            if let Err(signal) = py.check_signals() {
                shared.stop();
                // Stopped, the call returns within a slice of its waits.
                let _ = py.detach(move || result.recv());
                return Err(signal);
            }
        };
        match answer {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(errors::from_library(py, error, what)),
            None => Err(errors::closed(py, what)),
        }
    })
}

/// A timeout in seconds from Python, checked: `None` waits for ever.
pub(crate) fn timeout(py: Python<'_>, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|seconds| {
            Duration::try_from_secs_f64(seconds).map_err(|_| {
                errors::argument(
                    py,
                    format!("timeout must be a number of seconds >= 0 or None, got {seconds}"),
                )
            })
        })
        .transpose()
}

//! Blocking the way a Python program expects. A wait runs without the GIL,
//! so that other Python threads go on; but Python runs its signal handlers
//! (Ctrl-C's `KeyboardInterrupt`) only in the main thread and only when it
//! holds the GIL, so a wait is cut into slices of at most [`SLICE`]: between
//! two the thread takes the GIL back and lets Python run its handlers. The
//! library's timed receive gives up a slice having taken nothing, so
//! slicing a wait changes nothing on the bus.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use filebus::Stop;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::errors;

/// Set once the interpreter runs its exit handlers (`atexit`), before it
/// ends the threads that take the GIL back: see [`detached`].
static EXITING: AtomicBool = AtomicBool::new(false);

/// How many threads are on their way back to the GIL from [`detached`],
/// past their look at [`EXITING`].
static RETURNING: AtomicUsize = AtomicUsize::new(0);

/// Registers the exit handler that sets [`EXITING`].
pub(crate) fn watch_exit(module: &Bound<'_, PyModule>) -> PyResult<()> {
    /// Marks the exit, then lets the threads already on their way back to
    /// the GIL have it, before Python may end them for taking it.
    #[pyfunction]
    fn interpreter_exiting(py: Python<'_>) {
        EXITING.store(true, Ordering::SeqCst);
        py.detach(|| {
            while RETURNING.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    let handler = wrap_pyfunction!(interpreter_exiting, module)?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (handler,))?;
    Ok(())
}

/// Runs `wait` without the GIL and takes the GIL back, unless the
/// interpreter is exiting: then this thread (a daemon thread, since Python
/// has waited for the others by then) waits for the process to end. Python
/// (3.13 and older) ends a thread that takes the GIL back while it
/// finalizes with `pthread_exit`, whose unwinding the Rust frames above
/// this one (PyO3's panic trap) catch, which aborts the whole process
/// ("FATAL: exception not rethrown").
pub(crate) fn detached<T: Send>(py: Python<'_>, wait: impl FnOnce() -> T + Send) -> T {
    let waited = py.detach(|| {
        let waited = wait();
        // Counted before the look, so that the exit handler either is seen
        // here or sees this thread and waits for it to be back.
        RETURNING.fetch_add(1, Ordering::SeqCst);
        if EXITING.load(Ordering::SeqCst) {
            RETURNING.fetch_sub(1, Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        }
        waited
    });
    RETURNING.fetch_sub(1, Ordering::SeqCst);
    waited
}

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
        match detached(py, || shared.with(|inner| step(inner, slice))) {
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
/// that the call gives up, and closes it once the call returned: the object
/// is closed from then on, as after `close(end_stream=False)` from another
/// thread. The handler's exception is returned if the call gave up. If the
/// call had finished all the same (the chunk was published just before the
/// stop), its answer is returned and a `KeyboardInterrupt` is raised again
/// just after: never for a chunk that went out. `what` names the object in
/// errors.
pub(crate) fn interruptible<T: Send + 'static, R: Send + 'static>(
    py: Python<'_>,
    shared: &Arc<Shared<T>>,
    what: &str,
    call: impl FnOnce(&mut T) -> filebus::Result<R> + Send + 'static,
) -> PyResult<R> {
    let on_thread = Arc::clone(shared);
    let (answer, signal) = on_own_thread(py, move || on_thread.with(call), || shared.stop());
    if let Some(signal) = signal {
        // Closed without ending the stream, as a producer that died.
        drop(shared.take());
        return match answer {
            Some(Some(Ok(value))) if signal.is_instance_of::<PyKeyboardInterrupt>(py) => {
                // The same Ctrl-C, once the call has returned.
                py.import("_thread")?.call_method0("interrupt_main")?;
                Ok(value)
            }
            _ => Err(signal),
        };
    }
    match answer.flatten() {
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(errors::from_library(py, error, what)),
        None => Err(errors::closed(py, what)),
    }
}

/// Takes the object out of `shared` as [`Shared::take`] does, waiting for a
/// call in progress on another thread as long as it takes, but letting
/// Python run its signal handlers every [`SLICE`]: a handler that raised
/// (Ctrl-C) stops `shared`, so that the call in progress gives up, and its
/// exception is returned once the object is closed.
pub(crate) fn take_interruptible<T: Send + 'static>(
    py: Python<'_>,
    shared: &Arc<Shared<T>>,
) -> PyResult<Option<T>> {
    let on_thread = Arc::clone(shared);
    match on_own_thread(py, move || on_thread.take(), || shared.stop()) {
        (_, Some(signal)) => Err(signal),
        (taken, None) => Ok(taken.flatten()),
    }
}

/// Runs `call` on a thread of its own and waits for its answer without the
/// GIL, taking it back every [`SLICE`] to let Python run its signal
/// handlers. When one raised, `interrupt` is called (it must make `call`
/// return soon) and the answer is still waited for: both are returned. A
/// panic of `call` is passed on.
///
/// The thread owns what it uses (not a scoped thread borrowing from this
/// frame): at interpreter exit this caller may never come back from its
/// wait (see [`detached`]), and the call finishes on its own.
fn on_own_thread<R: Send + 'static, C: FnOnce() -> R + Send + 'static>(
    py: Python<'_>,
    call: C,
    interrupt: impl FnOnce(),
) -> (Option<R>, Option<PyErr>) {
    let (done, mut result) = mpsc::channel();
    // The call goes to the thread once it exists: where none can be made
    // (out of memory or threads), it runs here, without Ctrl-C.
    let (hand_over, handed) = mpsc::channel::<C>();
    let spawned = std::thread::Builder::new().spawn(move || {
        if let Ok(call) = handed.recv() {
            // The receiver waits for this answer whatever happens.
            let _ = done.send(call());
        }
    });
    let Ok(thread) = spawned else {
        return (Some(detached(py, call)), None);
    };
    // The thread waits for it (it ends only after receiving).
    let _ = hand_over.send(call);
    loop {
        // The receiver goes along into the wait and back: it is not
        // to be shared between threads.
        let (received, back) = detached(py, move || (result.recv_timeout(SLICE), result));
        result = back;
        match received {
            Ok(answer) => return (Some(answer), None),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => return (None, None),
            },
        }
        if let Err(signal) = py.check_signals() {
            interrupt();
            return (detached(py, move || result.recv()).ok(), Some(signal));
        }
    }
}

/// A timeout in seconds from Python, checked: `None` waits for ever, and so
/// does a timeout too long to represent (infinity among them), as one too
/// far to reach does; negative and NaN are refused.
pub(crate) fn timeout(py: Python<'_>, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(seconds) if seconds.is_nan() || seconds < 0.0 => Err(errors::argument(
            py,
            format!("timeout must be a number of seconds >= 0 or None, got {seconds}"),
        )),
        Some(seconds) => Ok(Duration::try_from_secs_f64(seconds).ok()),
    }
}

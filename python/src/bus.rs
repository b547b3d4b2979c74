//! `filebus_rs.Bus`: a data file path and the options every producer and
//! consumer made from it shares, checked once here so that a wrong value
//! fails where it was written rather than at the first publish.

use std::ffi::OsStr;
use std::num::NonZeroU64;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use filebus::{BusOptions, HistoryOptions, Mode, ProducerOptions, Start};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};

use crate::consumer::Consumer;
use crate::errors;
use crate::history::HistoryConsumer;
use crate::producer::Producer;

/// A bus on one data file. Creating it touches nothing on disk; the
/// producers and consumers made from it do.
///
/// Args:
///     path: the data file (str, bytes or os.PathLike), as the command's
///         ``--filename``.
///     lossless: back pressure (``--lossless``): each chunk goes to exactly
///         one consumer, producers wait for it to be taken, and closing a
///         producer ends the stream. Otherwise lossy multicast: every
///         consumer sees the latest chunk, slow ones skip.
///     block_size: the largest chunk ``Producer.write`` publishes, in bytes
///         (``--block-size``); ``Producer.publish`` publishes what it is
///         given as one chunk whatever its size.
///     sleep_interval: seconds; the longest any wait lasts before it looks
///         at the bus again, even with file events (``--sleep-interval``).
///     file_monitoring: wake on file events (inotify) as well as by polling.
#[pyclass(module = "filebus_rs", frozen)]
pub(crate) struct Bus {
    bus: filebus::Bus,
    block_size: usize,
}

#[pymethods]
impl Bus {
    #[new]
    #[pyo3(signature = (path, lossless = false, block_size = 4096, sleep_interval = 0.1, file_monitoring = true))]
    fn new(
        py: Python<'_>,
        path: Bound<'_, PyAny>,
        lossless: bool,
        block_size: i64,
        sleep_interval: f64,
        file_monitoring: bool,
    ) -> PyResult<Self> {
        let path = fs_path(&path)?;
        if path.as_os_str().is_empty() {
            return Err(errors::argument(py, "path must not be empty".into()));
        }
        let block_size = usize::try_from(block_size)
            .ok()
            .filter(|&size| size >= 1)
            .ok_or_else(|| {
                errors::argument(
                    py,
                    format!("block_size must be at least 1, got {block_size}"),
                )
            })?;
        let sleep_interval = Duration::try_from_secs_f64(sleep_interval)
            .ok()
            .filter(|interval| !interval.is_zero())
            .ok_or_else(|| {
                errors::argument(
                    py,
                    format!("sleep_interval must be a number of seconds > 0, got {sleep_interval}"),
                )
            })?;
        let mode = if lossless {
            Mode::Lossless
        } else {
            Mode::Lossy
        };
        let options = BusOptions::default()
            .with_mode(mode)
            .with_sleep_interval(sleep_interval)
            .with_file_monitoring(file_monitoring);
        Ok(Bus {
            bus: filebus::Bus::new(path, options),
            block_size,
        })
    }

    /// The data file path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.bus.path().to_path_buf()
    }

    /// Whether the bus is lossless (back pressure).
    #[getter]
    fn lossless(&self) -> bool {
        self.bus.options().mode == Mode::Lossless
    }

    /// The largest chunk ``Producer.write`` publishes, in bytes.
    #[getter]
    fn block_size(&self) -> usize {
        self.block_size
    }

    /// The longest a wait lasts before looking at the bus again, in seconds.
    #[getter]
    fn sleep_interval(&self) -> f64 {
        self.bus.options().sleep_interval.as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!(
            "filebus_rs.Bus({:?}, lossless={}, block_size={}, sleep_interval={})",
            self.bus.path(),
            if self.lossless() { "True" } else { "False" },
            self.block_size,
            self.sleep_interval()
        )
    }

    /// A producer on this bus; creates the data file's directory if missing.
    ///
    /// Args:
    ///     retain: keep the newest ``retain`` chunks as a numbered history
    ///         for history consumers (``--retain``; lossy buses only).
    #[pyo3(signature = (retain = None))]
    fn producer(&self, py: Python<'_>, retain: Option<i64>) -> PyResult<Producer> {
        let retain = retain
            .map(|keep| {
                u64::try_from(keep)
                    .ok()
                    .and_then(NonZeroU64::new)
                    .ok_or_else(|| {
                        errors::argument(py, format!("retain must be at least 1, got {keep}"))
                    })
            })
            .transpose()?;
        let options = ProducerOptions::default().with_retain(retain);
        let producer = crate::wait::detached(py, || self.bus.producer_with(options))
            .map_err(|error| errors::from_library(py, error, "producer"))?;
        Producer::new(py, producer, self.block_size, self.lossless())
    }

    /// A consumer on this bus. It waits for the data file (and its
    /// directory) to appear.
    fn consumer(&self, py: Python<'_>) -> PyResult<Consumer> {
        let consumer = self
            .bus
            .consumer()
            .map_err(|error| errors::from_library(py, error, "consumer"))?;
        Consumer::new(py, consumer)
    }

    /// A consumer of the retained history (``consumer --history``): every
    /// numbered chunk in order, and a ``Loss`` for those it fell too far
    /// behind to get. Lossy buses only.
    ///
    /// Args:
    ///     start: ``"oldest"`` retained chunk, ``"newest"``, or a sequence
    ///         number (``--start``).
    ///     position_file: a file recording the last chunk delivered, to
    ///         resume from after a restart (``--position-file``).
    ///     subscribe: the name of a durable subscription
    ///         (``--subscribe``), which producers with ``retain`` wait for.
    ///     strict: raise ``FellBehindError`` instead of reporting a loss
    ///         and going on (``--strict``).
    #[pyo3(
        signature = (start = None, position_file = None, subscribe = None, strict = false),
        text_signature = "($self, start='oldest', position_file=None, subscribe=None, strict=False)"
    )]
    fn history_consumer(
        &self,
        py: Python<'_>,
        start: Option<Bound<'_, PyAny>>,
        position_file: Option<Bound<'_, PyAny>>,
        subscribe: Option<String>,
        strict: bool,
    ) -> PyResult<HistoryConsumer> {
        let start = parse_start(py, start)?;
        let position_file = position_file.as_ref().map(fs_path).transpose()?;
        let options = HistoryOptions::default()
            .with_start(start)
            .with_position_file(position_file)
            .with_subscribe(subscribe)
            .with_strict(strict);
        let consumer = crate::wait::detached(py, || self.bus.history_consumer(options))
            .map_err(|error| errors::from_library(py, error, "history consumer"))?;
        HistoryConsumer::new(py, consumer)
    }

    /// Removes the durable subscription ``name``: producers stop waiting
    /// for it. Raises ``SubscriberRunningError`` while a process runs it and
    /// ``NoSubscriberError`` when the bus has no such subscription.
    fn unsubscribe(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        crate::wait::detached(py, || self.bus.unsubscribe(name))
            .map_err(|error| errors::from_library(py, error, "bus"))
    }
}

/// `start` as Python gives it: `None` (the default, "oldest"), "oldest",
/// "newest" or a sequence number.
fn parse_start(py: Python<'_>, start: Option<Bound<'_, PyAny>>) -> PyResult<Start> {
    let Some(start) = start else {
        return Ok(Start::Oldest);
    };
    let wrong = |got: String| {
        errors::argument(
            py,
            format!("start must be \"oldest\", \"newest\" or a sequence number >= 1, got {got}"),
        )
    };
    if let Ok(name) = start.cast::<PyString>() {
        return match &*name.to_cow()? {
            "oldest" => Ok(Start::Oldest),
            "newest" => Ok(Start::Newest),
            other => Err(wrong(format!("{other:?}"))),
        };
    }
    if start.is_instance_of::<PyInt>() && !start.is_instance_of::<PyBool>() {
        return match start.extract::<u64>() {
            Ok(seq) if seq >= 1 => Ok(Start::Seq(seq)),
            _ => Err(wrong(start.repr()?.to_string())),
        };
    }
    Err(PyTypeError::new_err(format!(
        "start must be a str or an int, not {}",
        start.get_type().name()?
    )))
}

/// A path argument as Python's own file functions take one: a `str`, a
/// `bytes` (the file name's bytes as they are) or an `os.PathLike` of
/// either, through `os.fspath`, whose `TypeError` names what is expected.
fn fs_path(path: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let path = path.py().import("os")?.call_method1("fspath", (path,))?;
    match path.cast::<PyBytes>() {
        Ok(bytes) => Ok(PathBuf::from(OsStr::from_bytes(bytes.as_bytes()))),
        Err(_) => path.extract(),
    }
}

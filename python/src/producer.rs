//! `filebus_rs.Producer`: publishing from Python, from any number of
//! threads (one publish at a time), as a context manager whose normal exit
//! ends a lossless stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyType;

use crate::errors;
use crate::wait::{self, Shared};

/// The writing side of a bus, from ``Bus.producer()``. Safe to share
/// between threads: publishes from several threads go out one at a time,
/// each chunk whole.
///
/// In lossless mode ``publish`` first waits, without the GIL, until a
/// consumer took the previous chunk; ``close()`` from another thread ends
/// that wait (``ClosedError``), and so does Ctrl-C (``KeyboardInterrupt``),
/// which closes the producer without ending the stream.
///
/// Use it as a context manager: leaving the block normally ends the stream
/// (``close()``); leaving it with an exception closes without ending it, as
/// a producer that died would, so that consumers do not take a stream cut
/// short for a whole one.
#[pyclass(module = "filebus_rs", frozen)]
pub(crate) struct Producer {
    /// Shared with the thread a waiting call runs on (see `wait`).
    inner: Arc<Shared<filebus::Producer>>,
    block_size: usize,
    lossless: bool,
    /// Whether a publish may wait for other processes (see `publish_all`).
    may_wait: bool,
    /// The library producer's `last_seq` after its last publish (0: none,
    /// sequence numbers start at 1), kept here so that reading it never
    /// waits for another thread's publish, which may wait for as long as
    /// a subscriber holds it back.
    last_seq: Arc<AtomicU64>,
}

impl Producer {
    pub(crate) fn new(
        py: Python<'_>,
        mut producer: filebus::Producer,
        block_size: usize,
        lossless: bool,
    ) -> PyResult<Self> {
        let stop = producer
            .stopper()
            .map_err(|error| errors::from_library(py, error, "producer"))?;
        let may_wait = lossless || producer.options().retain.is_some();
        let last_seq = Arc::new(AtomicU64::new(producer.last_seq().unwrap_or(0)));
        Ok(Producer {
            inner: Arc::new(Shared::new(producer, stop)),
            block_size,
            lossless,
            may_wait,
            last_seq,
        })
    }

    /// Publishes `data` without the GIL: whole, or in consecutive chunks of
    /// at most `block` bytes, in order, none torn. A producer that may wait
    /// for others (lossless, or held back by subscribers with `retain`)
    /// publishes on a thread of its own, so that Ctrl-C ends the wait; a
    /// plain lossy one never waits but for the bus lock, and spares the
    /// thread.
    fn publish_all(
        &self,
        py: Python<'_>,
        data: PyBackedBytes,
        block: Option<usize>,
    ) -> PyResult<()> {
        let last_seq = Arc::clone(&self.last_seq);
        let publish = move |producer: &mut filebus::Producer| {
            let mut publish_one = |chunk: &[u8]| {
                let published = producer.publish(chunk);
                note_last_seq(&last_seq, producer);
                published
            };
            match block {
                None => publish_one(&data),
                Some(block) => data.chunks(block).try_for_each(publish_one),
            }
        };
        if self.may_wait {
            return wait::interruptible(py, &self.inner, "producer", publish);
        }
        crate::wait::detached(py, || self.inner.with(publish))
            .unwrap_or(Err(filebus::Error::Stopped))
            .map_err(|error| errors::from_library(py, error, "producer"))
    }
}

#[pymethods]
impl Producer {
    /// Publishes ``data`` (bytes or bytearray) as one chunk, whatever its
    /// size. In lossless mode it first waits until the previous chunk was
    /// taken; an empty chunk would end the stream there, so it is refused
    /// (``close()`` ends the stream).
    fn publish(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<()> {
        if self.lossless && data.is_empty() {
            return Err(errors::argument(
                py,
                "an empty chunk would end a lossless stream; close() the producer to end it".into(),
            ));
        }
        self.publish_all(py, data, None)
    }

    /// Publishes ``data`` as consecutive chunks of at most the bus's
    /// ``block_size`` bytes, as the command's producer cuts its input, and
    /// returns its length; nothing for empty data. For file-like use
    /// (``shutil.copyfileobj(src, producer)``).
    fn write(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<usize> {
        let len = data.len();
        self.publish_all(py, data, Some(self.block_size))?;
        Ok(len)
    }

    /// With ``retain``: the sequence number of the chunk published last
    /// (the end chunk, once ``close()`` published one). Never waits for
    /// another thread's ``publish``.
    #[getter]
    fn last_seq(&self) -> Option<u64> {
        Some(self.last_seq.load(Ordering::Acquire)).filter(|&seq| seq > 0)
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes the producer. With ``end_stream`` (the default) it first ends
    /// the stream: a lossless producer publishes the end marker (waiting,
    /// as ``publish`` does, for the last chunk to be taken), a producer with
    /// ``retain`` publishes its end chunk. Another thread's ``publish``
    /// waiting for a consumer ends with ``ClosedError``. Closing again does
    /// nothing.
    #[pyo3(signature = (end_stream = true))]
    fn close(&self, py: Python<'_>, end_stream: bool) -> PyResult<()> {
        if !end_stream {
            self.inner.stop();
        }
        // A publish in progress finishes (or, stopped, gives up) first;
        // Ctrl-C meanwhile stops it and closes without ending the stream.
        let Some(producer) = wait::take_interruptible(py, &self.inner)? else {
            return Ok(());
        };
        if !end_stream {
            return Ok(());
        }
        if !self.may_wait {
            return crate::wait::detached(py, || producer.finish())
                .map_err(|error| errors::from_library(py, error, "producer"));
        }
        // The end marker (what `finish` publishes where there is one) may
        // wait as a publish does: Ctrl-C ends that too.
        let mut producer = producer;
        let stop = match producer.stopper() {
            Ok(stop) => stop,
            Err(error) => return Err(errors::from_library(py, error, "producer")),
        };
        let ending = Arc::new(Shared::new(producer, stop));
        let last_seq = Arc::clone(&self.last_seq);
        let finish = move |producer: &mut filebus::Producer| {
            let published = producer.publish(&[]);
            note_last_seq(&last_seq, producer);
            published
        };
        wait::interruptible(py, &ending, "producer", finish)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Ends the stream when the block finished normally (see ``close``).
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyType>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py, exc_type.is_none())?;
        Ok(false)
    }
}

fn note_last_seq(last_seq: &AtomicU64, producer: &filebus::Producer) {
    if let Some(seq) = producer.last_seq() {
        last_seq.store(seq, Ordering::Release);
    }
}

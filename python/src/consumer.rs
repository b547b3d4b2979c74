//! `filebus_rs.Consumer`: receiving chunks in Python as bytes, by
//! iteration, with a timeout, or with `async for`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors;
use crate::wait::{Shared, sliced};

/// The reading side of a bus, from ``Bus.consumer()``.
///
/// Iterating yields each chunk as bytes and, lossless, stops at the end of
/// the stream. ``recv(timeout)`` returns one chunk, ``None`` when the
/// timeout passed with nothing, and ``b""`` at the end of a lossless stream
/// (and for ever after), as a file's ``read`` does at its end. ``async
/// for`` works too. Waits run without the GIL and end on Ctrl-C
/// (``KeyboardInterrupt``) within about 20 ms.
///
/// ``close()``, leaving a ``with`` block, or garbage collection releases
/// the consumer's files; a ``recv`` waiting in another thread then raises
/// ``ClosedError``.
#[pyclass(module = "filebus_rs", frozen)]
pub(crate) struct Consumer {
    inner: Shared<filebus::Consumer>,
}

impl Consumer {
    pub(crate) fn new(py: Python<'_>, mut consumer: filebus::Consumer) -> PyResult<Self> {
        let stop = consumer
            .stopper()
            .map_err(|error| errors::from_library(py, error, "consumer"))?;
        Ok(Consumer {
            inner: Shared::new(consumer, stop),
        })
    }

    /// The next chunk (empty at the end of a lossless stream), or `None`
    /// when `timeout` passed.
    fn next_chunk<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<std::time::Duration>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let received = sliced(py, &self.inner, "consumer", timeout, |consumer, slice| {
            consumer.recv_timeout(slice)
        })?;
        Ok(received.map(|chunk| PyBytes::new(py, chunk.as_deref().unwrap_or_default())))
    }
}

#[pymethods]
impl Consumer {
    /// The next chunk: bytes; ``None`` when ``timeout`` seconds passed with
    /// nothing (``timeout=None`` waits for ever, ``0`` only looks); ``b""``
    /// at the end of a lossless stream. Lossy, the newest chunk not yet
    /// received (chunks published meanwhile are skipped).
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let timeout = crate::wait::timeout(py, timeout)?;
        self.next_chunk(py, timeout)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let chunk = self.next_chunk(py, None)?;
        Ok(chunk.filter(|chunk| !chunk.as_bytes().is_empty()))
    }

    /// ``async for chunk in consumer``: see ``filebus_rs._aio``.
    fn __aiter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("filebus_rs._aio")?
            .getattr("chunks")?
            .call1((slf,))
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Releases the consumer's files; a ``recv`` waiting in another thread
    /// raises ``ClosedError``. Closing again does nothing.
    fn close(&self, py: Python<'_>) {
        self.inner.stop();
        drop(crate::wait::detached(py, || self.inner.take()));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }
}

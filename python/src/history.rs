//! `filebus_rs.HistoryConsumer` and what it yields: the retained history's
//! chunks with their sequence numbers, and loss reports, as Python objects.

use std::time::Duration;

use filebus::HistoryEvent;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors;
use crate::wait::{Shared, sliced};

/// One chunk of the history: ``seq`` is its sequence number, or ``None``
/// for a chunk published without one (by a producer without ``retain``,
/// or the original ``filebus``), delivered in its place in the order.
#[pyclass(module = "filebus_rs", frozen, get_all)]
pub(crate) struct Chunk {
    /// The sequence number, or ``None`` for an unsequenced chunk.
    seq: Option<u64>,
    /// The chunk's content.
    data: Py<PyBytes>,
}

#[pymethods]
impl Chunk {
    fn __repr__(&self, py: Python<'_>) -> String {
        let seq = self.seq.map_or("None".into(), |seq| seq.to_string());
        format!(
            "Chunk(seq={seq}, data=<{} bytes>)",
            self.data.bind(py).as_bytes().len()
        )
    }
}

/// Chunks ``first`` to ``last`` were lost: the consumer fell too far behind
/// and the producer had pruned them. The next chunk is ``resume_at``.
#[pyclass(module = "filebus_rs", frozen, get_all)]
pub(crate) struct Loss {
    /// The first lost sequence number.
    first: u64,
    /// The last lost sequence number.
    last: u64,
    /// The sequence number delivery continues with.
    resume_at: u64,
}

#[pymethods]
impl Loss {
    fn __repr__(&self) -> String {
        format!(
            "Loss(first={}, last={}, resume_at={})",
            self.first, self.last, self.resume_at
        )
    }
}

/// The end of the stream, chunk ``seq``: the producer closed. Nothing
/// follows; iteration stops here.
#[pyclass(module = "filebus_rs", frozen, get_all)]
pub(crate) struct End {
    /// The end chunk's sequence number.
    seq: u64,
}

#[pymethods]
impl End {
    fn __repr__(&self) -> String {
        format!("End(seq={})", self.seq)
    }
}

/// A consumer of the retained history, from ``Bus.history_consumer()``.
///
/// Iterating yields ``Chunk`` and ``Loss`` objects in order and stops at
/// the end of the stream. ``recv(timeout)`` returns one of them, an
/// ``End`` at the end (and for ever after), or ``None`` when the timeout
/// passed with nothing. ``async for`` works too. Waits run without the GIL
/// and end on Ctrl-C within about 20 ms.
///
/// ``close()``, leaving a ``with`` block, or garbage collection releases
/// its files and, for a durable subscription, the subscription's lock.
#[pyclass(module = "filebus_rs", frozen)]
pub(crate) struct HistoryConsumer {
    inner: Shared<filebus::HistoryConsumer>,
    /// The end chunk's sequence number, once received.
    ended: std::sync::OnceLock<u64>,
}

impl HistoryConsumer {
    pub(crate) fn new(py: Python<'_>, mut consumer: filebus::HistoryConsumer) -> PyResult<Self> {
        let stop = consumer
            .stopper()
            .map_err(|error| errors::from_library(py, error, "history consumer"))?;
        Ok(HistoryConsumer {
            inner: Shared::new(consumer, stop),
            ended: std::sync::OnceLock::new(),
        })
    }

    /// The next event as a Python object, or `None` when `timeout` passed.
    fn next_event(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Py<PyAny>>> {
        // Closed is closed, as for a `Consumer`, even after the end.
        if self.inner.is_closed() {
            return Err(errors::closed(py, "history consumer"));
        }
        if let Some(&seq) = self.ended.get() {
            return Ok(Some(Py::new(py, End { seq })?.into_any()));
        }
        let received = sliced(
            py,
            &self.inner,
            "history consumer",
            timeout,
            |consumer, slice| consumer.recv_timeout(slice),
        )?;
        let Some(event) = received else {
            return Ok(None);
        };
        let object = match event {
            Some(HistoryEvent::Chunk { seq, data }) => Py::new(
                py,
                Chunk {
                    seq: Some(seq),
                    data: PyBytes::new(py, &data).unbind(),
                },
            )?
            .into_any(),
            Some(HistoryEvent::Unsequenced(data)) => Py::new(
                py,
                Chunk {
                    seq: None,
                    data: PyBytes::new(py, &data).unbind(),
                },
            )?
            .into_any(),
            Some(HistoryEvent::Lost(loss)) => Py::new(
                py,
                Loss {
                    first: loss.first,
                    last: loss.last,
                    resume_at: loss.resume_at,
                },
            )?
            .into_any(),
            Some(HistoryEvent::End { seq }) => {
                let seq = *self.ended.get_or_init(|| seq);
                Py::new(py, End { seq })?.into_any()
            }
            // The library returns nothing more only after an end it
            // reported, which `ended` answers above; an event kind added
            // to the library later raises `ClosedError` here until this
            // layer learns it.
            None | Some(_) => return Err(errors::closed(py, "history consumer")),
        };
        Ok(Some(object))
    }
}

#[pymethods]
impl HistoryConsumer {
    /// The next event: a ``Chunk``, a ``Loss``, or an ``End`` at the end of
    /// the stream; ``None`` when ``timeout`` seconds passed with nothing
    /// (``timeout=None`` waits for ever, ``0`` only looks).
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let timeout = crate::wait::timeout(py, timeout)?;
        self.next_event(py, timeout)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let event = self.next_event(py, None)?;
        Ok(event.filter(|event| !event.bind(py).is_instance_of::<End>()))
    }

    /// ``async for event in consumer``: see ``filebus_rs._aio``.
    fn __aiter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("filebus_rs._aio")?
            .getattr("events")?
            .call1((slf,))
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Releases the consumer's files and, for a durable subscription, its
    /// lock; a ``recv`` waiting in another thread raises ``ClosedError``.
    /// Closing again does nothing.
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

//! The native half of the Python module `filebus_rs`: a thin layer that
//! hands Python programs the library's bus in-process, instead of spawning
//! the `filebus` command and parsing its output. Python's side of the
//! package (python/filebus_rs/) re-exports these classes and adds what is
//! plainer in Python: the exception hierarchy and `async for`.
//!
//! One concept a file: `bus` (the options everyone on a bus shares),
//! `producer`, `consumer`, `history` (the history consumer and the objects
//! it yields), `wait` (blocking without holding the GIL and without
//! deafening Ctrl-C), `errors` (library errors as Python exceptions).

mod bus;
mod consumer;
mod errors;
mod history;
mod producer;
mod wait;

use pyo3::prelude::*;

/// The native classes of `filebus_rs`; import them from `filebus_rs`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<bus::Bus>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<history::HistoryConsumer>()?;
    m.add_class::<history::Chunk>()?;
    m.add_class::<history::Loss>()?;
    m.add_class::<history::End>()?;
    wait::watch_exit(m)?;
    Ok(())
}

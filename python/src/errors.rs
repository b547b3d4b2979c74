//! Library errors as Python exceptions of one hierarchy under
//! `filebus_rs.Error`. The classes are written in Python
//! (python/filebus_rs/_errors.py), where a class can also derive from
//! `OSError`, `ValueError` or `LookupError`, so that code catching those
//! catches ours; this file only picks the class and its arguments.

use pyo3::call::PyCallArgs;
use pyo3::prelude::*;

/// The exception `class` of `filebus_rs._errors`, made with `args`.
fn raise<'py>(py: Python<'py>, class: &str, args: impl PyCallArgs<'py>) -> PyErr {
    let made = py
        .import("filebus_rs._errors")
        .and_then(|errors| errors.getattr(class))
        .and_then(|class| class.call1(args));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(failed) => failed,
    }
}

/// `filebus_rs.ArgumentError`: a value the caller passed is wrong.
pub(crate) fn argument(py: Python<'_>, message: String) -> PyErr {
    raise(py, "ArgumentError", (message,))
}

/// `filebus_rs.ClosedError`: the producer or consumer was closed.
pub(crate) fn closed(py: Python<'_>, what: &str) -> PyErr {
    raise(py, "ClosedError", (format!("this {what} is closed"),))
}

/// The Python exception for a library error.
pub(crate) fn from_library(py: Python<'_>, error: filebus::Error, what: &str) -> PyErr {
    let message = error.to_string();
    match error {
        filebus::Error::Io { path, source, .. } => {
            raise(py, "FileError", (message, source.raw_os_error(), path))
        }
        filebus::Error::NotRemovable { path, source } => {
            raise(py, "FileError", (message, source.raw_os_error(), path))
        }
        filebus::Error::NotRegularFile { path, .. }
        | filebus::Error::Symlink { path }
        | filebus::Error::BadPosition { path } => {
            raise(py, "FileError", (message, None::<i32>, path))
        }
        // What stands in the way of a directory is what `mkdir -p` would
        // have met: Python's errno for it, as OSError subclasses carry.
        filebus::Error::NotDirectory { path, .. } => {
            raise(py, "FileError", (message, errno(py, "ENOTDIR"), path))
        }
        // What making `F.lock` or `F.__new__` would have met.
        filebus::Error::NameTooLong { path, .. } => {
            raise(py, "FileError", (message, errno(py, "ENAMETOOLONG"), path))
        }
        filebus::Error::Unsettled { path, source } => {
            raise(py, "FileError", (message, source.raw_os_error(), path))
        }
        filebus::Error::Input(source) | filebus::Error::Output(source) => raise(
            py,
            "FileError",
            (message, source.raw_os_error(), None::<String>),
        ),
        filebus::Error::Incompatible(_) | filebus::Error::BadSubscriberName { .. } => {
            raise(py, "ArgumentError", (message,))
        }
        filebus::Error::FellBehind { loss, .. } => raise(
            py,
            "FellBehindError",
            (message, loss.first, loss.last, loss.resume_at),
        ),
        filebus::Error::SubscriberRunning { name, pid, .. } => {
            raise(py, "SubscriberRunningError", (message, name, pid))
        }
        filebus::Error::NoSubscriber { name, .. } => {
            raise(py, "NoSubscriberError", (message, name))
        }
        filebus::Error::Stopped => closed(py, what),
        _ => raise(py, "Error", (message,)),
    }
}

/// The number Python's `errno` module gives `name`.
fn errno(py: Python<'_>, name: &str) -> Option<i32> {
    py.import("errno")
        .and_then(|errno| errno.getattr(name))
        .and_then(|code| code.extract::<i32>())
        .ok()
}

"""The exceptions of filebus_rs: one hierarchy under ``Error``.

Written in Python rather than in the native module so that a class can also
derive from the built-in exception a caller would catch for the same
failure (``OSError``, ``ValueError``, ``LookupError``). The native module
raises them by name.
"""

from __future__ import annotations

import os
from typing import Optional


class Error(Exception):
    """Base class of every exception filebus_rs raises for the bus."""


class FileError(Error, OSError):
    """A bus file could not be used: a system call failed on it, it is not
    a regular file, it is a symbolic link (never followed), or a position
    file holds no sequence number. ``errno`` and ``filename`` are set when
    known; the message is the library's one line."""

    def __init__(
        self, message: str, errno: Optional[int] = None, filename: Optional[os.PathLike[str]] = None
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.strerror = os.strerror(errno) if errno is not None else None
        self.filename = os.fspath(filename) if filename is not None else None

    def __str__(self) -> str:
        return str(self.args[0])

    # Pickling (multiprocessing sends a worker's exception back so) makes
    # the exception again from what its constructor took.
    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.args[0], self.errno, self.filename))


class ArgumentError(Error, ValueError):
    """An argument has a value that cannot work (a block size of 0, a
    negative timeout, retained history on a lossless bus, a bad subscriber
    name). Arguments of the wrong type raise ``TypeError``, as in Python."""


class FellBehindError(Error):
    """A strict history consumer fell behind the retained history: chunks
    ``first`` to ``last`` are gone; ``resume_at`` is the oldest retained."""

    def __init__(self, message: str, first: int, last: int, resume_at: int) -> None:
        super().__init__(message)
        self.first = first
        self.last = last
        self.resume_at = resume_at

    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.args[0], self.first, self.last, self.resume_at))


class SubscriberRunningError(Error):
    """The durable subscription ``name`` is run by another process (its
    ``pid`` when the system tells), so it cannot be run twice or removed."""

    def __init__(self, message: str, name: str, pid: Optional[int]) -> None:
        super().__init__(message)
        self.name = name
        self.pid = pid

    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.args[0], self.name, self.pid))


class NoSubscriberError(Error, LookupError):
    """``Bus.unsubscribe`` was asked for a subscription the bus lacks."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name

    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.args[0], self.name))


class ClosedError(Error):
    """The producer or consumer was closed (possibly by another thread
    while this call waited)."""

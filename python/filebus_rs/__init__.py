"""filebus_rs: the filebus bus in-process, for Python programs.

A bus is one data file; producers publish chunks of bytes on it and any
number of consumers receive them, across processes and with the ``filebus``
command (this package's and the original Python one) on the same file.

    import filebus_rs

    bus = filebus_rs.Bus("/tmp/x.filebus", lossless=True)
    with bus.producer() as producer:      # leaving the block ends the stream
        producer.publish(b"chunk")

    for chunk in bus.consumer():          # in another process: bytes, until the end
        ...

See docs/python.md in the repository for the whole interface.
"""

from ._errors import (
    ArgumentError,
    ClosedError,
    Error,
    FellBehindError,
    FileError,
    NoSubscriberError,
    SubscriberRunningError,
)
from ._native import Bus, Chunk, Consumer, End, HistoryConsumer, Loss, Producer

__all__ = [
    "ArgumentError",
    "Bus",
    "Chunk",
    "ClosedError",
    "Consumer",
    "End",
    "Error",
    "FellBehindError",
    "FileError",
    "HistoryConsumer",
    "Loss",
    "NoSubscriberError",
    "Producer",
    "SubscriberRunningError",
]

"""``async for`` over consumers, without a thread per consumer.

The library tells a waiting consumer of a new chunk through file events it
reads in a blocking wait; it exposes no descriptor an event loop could
watch. So an async iteration never blocks the loop: it asks for a chunk
without waiting (``recv(0)``, a few system calls without the GIL) and,
when there is none, sleeps on the loop, from ``FIRST_PAUSE`` doubling up
to ``MAX_PAUSE`` while the bus stays quiet, and from ``FIRST_PAUSE`` again
after each chunk. A busy stream is thus read at full speed, and an idle
consumer costs about 50 look-ups a second and hears of a new chunk within
``MAX_PAUSE``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Union

if TYPE_CHECKING:
    from ._native import Chunk, Consumer, HistoryConsumer, Loss

FIRST_PAUSE = 0.0005
MAX_PAUSE = 0.02


async def _until_end(recv: Callable[[], Any], is_end: Callable[[Any], bool]) -> AsyncIterator[Any]:
    """What ``recv()`` returns, waiting on the loop while it returns None
    (pauses from FIRST_PAUSE doubling to MAX_PAUSE), until ``is_end``."""
    pause = FIRST_PAUSE
    while True:
        item = recv()
        if item is None:
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
            continue
        if is_end(item):
            return
        pause = FIRST_PAUSE
        yield item


async def chunks(consumer: "Consumer") -> AsyncIterator[bytes]:
    """The chunks of ``consumer``, until the end of a lossless stream."""
    async for chunk in _until_end(lambda: consumer.recv(0), lambda chunk: not chunk):
        yield chunk


async def events(consumer: "HistoryConsumer") -> AsyncIterator[Union["Chunk", "Loss"]]:
    """The chunks and loss reports of ``consumer``, until the end."""
    from ._native import End

    async for event in _until_end(lambda: consumer.recv(0), lambda event: isinstance(event, End)):
        yield event

#!/usr/bin/env python3
"""filebus_rs in one script: a lossless stream between two threads, the
latest value on a lossy bus, the retained history with a loss report, and
three asyncio consumers at once.

    pip install .                      # from the repository: filebus + filebus_rs
    python examples/python_bus.py

The same buses work across processes and with the `filebus` command: while
this runs, `filebus --filename <dir>/lossy consumer` would print the values.
"""

import asyncio
import tempfile
import threading
from pathlib import Path

import filebus_rs


def lossless_stream(directory: Path) -> None:
    bus = filebus_rs.Bus(directory / "stream", lossless=True)
    consumer = bus.consumer()

    def produce() -> None:
        # Leaving the block ends the stream; the consumer's loop then stops.
        with bus.producer() as producer:
            for word in ("every", "chunk", "exactly", "once"):
                producer.publish(word.encode())

    threading.Thread(target=produce).start()
    print("lossless:", b" ".join(consumer).decode())


def latest_value(directory: Path) -> None:
    bus = filebus_rs.Bus(directory / "lossy")
    with bus.producer() as producer, bus.consumer() as consumer:
        producer.publish(b"20.5 C")
        producer.publish(b"21.0 C")
        # A consumer sees the latest value, then waits for the next one.
        print("latest:", consumer.recv(timeout=5), "then", consumer.recv(timeout=0.1))


def history(directory: Path) -> None:
    bus = filebus_rs.Bus(directory / "events")
    with bus.producer(retain=3) as producer:
        for n in range(1, 8):
            producer.publish(b"event %d" % n)
    # Only the newest three are kept (6, 7 and the end chunk 8): a consumer
    # starting at 1 learns what it lost, then gets the rest in order.
    for event in bus.history_consumer(start=1):
        if isinstance(event, filebus_rs.Loss):
            print(f"history: lost {event.first}-{event.last}, resuming at {event.resume_at}")
        else:
            print(f"history: #{event.seq} {event.data.decode()}")


async def with_asyncio(directory: Path) -> None:
    bus = filebus_rs.Bus(directory / "ticks")

    async def watch(name: str) -> str:
        async for chunk in bus.consumer():
            if chunk == b"3":
                break
        return name

    watchers = [asyncio.ensure_future(watch(name)) for name in ("a", "b", "c")]
    with bus.producer() as producer:
        for tick in (b"1", b"2", b"3"):
            producer.publish(tick)
            await asyncio.sleep(0.05)
    names = await asyncio.wait_for(asyncio.gather(*watchers), timeout=10)
    print(f"asyncio: {', '.join(names)} saw the last tick")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        lossless_stream(Path(directory))
        latest_value(Path(directory))
        history(Path(directory))
        asyncio.run(with_asyncio(Path(directory)))
    try:
        filebus_rs.Bus("/tmp/x", block_size=0)
    except filebus_rs.Error as error:
        print(f"errors: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()

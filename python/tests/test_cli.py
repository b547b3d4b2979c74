"""filebus_rs on one bus with the `filebus` command the same wheel
installed, and with the original Python filebus 0.3.5: lossless streams
byte for byte both ways, lossy latest values both ways, the retained
history in order with a loss report both ways."""

import os
import select
import subprocess
import threading
import time

import pytest

import filebus_rs
from conftest import drain, run_producer, spawn, wait_until


def random_bytes(size):
    return os.urandom(size)


def read_chunk(stream, deadline_s=30.0):
    """What a consumer process wrote next on its standard output."""
    ready, _, _ = select.select([stream], [], [], deadline_s)
    assert ready, "the command consumer wrote nothing in time"
    return os.read(stream.fileno(), 1 << 20)


@pytest.mark.parametrize(
    "size, block_size",
    [(3000, 1), (1 << 20, 4096), (300_000, 4097), (9 << 20, 4 << 20)],
)
def test_lossless_command_to_python_is_byte_exact(filebus, bus_path, size, block_size):
    data = random_bytes(size)
    consumer = filebus_rs.Bus(bus_path, lossless=True).consumer()
    producer = threading.Thread(
        target=run_producer,
        args=(filebus, bus_path, "--lossless", "--block-size", str(block_size)),
        kwargs={"data": data},
    )
    producer.start()
    chunks = drain(consumer)
    producer.join()
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= block_size
    # The end of the stream stays the end.
    assert consumer.recv(0) == b""


@pytest.mark.parametrize("size, block_size", [(2000, 1), (1 << 20, 4096), (9 << 20, 4 << 20)])
def test_lossless_python_to_command_is_byte_exact(filebus, bus_path, tmp_path, size, block_size):
    data = random_bytes(size)
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        consumer = spawn(filebus, bus_path, "consumer", "--lossless", stdout=sink)
    bus = filebus_rs.Bus(bus_path, lossless=True, block_size=block_size)
    with bus.producer() as producer:
        assert producer.write(data) == len(data)
    assert consumer.wait(timeout=120) == 0
    assert out.read_bytes() == data


def test_lossless_publish_keeps_each_chunk_whole(filebus, bus_path, tmp_path):
    # publish() is one chunk whatever the block size: the command's
    # consumer writes chunk by chunk, so a 1 MiB chunk arrives whole.
    chunks = [random_bytes(n) for n in (1, 4095, 4096, 4097, 1 << 20, 7)]
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        consumer = spawn(filebus, bus_path, "consumer", "--lossless", stdout=sink)
    with filebus_rs.Bus(bus_path, lossless=True, block_size=16).producer() as producer:
        for chunk in chunks:
            producer.publish(chunk)
    assert consumer.wait(timeout=60) == 0
    assert out.read_bytes() == b"".join(chunks)


def test_lossy_command_to_python_gives_the_latest_value(filebus, bus_path):
    producer = spawn(filebus, bus_path, "producer", stdin=subprocess.PIPE)
    try:
        for value in (b"first", b"second"):
            producer.stdin.write(value)
            producer.stdin.flush()
            wait_until(lambda: bus_path.exists() and bus_path.read_bytes() == value, value)
        consumer = filebus_rs.Bus(bus_path).consumer()
        # A newcomer gets the latest value only, then nothing until the next.
        assert consumer.recv(timeout=30) == b"second"
        assert consumer.recv(timeout=0.2) is None
        producer.stdin.write(b"third")
        producer.stdin.flush()
        assert consumer.recv(timeout=30) == b"third"
    finally:
        producer.stdin.close()
        assert producer.wait(timeout=30) == 0


def test_lossy_python_to_command_gives_the_latest_value(filebus, bus_path):
    producer = filebus_rs.Bus(bus_path).producer()
    producer.publish(b"v1")
    producer.publish(b"v2")
    consumer = spawn(filebus, bus_path, "consumer", stdout=subprocess.PIPE)
    try:
        assert read_chunk(consumer.stdout) == b"v2"
        producer.publish(b"v3")
        assert read_chunk(consumer.stdout) == b"v3"
    finally:
        consumer.kill()
        consumer.wait()
        consumer.stdout.close()
        producer.close()


def publish_numbered(filebus, bus_path, count, retain):
    """A command producer with --retain publishing c1..c<count>, each seen
    in the history before the next, then ending the stream."""
    producer = spawn(
        filebus, bus_path, "producer", role_options=("--retain", str(retain)), stdin=subprocess.PIPE
    )
    history = bus_path.parent / (bus_path.name + ".history")
    for k in range(1, count + 1):
        producer.stdin.write(b"c%d" % k)
        producer.stdin.flush()
        wait_until(lambda: (history / f"{k:020}").exists(), f"history entry {k}")
    producer.stdin.close()
    assert producer.wait(timeout=30) == 0


def test_history_from_command_in_order_with_a_loss_report(filebus, bus_path):
    publish_numbered(filebus, bus_path, 10, retain=3)
    # Retained: 9, 10 and the end chunk 11; chunks 1-8 are gone.
    consumer = filebus_rs.Bus(bus_path).history_consumer(start=1)
    events = list(consumer)
    assert [type(e).__name__ for e in events] == ["Loss", "Chunk", "Chunk"]
    loss = events[0]
    assert (loss.first, loss.last, loss.resume_at) == (1, 8, 9)
    assert [(e.seq, e.data) for e in events[1:]] == [(9, b"c9"), (10, b"c10")]
    end = consumer.recv(0)
    assert isinstance(end, filebus_rs.End) and end.seq == 11


def test_history_follows_a_live_command_producer_in_order(filebus, bus_path):
    consumer = filebus_rs.Bus(bus_path).history_consumer(start="oldest")
    events = []
    reader = threading.Thread(target=lambda: events.extend(consumer))
    reader.start()
    try:
        publish_numbered(filebus, bus_path, 40, retain=1000)
        reader.join(timeout=60)
        assert not reader.is_alive(), "the history consumer did not reach the end"
    finally:
        # Ends the reader's wait (ClosedError in it) if it is still there.
        consumer.close()
    assert [(e.seq, e.data) for e in events] == [(k, b"c%d" % k) for k in range(1, 41)]


def test_history_from_python_in_order_with_a_loss_report(filebus, bus_path):
    with filebus_rs.Bus(bus_path).producer(retain=3) as producer:
        for k in range(1, 11):
            producer.publish(b"c%d" % k)
            assert producer.last_seq == k
    done = subprocess.run(
        [filebus, "--filename", str(bus_path), "consumer", "--history", "--from", "1"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"c9c10"
    assert b"lost chunks 1-8 (fell behind); resuming at 9" in done.stderr


PEER_LOSSLESS = ("--back-pressure", "--sleep-interval", "0.01")


def test_lossless_original_to_python(peer, bus_path):
    data = random_bytes(300_000)
    consumer = filebus_rs.Bus(bus_path, lossless=True).consumer()
    producer = threading.Thread(
        target=run_producer, args=(peer, bus_path, *PEER_LOSSLESS), kwargs={"data": data}
    )
    producer.start()
    received = b"".join(drain(consumer))
    producer.join()
    assert received == data


def test_lossless_python_to_original(peer, bus_path, tmp_path):
    data = random_bytes(300_000)
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        consumer = spawn(peer, bus_path, "consumer", *PEER_LOSSLESS, stdout=sink)
    with filebus_rs.Bus(bus_path, lossless=True).producer() as producer:
        producer.write(data)
    assert consumer.wait(timeout=120) == 0
    assert out.read_bytes() == data


def test_lossy_original_to_python_gives_the_latest_value(peer, bus_path):
    consumer = filebus_rs.Bus(bus_path).consumer()
    producer = spawn(peer, bus_path, "producer", stdin=subprocess.PIPE)
    try:
        producer.stdin.write(b"from the original")
        producer.stdin.flush()
        assert consumer.recv(timeout=30) == b"from the original"
    finally:
        producer.stdin.close()
        assert producer.wait(timeout=30) == 0


def test_lossy_python_to_original(peer, bus_path):
    producer = filebus_rs.Bus(bus_path).producer()
    producer.publish(b"latest")
    consumer = spawn(peer, bus_path, "consumer", stdout=subprocess.PIPE)
    try:
        assert read_chunk(consumer.stdout) == b"latest"
    finally:
        consumer.kill()
        consumer.wait()
        consumer.stdout.close()
        producer.close()

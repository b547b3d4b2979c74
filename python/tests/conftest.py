"""What the tests of filebus_rs share: the installed `filebus` command and
the original's, waiting for a condition with a deadline, and the measured
figures the run reports at its end.

The tests run against the wheel installed into a fresh virtualenv
(scripts/wheel.sh): `filebus` is the command that wheel put beside the
interpreter, the original is named by FILEBUS_PEER (scripts/setup-peers.sh).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import filebus_rs

# The installed wheel's module, not a copy from the source tree.
assert filebus_rs.__file__.startswith(sys.prefix), filebus_rs.__file__

MEASURED = []


def wait_until(condition, what, timeout=30.0):
    """Waits for `condition()` to be true, failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def report(line):
    """A measured figure, printed in the run's summary."""
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def filebus():
    """The `filebus` command the wheel installed beside this interpreter."""
    command = Path(sys.executable).parent / "filebus"
    assert command.is_file(), f"the wheel installed no {command}"
    # The real binary, not a Python script calling it.
    assert command.read_bytes()[:4] == b"\x7fELF", f"{command} is not a native executable"
    return str(command)


@pytest.fixture(scope="session")
def peer():
    """The original filebus 0.3.5; missing, the tests that need it fail."""
    command = os.environ.get("FILEBUS_PEER")
    assert command and os.access(command, os.X_OK), (
        "FILEBUS_PEER must name the original filebus (scripts/setup-peers.sh prints it)"
    )
    return command


@pytest.fixture
def bus_path(tmp_path):
    return tmp_path / "bus"


def argv(command, bus_path, role, options, role_options):
    # The original takes its options before the role only.
    return [command, "--filename", str(bus_path), *options, role, *role_options]


def run_producer(command, bus_path, *options, data=b"", role_options=()):
    """Runs a command-line producer to the end of `data`."""
    subprocess.run(
        argv(command, bus_path, "producer", options, role_options),
        input=data,
        check=True,
        timeout=120,
    )


def spawn(command, bus_path, role, *options, role_options=(), **kwargs):
    return subprocess.Popen(argv(command, bus_path, role, options, role_options), **kwargs)


def drain(consumer, timeout=60.0):
    """Every chunk of a lossless stream, up to its end; fails when nothing
    comes for `timeout` s (a producer that failed) instead of hanging."""
    chunks = []
    while True:
        chunk = consumer.recv(timeout)
        assert chunk is not None, f"nothing came for {timeout} s, after {len(chunks)} chunks"
        if not chunk:
            return chunks
        chunks.append(chunk)

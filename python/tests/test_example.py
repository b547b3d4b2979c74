"""examples/python_bus.py runs and prints what it says it shows."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_bus.py"


def test_the_example_script_runs():
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "lossless: every chunk exactly once",
        "latest: b'21.0 C' then None",
        "history: lost 1-5, resuming at 6",
        "history: #6 event 6",
        "history: #7 event 7",
        "asyncio: a, b, c saw the last tick",
        "errors: ArgumentError: block_size must be at least 1, got 0",
    ]

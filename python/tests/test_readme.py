"""The README's Python examples run as written against the installed module,
and print what their comments say (`print(...)  # hello` prints `hello`)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def test_every_readme_python_example_runs_and_prints_what_it_says():
    blocks = BLOCK.findall(README.read_text())
    assert blocks, "no Python example in README.md"
    for block in blocks:
        said = [
            line.split("#")[-1].strip() for line in block.splitlines() if line.lstrip().startswith("print(")
        ]
        done = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, cwd="/"
        )
        assert done.returncode == 0, f"{block}\n{done.stderr}"
        assert done.stdout.splitlines() == said, f"{block}\nprinted {done.stdout!r}"

"""Every ```python block of README.md runs against the real server, as its own program with
TICKWIRE_URL and TICKWIRE_TOKEN set: the README's examples cannot rot."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server import API_KEY

HERE = Path(__file__).resolve().parent
README = (HERE.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4, f"{len(BLOCKS)} blocks"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(srv, i):
    env = dict(os.environ, TICKWIRE_URL=srv.url, TICKWIRE_TOKEN=API_KEY,
               PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", BLOCKS[i]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"example {i + 1} failed:\n{BLOCKS[i]}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"

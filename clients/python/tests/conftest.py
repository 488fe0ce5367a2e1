import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Server  # noqa: E402


@pytest.fixture(scope="module")
def srv():
    s = Server()
    try:
        yield s
    finally:
        s.stop()

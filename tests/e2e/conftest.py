import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import BIN, Server  # noqa: E402


def pytest_sessionstart(session):
    if not BIN.exists():
        raise pytest.UsageError(f"{BIN} is missing: run `make build` first")


@pytest.fixture
def start(tmp_path):
    """start(plugins=[...], **server_settings) -> running Server (stopped at teardown)."""
    servers = []
    n = [0]

    def _start(plugins=None, extra="", **settings):
        n[0] += 1
        s = Server(tmp_path / f"srv{n[0]}", plugins=plugins, extra=extra, **settings)
        servers.append(s)
        return s.start()

    yield _start
    for s in servers:
        s.stop()

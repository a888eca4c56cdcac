"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback_http import LoopbackServer


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 serving files from a fresh directory, `http_server.root`."""
    root = tmp_path / "http_root"
    root.mkdir()
    with LoopbackServer(root) as server:
        yield server

"""Serve a file from tests/compat/servers/ in a subprocess, exactly as a user would run it."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from support.servers import Proc

HERE = Path(__file__).parent
SERVERS = HERE / "servers"


@contextlib.contextmanager
def serve_file(name: str, tmp_path: Path, env: dict[str, str] | None = None, ready: str = "/ready") -> Iterator[Proc]:
    """Run ``servers/<name>`` (copied into ``tmp_path``, so its client.py lands there) until /ready answers 200."""
    target = tmp_path / name
    shutil.copy(SERVERS / name, target)
    with Proc([sys.executable, str(HERE / "run_server.py"), "{port}", str(target)], tmp_path, env=env) as proc:
        proc.wait_http(ready, timeout=60)
        yield proc

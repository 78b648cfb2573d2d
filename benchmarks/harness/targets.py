"""The targets: servers under test, one small file each in benchmarks/targets/, and their life.

A target is a script that takes a port (``argv[1]`` or ``$PORT``) and serves its workload on
127.0.0.1 until SIGTERM. Adding one (a Ray Serve deployment, another framework, an OpenAI-style
streaming server) is adding its file: targets are discovered by file name (``<name>_app.py``), and
the file says which workload it serves with a module-level line ``WORKLOAD = "<kind>"`` (read as
text, never imported: a target's dependencies need not be installed where the harness runs):

- ``predict`` (the default): ``POST /predict {"input": x} -> {"output": x**2}``, driven by wrk (run.py);
- ``chat``: OpenAI's ``POST /v1/chat/completions`` streamed, driven by bench_openai.py.

Each run starts the target in its own session (so its whole process group can be sampled and
stopped), waits for a right answer, and stops it with SIGTERM, then SIGKILL, checking nothing is left.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import group_pids

HOST = "127.0.0.1"
TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
REPO_ROOT = TARGETS_DIR.parent.parent
SERVER_CPU, CLIENT_CPU = 0, 1  # --pin: server group on CPU 0, load generator (and the harness) on CPU 1
POLL_INTERVAL_S = 0.02
STOP_TIMEOUT_S = 10.0
# Known targets first, in this order (tables and comparisons follow it); new files after them by name.
ORDER = ["litserve", "starlette", "fastapi"]
_WORKLOAD = re.compile(r"""^WORKLOAD\s*=\s*["']([\w-]+)["']""", re.M)


@dataclass(frozen=True)
class TargetFile:
    name: str
    path: Path
    workload: str


def discover(workload: str | None = None) -> dict[str, TargetFile]:
    """Every ``targets/<name>_app.py``, by name (known ones first), optionally only one workload's."""
    found = {}
    for path in sorted(TARGETS_DIR.glob("*_app.py")):
        match = _WORKLOAD.search(path.read_text())
        kind = match.group(1) if match else "predict"
        if workload is None or kind == workload:
            name = path.name[: -len("_app.py")]
            found[name] = TargetFile(name, path, kind)
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def free_port() -> int:
    """Ask the kernel for an unused port (tiny race window; acceptable on a quiet box)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@dataclass
class Target:
    """A running target: its process (session/group leader), port and log file."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = float("nan")

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: the leader's pid is the group id

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def start_target(
    name: str, pin: bool, log_dir: Path, start_timeout_s: float, probe: Callable[[int], bool], path: Path | None = None
) -> Target:
    """Start a target in its own session and wait (polling, with a deadline) until ``probe(port)`` is True.

    ``probe`` is the workload's readiness check (a right answer, not just an open port); it may raise
    RuntimeError for a wrong answer.
    """
    port = free_port()
    cmd = [sys.executable, str(path or discover()[name].path), str(port)]
    if pin:  # affinity is inherited by every process the target forks or spawns
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    log_path = log_dir / f"{name}-{port}.log"
    # Repo root first on the path: benchmark this checkout's litserve, installed or not.
    pythonpath = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
        )
    target = Target(name, port, proc, log_path)
    deadline = t0 + start_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before answering:\n{target.log_tail()}")
        if probe(port):
            target.startup_s = time.perf_counter() - t0
            return target
        if time.perf_counter() > deadline:
            stop_target(target)
            raise RuntimeError(f"{name} gave no 200 within {start_timeout_s:.0f}s:\n{target.log_tail()}")
        time.sleep(POLL_INTERVAL_S)  # poll interval, not synchronisation: the loop re-checks the condition


def _wait_group_gone(target: Target, deadline: float) -> bool:
    """Poll until the leader is reaped and no live process of the group remains."""
    while True:
        if target.proc.poll() is not None and not group_pids(target.pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def stop_target(target: Target) -> dict[str, Any]:
    """SIGTERM the whole group, SIGKILL after a deadline, then verify nothing is left."""
    sent_kill = False
    t0 = time.monotonic()
    try:
        os.killpg(target.pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not _wait_group_gone(target, time.monotonic() + STOP_TIMEOUT_S):
        sent_kill = True
        try:
            os.killpg(target.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_group_gone(target, time.monotonic() + STOP_TIMEOUT_S)
    leftover = group_pids(target.pgid)
    still_listening = port_open(target.port)
    if leftover or still_listening:
        print(f"WARNING: {target.name} left pids {leftover} (port open: {still_listening})", file=sys.stderr)
    return {
        "sigkill_needed": sent_kill,
        "stop_s": round(time.monotonic() - t0, 3),
        "leftover_pids": leftover,
        "port_still_open": still_listening,
        "exit_code": target.proc.returncode,
    }

"""Helpers for tests that run a server in a subprocess: start it in its own session (so its whole
process group can be found and killed), read its output from a file, find what is left of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import HERE, free_port, pid_alive, wait_for

TESTS_DIR = str(HERE)


class Proc:
    """A subprocess in its own session; output goes to a file (no pipe to fill up)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path = cwd / f"output-{self.port}.txt"
        self._out = open(self.out_path, "w")
        pythonpath = os.pathsep.join(p for p in (TESTS_DIR, str(cwd), os.environ.get("PYTHONPATH")) if p)
        self.popen = subprocess.Popen(
            [a.replace("{port}", str(self.port)) for a in args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    @classmethod
    def python(cls, code_or_args: list[str], cwd: Path, **kw) -> Proc:
        return cls([sys.executable, *code_or_args], cwd, **kw)

    def output(self) -> str:
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    def group(self) -> list[int]:
        """Live (non-zombie) processes still in this subprocess's process group."""
        return group_pids(self.pid)

    def wait_group_gone(self, timeout: float = 10.0) -> None:
        """Every process of the group exits (multiprocessing's resource tracker a moment after the rest)."""
        if not poll_until(lambda: not self.group(), timeout):
            left = {pid: cmdline(pid) for pid in self.group()}
            raise AssertionError(f"processes outlived the server: {left}")

    def wait_http(self, path: str = "/health", timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"exited with {self.popen.returncode} before serving:\n{self.output()}")
            try:
                return httpx.get(self.url + path, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=timeout, interval=0.05)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout}s:\n{self.output()}") from None

    def cleanup(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in group_pids(self.pid):  # a child that left the group would not be reached above
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after its closing ")"
    return data[data.rindex(")") + 2 :].split()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def children(ppid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[1]) == ppid:
                out.add(int(entry))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = _stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_gone(pids: list[int] | set[int], timeout: float = 10.0) -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=timeout, interval=0.05)
    assert not any(pid_alive(p) for p in pids)


def poll_until(condition, timeout: float) -> bool:
    """True as soon as ``condition()`` holds, False at the deadline (for checks that report, not fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)  # poll interval, bounded by the deadline
    return bool(condition())

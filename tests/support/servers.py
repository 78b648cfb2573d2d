"""Servers on real sockets, always 127.0.0.1, always stopped: an app in a thread of the test process
(``ThreadServer``: its internals can be inspected), or a command in a subprocess of its own session
(``Proc``: its whole process group can be found and, whatever happens, killed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import uvicorn

from support.poll import poll_until, wait_for
from support.procs import cmdline, group_pids

TESTS_DIR = str(Path(__file__).resolve().parent.parent)  # where spawned workers find the tests' API modules


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """A real uvicorn server on 127.0.0.1 in a thread of the test process, for real-socket tests.

    ``ready=True``: entering also waits until ``/ready`` answers 200 (every API has a ready worker). A
    test whose requests have a short ``timeout`` needs it: on a loaded machine the workers may still be
    starting when the first request comes, and it would spend its whole timeout in the queue."""

    def __init__(self, app, port: int | None = None, ready: bool = False, **config: object) -> None:
        self.ready = ready
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", "lifespan": "on", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), timeout=60)
        if not self.server.started:
            raise RuntimeError("server failed to start")
        if self.ready:
            try:
                with httpx.Client(base_url=self.url, timeout=10) as client:
                    wait_for(lambda: client.get("/ready").status_code == 200, timeout=60, interval=0.02)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "server thread did not stop"


def serve_args(target: str, *flags: str) -> list[str]:
    """``Proc.python``'s arguments for ``litserve serve target`` on 127.0.0.1 at the free ``{port}``,
    on one CPU device, with ``flags`` after those."""
    host = ["--host", "127.0.0.1", "--port", "{port}", "--accelerator", "cpu", "--devices", "1"]
    return ["-m", "litserve", "serve", target, *host, *flags]


class Proc:
    """A subprocess in its own session; output goes to a file (no pipe to fill up). ``{port}`` in the
    arguments becomes a free port; the tests' directory and ``cwd`` are prepended to PYTHONPATH."""

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
        """``path`` answers 200; fail at once (with the output) if the process exits first."""

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

"""What is left of a process tree, read from /proc: live pids, a process group, children, CPU time."""

from __future__ import annotations

import os
from collections.abc import Iterable

from support.poll import wait_for


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after its closing ")"
    return data[data.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _live_where(field: int, value: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[field]) == value:
                pids.append(int(entry))
    return pids


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return _live_where(2, pgid)


def children(ppid: int) -> set[int]:
    """Live (non-zombie) children of ``ppid``."""
    return set(_live_where(1, ppid))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = _stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_gone(pids: Iterable[int], timeout: float = 10.0) -> None:
    """Every one of ``pids`` exits within ``timeout``; fail the test otherwise."""
    pids = list(pids)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=timeout, interval=0.05)

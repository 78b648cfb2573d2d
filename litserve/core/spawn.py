"""Start a worker process whatever process model the host server has.

``multiprocessing`` refuses to start a child from a daemonic process ("daemonic processes are not
allowed to have children"), and hypercorn runs its HTTP workers as daemonic ``multiprocessing``
processes, so a pool started there never ran. The rule exists because a daemonic process is
terminated when its parent exits, without a chance to reap children of its own, which could then be
orphaned. Our workers cannot be: each watches its parent's sentinel and exits the moment the parent
is gone (``worker._exit_with_parent``). So the flag is lifted for the one ``start()`` call.

Nothing else depends on the host: workers are always *spawned* (a fresh interpreter, whether the host
forks or not), and the pool can be started from any thread that runs an event loop.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.process import BaseProcess

_lock = threading.Lock()  # the daemon flag belongs to the whole process: one start at a time


def start_child(process: BaseProcess) -> None:
    """``process.start()``, also from inside a daemonic process."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    if not config.get("daemon"):
        process.start()
        return
    with _lock:
        config["daemon"] = False
        try:
            process.start()
        finally:
            config["daemon"] = True

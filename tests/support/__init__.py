"""What the tests share, one module per idea (import the module you need, e.g. ``from support.poll import
wait_for``):

- ``poll``: wait for a condition with a deadline (sync, failing or reporting; async) — never a bare sleep.
- ``servers``: a free port, an app on a real uvicorn socket in a thread (``ThreadServer``; ``ready=True``
  waits for ready workers too), a server in a subprocess of its own session (``Proc``), the
  ``litserve serve`` command line (``serve_args``).
- ``procs``: what is left of a process tree (``pid_alive``, ``group_pids``, ``children``, ``cpu_seconds``).
- ``http``: raw-socket requests (a request sent and left unread, one raw exchange), /metrics samples.

The LitAPI classes the tests serve stay in ``tests/apis*.py``: spawned workers import them by those names.
"""

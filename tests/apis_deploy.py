"""The app module the launcher tests serve: ``litserve serve apis_deploy:api``, ``uvicorn apis_deploy:app``,
gunicorn, hypercorn, granian, daphne. Creating the app spawns nothing; workers start in its lifespan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import litserve as ls


class DeployAPI(ls.LitAPI):
    """{"value": v, "sleep": s} -> {"value": v, "pid": worker pid, "ppid": its HTTP process}, after ``s`` seconds.

    With ``"mark": path`` the file is written when predict starts (the test then knows it is in flight);
    with ``"gate": path`` predict then waits until that file exists (at most 60 s), so the test decides
    when it ends.
    """

    def setup(self, device):
        self.device = device

    def predict(self, x):
        if x.get("mark"):
            Path(x["mark"]).write_text(str(os.getpid()))
        if x.get("gate"):
            gate, deadline = Path(x["gate"]), time.monotonic() + 60
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.005)  # model: a computation the test ends by creating the gate file
        if x.get("sleep"):
            time.sleep(float(x["sleep"]))  # model: a computation that takes this long
        return {"value": x.get("value"), "pid": os.getpid(), "ppid": os.getppid()}


api = DeployAPI()
app = ls.create_app(DeployAPI(), accelerator="cpu", devices=1, workers_per_device=1, timeout=30, shutdown_grace=10)
server = ls.LitServer(DeployAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=30)

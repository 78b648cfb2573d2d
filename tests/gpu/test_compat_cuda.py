"""LitServe's ``ls.test_examples.SimpleTorchAPI`` on a real GPU: ``self.device`` is set before ``setup``
(as LitServe sets it), so a docs-style API that moves its model and tensors to ``self.device`` runs
on each worker's GPU. Skipped where no GPU is visible (CI has none)."""

from __future__ import annotations

import httpx
import pytest
from support.servers import ThreadServer

import litserve as ls
from litserve.devices import cuda_device_count

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device visible")]


def test_simple_torch_api_runs_on_the_gpu():
    app = ls.create_app(ls.test_examples.SimpleTorchAPI(), accelerator="cuda", devices=1, timeout=120)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.get("/info").json()["workers"][0]["device"] == "cuda:0"
        for x in (1.0, 4.0):
            r = client.post("/predict", json={"input": x})
            assert r.status_code == 200 and r.json() == {"output": 2 * x + 1}

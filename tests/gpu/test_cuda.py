"""The multi-GPU path on real CUDA devices. Skipped where NVML sees no GPU (CI has none).

Run on a GPU machine with ``python -m pytest -q -m gpu tests/gpu``.
"""

from __future__ import annotations

import httpx
import pytest
from apis_gpu import DeviceAPI
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls
from litserve.devices import cuda_device_count

GPUS = cuda_device_count()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason="no CUDA device visible")]


def test_one_worker_per_gpu_each_on_its_own_device():
    app = ls.create_app(DeviceAPI(), accelerator="cuda", devices="auto", workers_per_device=2, timeout=60)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        info = client.get("/info").json()
        assert [w["device"] for w in info["workers"]] == [f"cuda:{i}" for i in range(GPUS) for _ in range(2)]
        seen: dict[int, str] = {}

        def every_worker_answered() -> bool:
            body = client.post("/predict", json={"input": 3.0}).json()
            assert body["output"] == 7.0  # 2x + 1 computed on the GPU
            seen[body["pid"]] = body["tensor_device"]
            return len(seen) == 2 * GPUS

        wait_for(every_worker_answered, timeout=60, interval=0)
        by_pid = {w["pid"]: w["device"] for w in info["workers"]}
        assert seen == by_pid  # each worker computed on the device it was given


def test_explicit_device_list():
    if GPUS < 2:
        pytest.skip("needs two GPUs")
    app = ls.create_app(DeviceAPI(), accelerator="cuda", devices=[GPUS - 1], timeout=60)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/predict", json={"input": 1.0}).json()["tensor_device"] == f"cuda:{GPUS - 1}"

"""deploy/k8s/overlays/gpu's container command on a real GPU: the overlay's own ``litserve serve`` flags
(``--accelerator cuda --devices 1``, one ``nvidia.com/gpu``) serve a CUDA model, the probes answer,
``litserve_capacity`` counts the GPU worker, and SIGTERM drains and exits 0 leaving no process.

The overlay's patch is read directly (kubectl is not needed on a GPU machine); tests/test_k8s.py
checks that the rendered overlay carries these same args.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import yaml
from support.servers import Proc

from litserve.core.drain import shutdown_budget
from litserve.devices import cuda_device_count

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device visible")]


def test_the_gpu_overlays_command_serves_a_cuda_model_and_drains(tmp_path):
    patch = yaml.safe_load((ROOT / "deploy/k8s/overlays/gpu/gpu.yaml").read_text())
    [c] = patch["spec"]["template"]["spec"]["containers"]
    args = list(c["args"])
    args[1] = "apis_gpu:DeviceAPI"  # a torch model instead of the image's /app/server.py
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "{port}"
    gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
    grace = float(args[args.index("--shutdown-grace") + 1])
    here = str(Path(__file__).resolve().parent)  # where apis_gpu lives; workers inherit the path
    with Proc.python(["-m", "litserve", *args, "--app-dir", here], tmp_path) as proc:
        proc.wait_http("/health", timeout=300)
        assert httpx.get(proc.url + "/ready", timeout=10).status_code == 200
        r = httpx.post(proc.url + "/predict", json={"input": 3.0}, timeout=60)
        assert r.status_code == 200, proc.output()
        assert r.json()["output"] == 7.0 and r.json()["tensor_device"] == "cuda:0"
        info = httpx.get(proc.url + "/info", timeout=10).json()
        assert [w["device"] for w in info["workers"]] == [f"cuda:{i}" for i in range(gpus)]
        assert 'litserve_capacity{route="/predict"} 1.0' in httpx.get(proc.url + "/metrics", timeout=10).text
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(shutdown_budget(grace)) == 0, proc.output()
        proc.wait_group_gone()
        assert "draining" in proc.output()

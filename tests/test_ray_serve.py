"""examples/ray_serve.py, run by Ray Serve where Ray is installed (marker ``ray``; CI does not
install Ray, so there this is skipped)."""

from __future__ import annotations

import importlib.util

import httpx
import pytest
from support.poll import wait_for
from support.servers import free_port

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'ray[serve]')"
    ),
]


def test_create_app_served_by_ray_serve_answers_on_every_route():
    import ray
    from ray import serve

    from examples.ray_serve import deployment

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment, route_prefix="/")
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.post(url + "/predict", json={"input": 4.0}, timeout=30).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=120, interval=0.5)
        assert httpx.post(url + "/predict", json={"input": 3.0}, timeout=30).json() == {"output": 9.0}
        assert httpx.get(url + "/ready", timeout=30).status_code == 200
        assert "litserve_capacity" in httpx.get(url + "/metrics", timeout=30).text
        assert httpx.post(url + "/predict", content=b"{not json", timeout=30).status_code == 400
    finally:
        serve.shutdown()
        ray.shutdown()

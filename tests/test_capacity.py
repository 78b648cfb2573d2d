"""The autoscaling signal: ``litserve_capacity`` next to in-flight and queue depth, and a readiness
that a full queue never fails (a full queue is what 503 + Retry-After on the model route is for)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from apis import BatchedSquareAPI, BehaviourAPI
from apis_faults import AsyncMixedAPI
from prometheus_client.parser import text_string_to_metric_families
from support.poll import wait_for
from support.servers import ThreadServer

import litserve as ls


def gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    totals: dict[str, float] = {}  # each gauge summed over its routes (one API here)
    for family in text_string_to_metric_families(text):
        if family.type == "gauge":
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@pytest.mark.slow
def test_capacity_is_what_the_ready_workers_run_at_once():
    batched = ls.create_app(
        BatchedSquareAPI(max_batch_size=8, batch_timeout=0.0), accelerator="cpu", devices=1, workers_per_device=2
    )
    assert batched.pool.capacity == 0  # not started: no ready worker, no capacity
    with ThreadServer(batched) as s:
        g = gauges(s.url)
    assert g["litserve_capacity"] == 16  # 2 workers x one batch of 8 at a time (prefetch not counted)
    assert g["litserve_workers_ready"] == 2 and g["litserve_requests_in_flight"] == 0
    assert g["litserve_queue_depth"] == 0
    concurrent = ls.create_app(AsyncMixedAPI(), accelerator="cpu", devices=1, workers_per_device=1)
    with ThreadServer(concurrent) as s:
        assert gauges(s.url)["litserve_capacity"] == 64  # one async worker, max_concurrency=64


def test_a_full_queue_answers_503_but_readiness_stays_200(tmp_path):
    app = ls.create_app(
        BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=1, max_queue_size=1, timeout=60
    )
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=60) as client:
        gate = tmp_path / "gate"
        results: list = []

        def post(body: dict) -> None:
            results.append(client.post("/predict", json=body).status_code)

        # The worker's prefetch holds up to 16 requests: fill it and the queue, with requests that block.
        threads = [threading.Thread(target=post, args=({"op": "block", "path": str(gate)},)) for _ in range(20)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: Path(str(gate) + ".started").exists(), timeout=30)
            wait_for(lambda: 503 in results, timeout=30)  # the queue is full: some were refused
            g = gauges(s.url)
            assert g["litserve_queue_depth"] == 1 and g["litserve_capacity"] == 1
            assert g["litserve_requests_in_flight"] > g["litserve_capacity"]  # utilisation over 1
            refused = client.post("/predict", json={"op": "echo"})
            assert refused.status_code == 503 and "queue is full" in refused.json()["detail"]
            assert refused.headers.get("retry-after")
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.text  # the replica is healthy, just busy
        finally:
            gate.touch()
            for t in threads:
                t.join(60)
        assert set(results) <= {200, 503} and results.count(200) >= 2

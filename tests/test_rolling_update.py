"""A rolling update on one machine: two replicas started by ``litserve serve`` behind a round-robin
proxy; one is SIGTERMed under steady load.

The proxy does what a load balancer does: it routes round-robin among backends whose ``/ready`` is
200 (checked every 100 ms, like a readiness probe), opens a new connection per request, and sends a
request to the next backend when a connection is refused (the request never reached that backend:
nginx's and Envoy's default). Any other transport error is a 502: a request the server dropped.

Expected: a client that takes what it gets sees only 200s and 503s (a request that reached the
replica in the moment between its SIGTERM and the proxy's next readiness check); a client that
honours 503 + Retry-After sees only 200s; the request in flight on the stopped replica is answered;
the stopped replica exits 0 and leaves no process.

The replica keeps its listener open while a request is in flight (the drain); a real deployment also
gives the load balancer time to notice /ready before the listener closes (Kubernetes: the preStop
sleep). Here that time is a condition, not a sleep: a request held on the replica is released only
once the proxy has taken the replica out of rotation and has no request bound for it. Without it, a
request the proxy sends in the very moment the listener closes is reset (a 502 the server could not
have prevented), which on a loaded machine happened now and then.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.poll import wait_for
from support.servers import Proc, ThreadServer, serve_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORK = 0.05  # seconds of model time per request: requests are in flight when the SIGTERM lands


class Proxy:
    """Round-robin over ready backends; a refused connection goes to the next one."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.ready: set[str] = set()
        self.removed_at: dict[str, float] = {}
        self.bound_for: dict[str, int] = dict.fromkeys(backends, 0)  # forwards that may still pick a backend
        self._rr = itertools.count()
        self.app = Starlette(routes=[Route("/predict", self.forward, methods=["POST"])], lifespan=self.lifespan)

    @asynccontextmanager
    async def lifespan(self, app):
        # No keep-alive to backends: a reused connection that a stopping server closes is a race no
        # proxy can win for a POST; a fresh connection is either refused (retried) or served.
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        task = asyncio.ensure_future(self.check_readiness())
        yield
        task.cancel()
        await self.client.aclose()

    async def check_readiness(self) -> None:
        while True:
            for b in self.backends:
                try:
                    ok = (await self.client.get(b + "/ready", timeout=2)).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok:
                    self.ready.add(b)
                elif b in self.ready:
                    self.ready.discard(b)
                    self.removed_at[b] = time.monotonic()
            await asyncio.sleep(0.1)  # the readiness probe's period

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        candidates = sorted(self.ready)
        if not candidates:
            return Response(b'{"error": "no backend ready"}', status_code=503, headers={"retry-after": "1"})
        for b in candidates:
            self.bound_for[b] += 1
        try:
            return await self._forward(body, candidates)
        finally:
            for b in candidates:
                self.bound_for[b] -= 1

    async def _forward(self, body: bytes, candidates: list[str]) -> Response:
        start = next(self._rr)
        for i in range(len(candidates)):
            backend = candidates[(start + i) % len(candidates)]
            try:
                r = await self.client.post(
                    backend + "/predict", content=body, headers={"content-type": "application/json"}
                )
            except httpx.ConnectError:
                continue  # never reached the backend: safe to send elsewhere
            except httpx.TransportError as exc:
                return Response(f'{{"error": "backend dropped the request: {exc!r}"}}'.encode(), status_code=502)
            headers = {k: v for k, v in r.headers.items() if k in ("retry-after", "content-type")}
            return Response(r.content, status_code=r.status_code, headers=headers)
        return Response(b'{"error": "every backend refused"}', status_code=502)


class Held:
    """A request sent straight to one replica, running until ``release()``."""

    def __init__(self, url: str, tmp_path) -> None:
        self.gate, mark = tmp_path / f"gate-{uuid.uuid4().hex}", tmp_path / f"mark-{uuid.uuid4().hex}"
        self.response: httpx.Response | None = None
        body = {"value": "held", "mark": str(mark), "gate": str(self.gate)}
        self.thread = threading.Thread(target=self._post, args=(url, body))
        self.thread.start()
        wait_for(mark.exists, timeout=30)  # in flight: predict has started

    def _post(self, url: str, body: dict) -> None:
        self.response = httpx.post(url + "/predict", json=body, timeout=60)

    def release(self) -> httpx.Response:
        self.gate.touch()
        self.thread.join(60)
        assert self.response is not None, "the held request got no answer"
        assert self.response.status_code == 200, self.response.text
        return self.response


def serve_replica(tmp_path) -> Proc:
    flags = ("--workers", "2", "--shutdown-grace", "30", "--no-access-log")
    return Proc.python(serve_args("apis_deploy:api", *flags), tmp_path)


def test_sigterm_one_replica_under_load_drops_nothing(tmp_path):
    with serve_replica(tmp_path) as a, serve_replica(tmp_path) as b:
        a.wait_http("/ready", timeout=60)
        b.wait_http("/ready", timeout=60)
        proxy = Proxy([a.url, b.url])
        with ThreadServer(proxy.app) as front:
            wait_for(lambda: proxy.ready == {a.url, b.url}, timeout=10)
            stop = threading.Event()
            plain: list[tuple[int, int | None]] = []  # (status, HTTP process that answered)
            retried: list[int] = []
            retries = [0]

            def plain_client() -> None:
                with httpx.Client(base_url=front.url, timeout=30) as c:
                    while not stop.is_set():
                        r = c.post("/predict", json={"value": 1, "sleep": WORK})
                        plain.append((r.status_code, r.json().get("ppid") if r.status_code == 200 else None))

            def retrying_client() -> None:
                with httpx.Client(base_url=front.url, timeout=30) as c:
                    while not stop.is_set():
                        for _ in range(10):
                            r = c.post("/predict", json={"value": 2, "sleep": WORK})
                            if r.status_code != 503:
                                break
                            retries[0] += 1
                            # Retry-After is whole seconds; a real client waits it out, this one at most 1 s.
                            stop.wait(min(1.0, float(r.headers.get("retry-after", "1"))))
                        retried.append(r.status_code)

            threads = [threading.Thread(target=plain_client) for _ in range(3)]
            threads.append(threading.Thread(target=retrying_client))
            for t in threads:
                t.start()
            try:
                wait_for(lambda: {p for _, p in plain} >= {a.pid, b.pid}, timeout=30)  # both serve
                held = Held(a.url, tmp_path)
                before = len(plain)
                a.signal(signal.SIGTERM)
                # The load balancer's part: out of rotation, nothing bound for a; then a may close.
                wait_for(lambda: a.url not in proxy.ready and proxy.bound_for[a.url] == 0, timeout=20)
                assert held.release().json()["value"] == "held"  # the drain let it finish
                assert a.wait_exit(30) == 0, a.output()
                stopped = len(plain)
                wait_for(lambda: len(plain) >= stopped + 20, timeout=30)  # the load goes on, on b
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
            a.wait_group_gone()

        statuses = [s for s, _ in plain]
        others = sorted({s for s in statuses if s not in (200, 503)})
        print(
            f"\n[rolling] {len(plain)} plain requests: {statuses.count(200)} x 200, {statuses.count(503)} x 503; "
            f"retrying client: {len(retried)} requests, {retries[0]} retries after 503"
        )
        assert not others, f"failures other than 503: {others}"
        assert set(retried) == {200}, retried
        assert before > 0 and {p for _, p in plain[stopped:]} <= {b.pid, None}  # after: only b answers
        assert "draining" in a.output()

"""Prometheus metrics of one app, in a registry of its own.

A registry per app (not the global default) so that two apps in one process, or one test after
another, never share counters. Gauges that mirror internal state (queue depth, in flight, workers
ready) are read at scrape time through callbacks, so the request path never updates them.

The three updated on every request (requests by status, request duration, queue wait; and batch
size per batch) are plain numbers on the event loop's thread, turned into metric families only when
/metrics is scraped: prometheus-client's own objects take a lock and walk the buckets on each
update, about 5 µs per request, a tenth of what the whole HTTP exchange costs. The names, labels and
buckets are the same either way.

Under gunicorn each HTTP process has its own registry; set ``PROMETHEUS_MULTIPROC_DIR`` to have
``/metrics`` aggregate every process (prometheus-client's multiprocess mode, where every update
goes to prometheus-client's objects, which write them to the shared files at once).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# (name, help, buckets) of the families updated on every request
_REQUESTS = ("litserve_requests", "Requests answered, by route and status.")
_DURATION = (
    "litserve_request_duration_seconds",
    "Time from a request's arrival to its response (to its last chunk when streaming).",
    _LATENCY_BUCKETS,
)
_QUEUE_WAIT = (
    "litserve_queue_wait_seconds",
    "Time a request waited in the app's queue before a worker took it.",
    _LATENCY_BUCKETS,
)
_BATCH_SIZE = ("litserve_batch_size", "Requests per batch sent to a worker.", _BATCH_BUCKETS)


class AppMetrics:
    """The app's registry: one set of metric families, each labelled by ``route`` (the API's path)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        by_route = ["route"]
        self.hot: _HotPath | None = None
        if self.multiprocess:
            self.requests = Counter(_REQUESTS[0], _REQUESTS[1], ["route", "status"], registry=reg)
            self.duration = Histogram(*_DURATION[:2], by_route, buckets=_DURATION[2], registry=reg)
            self.queue_wait = Histogram(*_QUEUE_WAIT[:2], by_route, buckets=_QUEUE_WAIT[2], registry=reg)
            self.batch_size = Histogram(*_BATCH_SIZE[:2], by_route, buckets=_BATCH_SIZE[2], registry=reg)
        else:
            self.hot = _HotPath()
            reg.register(self.hot)
        self.timeouts = Counter("litserve_timeouts", "Requests that got 504.", by_route, registry=reg)
        self.disconnects = Counter(
            "litserve_disconnects", "Requests whose client left before the response.", by_route, registry=reg
        )
        self.stream_pauses = Counter(
            "litserve_stream_pauses",
            "Streams whose worker was paused because their client read slower than it produced (stream_buffer).",
            by_route,
            registry=reg,
        )
        self.restarts = Counter(
            "litserve_worker_restarts",
            "Workers replaced, by why the old one went: crash, hung (killed by the server), exit, setup (failed).",
            ["route", "reason"],
            registry=reg,
        )
        self.queue_depth = Gauge(
            "litserve_queue_depth",
            "Requests waiting for a worker.",
            by_route,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "litserve_requests_in_flight",
            "Requests accepted and not yet answered.",
            by_route,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.workers_ready = Gauge(
            "litserve_workers_ready", "Workers ready to serve.", by_route, registry=reg, multiprocess_mode="livesum"
        )
        self.capacity = Gauge(
            "litserve_capacity",
            "Requests the ready workers can run at once: the denominator of utilisation for autoscaling.",
            by_route,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.connections_refused = Counter(
            "litserve_connections_refused",
            "Connections answered 503 and closed at once: max_connections were open and none was idle.",
            registry=reg,
        )
        self.connections_shed = Counter(
            "litserve_connections_shed",
            "Idle connections closed to make room for a new one when max_connections were open.",
            registry=reg,
        )
        self.connections_timed_out = Counter(
            "litserve_connections_timed_out",
            "Connections closed by a deadline: headers (header_timeout), body, idle keep-alive, "
            "write (a stream's client stopped reading for timeout).",
            ["phase"],
            registry=reg,
        )
        self.connections_open = Gauge(
            "litserve_connections_open",
            "HTTP connections open, as the connection bound counts them (max_connections).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._connection_events = {
            "refused": self.connections_refused,
            "shed": self.connections_shed,
            "header_timeout": self.connections_timed_out.labels("headers"),
            "body_timeout": self.connections_timed_out.labels("body"),
            "idle_timeout": self.connections_timed_out.labels("idle"),
            "write_timeout": self.connections_timed_out.labels("write"),
        }
        self.routes: list[Metrics] = []

    def connection_event(self, event: str) -> None:
        """Count a connection refused, shed or closed by a deadline (``core/http_limits.py``)."""
        self._connection_events[event].inc()

    def route(self, route: str) -> Metrics:
        """The metrics of one API, labelled with its path; what its pool and handler update."""
        metrics = Metrics(self, route)
        self.routes.append(metrics)
        return metrics

    def exposition(self) -> tuple[bytes, str]:
        """The text to serve on /metrics, and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            for route in self.routes:
                route.publish()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Metrics:
    """One API's children of the app's metric families (resolved once, so the request path only increments)."""

    def __init__(self, metrics: AppMetrics, route: str) -> None:
        self._metrics = metrics
        self._route = route
        self.duration: Any
        self.queue_wait: Any
        self.batch_size: Any
        if metrics.hot is not None:
            self.duration = _Histogram(_LATENCY_BUCKETS)
            self.queue_wait = _Histogram(_LATENCY_BUCKETS)
            self.batch_size = _Histogram(_BATCH_BUCKETS)
            metrics.hot.routes.append(self)
        else:
            self.duration = metrics.duration.labels(route)
            self.queue_wait = metrics.queue_wait.labels(route)
            self.batch_size = metrics.batch_size.labels(route)
        self.timeouts = metrics.timeouts.labels(route)
        self.disconnects = metrics.disconnects.labels(route)
        self.stream_pauses = metrics.stream_pauses.labels(route)
        self.restarts = _ForRoute(metrics.restarts, route)
        for reason in ("crash", "hung", "exit", "setup"):
            self.restarts.labels(reason)  # every reason shows, at 0, from the start
        self._by_status: dict[int, Any] = {}
        self._live: tuple[Callable[[], float], ...] = ()

    def bind(
        self,
        queue_depth: Callable[[], float],
        in_flight: Callable[[], float],
        ready: Callable[[], float],
        capacity: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """Read these gauges from live state at scrape time (single-process mode)."""
        m, route = self._metrics, self._route
        self._live = (queue_depth, in_flight, ready, capacity)
        if not m.multiprocess:
            m.queue_depth.labels(route).set_function(queue_depth)
            m.in_flight.labels(route).set_function(in_flight)
            m.workers_ready.labels(route).set_function(ready)
            m.capacity.labels(route).set_function(capacity)

    def publish(self) -> None:
        """Copy the live gauges into the multiprocess files (multiprocess mode, at scrape time)."""
        if self._live:
            m, route = self._metrics, self._route
            q, f, r, c = self._live
            m.queue_depth.labels(route).set(q())
            m.in_flight.labels(route).set(f())
            m.workers_ready.labels(route).set(r())
            m.capacity.labels(route).set(c())

    def answered(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            m = self._metrics
            counter = _Counter() if m.hot is not None else m.requests.labels(self._route, str(status))
            self._by_status[status] = counter
        counter.inc()
        self.duration.observe(seconds)


class _Counter:
    """A counter on the event loop's thread (no lock: nothing else updates it)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Histogram:
    """A histogram on the event loop's thread: one count per bucket (the last is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as the exposition format wants them."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out


class _HotPath(Collector):
    """The per-request families of every route, built from their plain numbers at scrape time."""

    def __init__(self) -> None:
        self.routes: list[Metrics] = []

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        requests, duration, queue_wait, batch_size = families
        for m in self.routes:
            route = m._route
            for status, counter in sorted(m._by_status.items()):
                requests.add_metric([route, str(status)], counter.value)
            for family, hist in ((duration, m.duration), (queue_wait, m.queue_wait), (batch_size, m.batch_size)):
                family.add_metric([route], hist.buckets(), hist.sum)
        return iter(families)

    @staticmethod
    def _families() -> list[Any]:
        return [
            CounterMetricFamily(*_REQUESTS, labels=["route", "status"]),
            HistogramMetricFamily(*_DURATION[:2], labels=["route"]),
            HistogramMetricFamily(*_QUEUE_WAIT[:2], labels=["route"]),
            HistogramMetricFamily(*_BATCH_SIZE[:2], labels=["route"]),
        ]


class _ForRoute:
    """A labelled family with its ``route`` label already given: ``.labels(reason)`` for the rest."""

    def __init__(self, family: Any, route: str) -> None:
        self._family = family
        self._route = route

    def labels(self, *rest: str) -> Any:
        return self._family.labels(self._route, *rest)

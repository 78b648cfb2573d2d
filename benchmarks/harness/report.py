"""Figures: one measurement's record, the medians over rounds, the table, and what the JSON file says.

Medians over rounds per (target, concurrency) with min/max alongside, so one noisy run neither
hides nor fakes a difference; ratios are against the baseline target (raw Starlette: the floor).
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .procs import ProcStats
from .targets import REPO_ROOT

BASELINE = "starlette"


@dataclass
class RunResult:
    """Raw figures of one target at one concurrency in one round."""

    target: str
    concurrency: int
    round: int
    startup_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    errors_total: int
    wrk: dict[str, Any]
    processes: list[ProcStats]
    cpu_percent_total: float
    rss_mib_total: float
    shutdown: dict[str, Any] = field(default_factory=dict)


def summarise(runs: list[RunResult], order: list[str], baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Median over rounds per (target, concurrency), plus ratios against the baseline (Starlette)."""
    keys = sorted({(r.target, r.concurrency) for r in runs}, key=lambda k: (k[1], order.index(k[0])))
    rows: list[dict[str, Any]] = []
    for name, conc in keys:
        rs = [r for r in runs if r.target == name and r.concurrency == conc]

        def med(f: Callable[[RunResult], float], rs: list[RunResult] = rs) -> float:
            return round(statistics.median(f(r) for r in rs), 3)

        # Per-process figures: medians by position (main first, then by CPU) across rounds.
        nproc = min(len(r.processes) for r in rs)
        procs = [
            {
                "role": rs[0].processes[i].role,
                "cpu_percent": round(statistics.median(r.processes[i].cpu_percent for r in rs), 1),
                "rss_mib": round(statistics.median(r.processes[i].rss_mib_max for r in rs), 1),
            }
            for i in range(nproc)
        ]
        rows.append(
            {
                "target": name,
                "concurrency": conc,
                "rounds": len(rs),
                "requests_per_s": med(lambda r: r.requests_per_s),
                "requests_per_s_min": min(r.requests_per_s for r in rs),
                "requests_per_s_max": max(r.requests_per_s for r in rs),
                "p50_ms": med(lambda r: r.latency_ms["p50"]),
                "p90_ms": med(lambda r: r.latency_ms["p90"]),
                "p99_ms": med(lambda r: r.latency_ms["p99"]),
                "p99_ms_min": min(r.latency_ms["p99"] for r in rs),
                "p99_ms_max": max(r.latency_ms["p99"] for r in rs),
                "errors_total": sum(r.errors_total for r in rs),
                "cpu_percent_total": med(lambda r: r.cpu_percent_total),
                "rss_mib_total": med(lambda r: r.rss_mib_total),
                "processes": procs,
                "startup_s": med(lambda r: r.startup_s),
            }
        )
    base = {row["concurrency"]: row for row in rows if row["target"] == baseline}
    for row in rows:
        b = base.get(row["concurrency"])
        row["throughput_vs_starlette"] = round(row["requests_per_s"] / b["requests_per_s"], 3) if b else None
        row["added_p50_ms_vs_starlette"] = round(row["p50_ms"] - b["p50_ms"], 3) if b else None
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = [
        "target",
        "conc",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "CPU% tot",
        "RSS MiB tot",
        "per process role:CPU%/RSS MiB",
        "start s",
        "x starlette",
        "+p50 ms",
    ]
    table = []
    for r in rows:
        procs = " ".join(f"{p['role']}:{p['cpu_percent']:.0f}%/{p['rss_mib']:.0f}" for p in r["processes"])
        ratio = r["throughput_vs_starlette"]
        added = r["added_p50_ms_vs_starlette"]
        table.append(
            [
                r["target"],
                str(r["concurrency"]),
                f"{r['requests_per_s']:.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                str(r["errors_total"]),
                f"{r['cpu_percent_total']:.0f}",
                f"{r['rss_mib_total']:.0f}",
                procs,
                f"{r['startup_s']:.2f}",
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if added is None else f"{added:+.2f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


PACKAGES = ("litserve", "starlette", "fastapi", "uvicorn", "uvloop", "httptools", "pydantic")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None

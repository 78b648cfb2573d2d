"""Plot benchmarks/results.json: throughput and p99 latency vs concurrency, one line per target.

Lines are the median over rounds; the shaded band spans the min..max over rounds, so a
noisy measurement is visible rather than hidden.

Usage:
    python benchmarks/plot.py [--results benchmarks/results.json] [--outdir docs/img]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TARGET_ORDER = ["litserve", "starlette", "fastapi"]

# (file name, y median key, y min key, y max key, y label, title, y scale)
# Latency spans orders of magnitude across concurrencies, hence a log y axis for it.
PLOTS = [
    (
        "bench_throughput.png",
        "requests_per_s",
        "requests_per_s_min",
        "requests_per_s_max",
        "requests / s (higher is better)",
        "Throughput vs concurrency",
        "linear",
    ),
    (
        "bench_p99.png",
        "p99_ms",
        "p99_ms_min",
        "p99_ms_max",
        "p99 latency, ms, log scale (lower is better)",
        "p99 latency vs concurrency",
        "log",
    ),
]


def _series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group summary rows by target, sorted by concurrency, targets in a stable order."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_target.setdefault(row["target"], []).append(row)
    rank = {t: i for i, t in enumerate(TARGET_ORDER)}
    order = sorted(by_target, key=lambda t: (rank.get(t, len(rank)), t))
    return {t: sorted(by_target[t], key=lambda r: r["concurrency"]) for t in order}


def _subtitle(meta: dict[str, Any]) -> str:
    pin = "server on CPU 0, wrk on CPU 1" if meta.get("pin") else "unpinned"
    runs = f"{meta.get('duration_s')} s x {meta.get('rounds')} round(s)"
    return f"wrk 1 thread, {runs}, {pin}\nmedian line, min..max band"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--outdir", type=Path, default=REPO_ROOT / "docs" / "img")
    args = parser.parse_args(argv)

    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, ScalarFormatter
    except ImportError:
        print("matplotlib is missing: `pip install matplotlib`", file=sys.stderr)
        return 2

    if not args.results.exists():
        print(f"{args.results} not found: run `python benchmarks/run.py` first", file=sys.stderr)
        return 1
    data = json.loads(args.results.read_text())
    series = _series(data["summary"])
    concurrencies = sorted({r["concurrency"] for r in data["summary"]})
    args.outdir.mkdir(parents=True, exist_ok=True)

    for filename, key, lo_key, hi_key, ylabel, title, yscale in PLOTS:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for target, rows in series.items():
            xs = [r["concurrency"] for r in rows]
            (line,) = ax.plot(xs, [r[key] for r in rows], marker="o", label=target)
            ax.fill_between(
                xs,
                [r[lo_key] for r in rows],
                [r[hi_key] for r in rows],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.set_yscale(yscale)
        if yscale == "linear":
            ax.set_ylim(bottom=0)
        else:  # plain numbers (0.5, 2, 20) read better than 10^x on a latency axis
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter(useOffset=False))
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=()))
        ax.set_title(f"{title}\n{_subtitle(data.get('meta', {}))}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = args.outdir / filename
        fig.savefig(path)
        plt.close(fig)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

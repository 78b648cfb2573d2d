"""OpenAI-style streaming: tokens/s and time to first token (TTFT) at 1 and 16 concurrent streams.

The model is examples/tiny_llm.py (a 2-layer character transformer built in code, one CPU thread),
served by benchmarks/targets/openai_app.py behind ``ls.OpenAISpec`` and driven over 127.0.0.1 by
an asyncio SSE client (harness/chat.py). The same model called inline, in this process, with no
server, is the reference: what the server adds is the difference.

Modes (the target's ``$LITSERVE_BENCH_CHAT``):
  continuous  continuous batching: every active stream advances in one forward pass per step
  sequential  a generator predict: the worker runs one stream at a time, the others queue
  echo        no model (each token a constant): litserve's own cost per streamed chunk

Inline reference, measured right before each served run: 1 stream is the plain token loop; 16
streams is the same 16 sequences stepped together in one batch (what continuous batching can at
best reach). TTFT columns are p50/p99 in ms.

    python benchmarks/bench_openai.py                                  # every mode, 1 and 16 streams, 10 s each
    python benchmarks/bench_openai.py --modes continuous --duration 5 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "examples"))
from harness import chat  # noqa: E402
from harness.procs import GroupSampler  # noqa: E402
from harness.report import git_commit, versions  # noqa: E402
from harness.targets import discover, start_target, stop_target  # noqa: E402

MODES = ("continuous", "sequential", "echo")


def inline(streams: int, max_tokens: int, duration_s: float) -> dict:
    """The model alone: ``streams`` sequences stepped together, token by token, for ``duration_s``."""
    import torch
    from tiny_llm import TinyLM, prompt_of

    torch.set_num_threads(1)  # as the served worker
    model = TinyLM()
    generator = torch.Generator().manual_seed(0)
    prompts = [
        model.encode(prompt_of([{"role": "user", "content": f"Tell me a story, number {i}."}])) for i in range(streams)
    ]
    for _ in range(3):  # warm-up
        model.step([list(p) for p in prompts], generator=generator)
    tokens, ttft = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration_s:
        seqs = [list(p) for p in prompts]
        start = time.perf_counter()
        for k in range(max_tokens):
            for seq, token in zip(seqs, model.step(seqs, generator=generator), strict=True):
                seq.append(token)
            if k == 0:
                ttft.extend([time.perf_counter() - start] * streams)
        tokens += streams * max_tokens
    elapsed = time.perf_counter() - t0
    return {
        "streams": streams,
        "tokens_per_s": round(tokens / elapsed, 1),
        "ttft_p50_ms": round(statistics.median(ttft) * 1e3, 2),
        "ttft_p99_ms": round(sorted(ttft)[int(0.99 * (len(ttft) - 1))] * 1e3, 2),
    }


def served(mode: str, streams_list: list[int], max_tokens: int, duration_s: float, log_dir: Path) -> list[dict]:
    """The target in ``mode`` under each stream count, each next to an inline run of the same count.

    The inline reference is measured right before each served run (the target idles meanwhile), so
    both see the same machine: on a shared box the load drifts too much between separate phases.
    """
    os.environ["LITSERVE_BENCH_CHAT"] = mode  # the target reads it (start_target passes the environment on)
    path = discover("chat")["openai"].path
    target = start_target("openai", False, log_dir, 180.0, chat.probe, path=path)
    rows = []
    try:
        for streams in streams_list:
            reference = inline(streams, max_tokens, duration_s) if mode != "echo" else None
            sampler = GroupSampler(target.pgid)
            sampler.start()
            try:
                row = asyncio.run(chat.run_chat_load(target.port, streams, max_tokens, duration_s))
            finally:
                procs = sampler.stop()
            row["server_cpu_percent"] = round(sum(p.cpu_percent for p in procs), 1)
            if reference is not None:
                row["inline"] = reference
                row["vs_inline"] = round(row["tokens_per_s"] / reference["tokens_per_s"], 3)
            rows.append({"mode": mode, **row})
    finally:
        stop_target(target)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ",".join(MODES))
    p.add_argument("--streams", default="1,16", help="comma-separated concurrent stream counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per completion")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results_openai.json")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    streams_list = [int(s) for s in args.streams.split(",") if s]
    if any(m not in MODES for m in modes):
        p.error(f"modes are {MODES}")

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="litserve-bench-") as tmp:
        for mode in modes:
            for row in served(mode, streams_list, args.max_tokens, args.duration, Path(tmp)):
                rows.append(row)
                print(f"{mode:<11} {row['streams']:>3} streams: {row['tokens_per_s']:>9,.0f} tokens/s", file=sys.stderr)

    print(f"\n{args.max_tokens} tokens per completion, {args.duration:.0f} s per measurement, {os.cpu_count()} CPUs")
    print(
        f"{'mode':<11} {'streams':>7} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'inline tok/s':>12} {'inline TTFT':>11} {'x inline':>8} {'server CPU%':>11} {'client CPU%':>11}"
    )
    for r in rows:
        ref = r.get("inline")
        print(
            f"{r['mode']:<11} {r['streams']:>7} {r['tokens_per_s']:>9,.0f} {r['ttft_p50_ms']:>9.1f} "
            f"{r['ttft_p99_ms']:>9.1f} {ref['tokens_per_s'] if ref else float('nan'):>12,.0f} "
            f"{ref['ttft_p50_ms'] if ref else float('nan'):>11.1f} {r.get('vs_inline', float('nan')):>8.2f} "
            f"{r['server_cpu_percent']:>11.0f} {r['client_cpu_percent']:>11.0f}"
        )
    meta = {"argv": sys.argv, "max_tokens": args.max_tokens, "duration_s": args.duration, "cpu_count": os.cpu_count()}
    meta |= {"git_commit": git_commit(), "versions": versions(("litserve", "torch", "uvicorn", "pydantic", "openai"))}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""APIs for batched streaming tests: a generator over a batch, and a continuous-batching step API.

Both log what the worker did to a JSON-lines file named by the ``log`` argument."""

from __future__ import annotations

import json
import time

import litserve as ls


class _Logged:
    log_path = ""

    def _log(self, **record) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")


class BatchStreamAPI(_Logged, ls.LitAPI):
    """Requests {"tag": t, "n": k, "delay": s}: each request gets chunks "t:0".."t:k-1", one per step."""

    def __init__(self, log: str, **kw) -> None:
        super().__init__(stream=True, **kw)
        self.log_path = log

    def predict(self, batch):
        tags = [r["tag"] for r in batch]
        self._log(batch=tags)
        steps = max(r["n"] for r in batch)
        done = 0
        try:
            for i in range(steps):
                yield [f"{r['tag']}:{i}" if i < r["n"] else None for r in batch]
                done = i + 1
                time.sleep(max(r.get("delay", 0) for r in batch))  # model behaviour: a slow step
        finally:
            self._log(closed=tags, after=done)

    def encode_response(self, steps):
        for step in steps:
            yield [None if out is None else {"out": out} for out in step]


class StepLLM(_Logged, ls.LitAPI):
    """Continuous batching: request {"tag": t, "n": k, "delay": s} yields "t:0".."t:k-1", one per step."""

    def __init__(self, log: str, **kw) -> None:
        super().__init__(stream=True, **kw)
        self.log_path = log

    def join(self, x):
        self._log(join=x["tag"])
        return {"tag": x["tag"], "n": x["n"], "i": 0, "delay": x.get("delay", 0)}

    def step(self, states):
        self._log(step=[s["tag"] for s in states])
        time.sleep(max(s["delay"] for s in states))  # model behaviour: a slow step
        out = []
        for s in states:
            if s["i"] >= s["n"]:
                out.append(None)
            else:
                out.append(f"{s['tag']}:{s['i']}")
                s["i"] += 1
        return out

    def leave(self, state):
        self._log(leave=state["tag"], at=state["i"])


def read_log(path) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class BatchChat(ls.LitAPI):
    """OpenAISpec over a batched generator: each request's reply is its last message, word by word."""

    def predict(self, conversations):
        replies = [c[-1]["content"].split(" ") for c in conversations]
        for i in range(max(len(r) for r in replies)):
            yield [(r[i] if i == 0 else " " + r[i]) if i < len(r) else None for r in replies]


class StepChat(ls.LitAPI):
    """OpenAISpec over continuous batching: the same replies, one word per step."""

    def join(self, messages):
        return {"words": messages[-1]["content"].split(" "), "i": 0}

    def step(self, states):
        out = []
        for s in states:
            if s["i"] >= len(s["words"]):
                out.append(None)
            else:
                word = s["words"][s["i"]]
                out.append(word if s["i"] == 0 else " " + word)
                s["i"] += 1
        return out

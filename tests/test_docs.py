"""Every runnable snippet of README.md and docs/*.md runs as pasted.

A fenced block whose info string is ``python runnable`` is a complete program: it is written to a file
and started with ``python``. ``python runnable continues`` is the rest of the previous runnable block
(the README shows a class, then the lines that serve it). ``python client`` runs against the server the
previous runnable block started. ``gpu`` blocks run only where enough CUDA GPUs are visible, blocks that
import torch only where torch is installed. A block that loads a file (``model.pt``) gets a tiny
stand-in built here.

The only change made to a pasted server is its address: ``LitServer.run`` is pointed at a free port on
127.0.0.1 (several test runs share the machine), and client blocks' ``:8000`` follows it.

Every other ``python`` block is checked too: none may start a server at module level (the
``if __name__ == "__main__":`` guard), the mistake that made pasted snippets fail with two tracebacks.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import signal
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.servers import Proc

from litserve.devices import cuda_device_count

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
HAS_TORCH = importlib.util.find_spec("torch") is not None

# What to send each server, by the name of its LitAPI class, and what must come back.
SAMPLES: dict[str, tuple[dict, object]] = {
    "SimpleLitAPI": ({"input": 4.0}, {"output": 16.0}),
    "SimpleLitAPI2": ({"input": 4.0}, {"output": 16.0}),
    "SquareAPI": ({"input": 4.0}, {"output": 16.0}),
    "MyAPI": ({"x": 1}, {"x": 1}),
    "Classifier": ({"features": [0.5, -1.0, 2.0, 0.0]}, None),  # a label of the stand-in model
    "Counter": ({"prompt": "hello streaming world"}, None),
}

# Runs a pasted server with LitServer.run pointed at the test's port, as ``python snippet.py`` would.
RUNNER = """\
import runpy, sys
import litserve

_run = litserve.LitServer.run
PORT = int(sys.argv[2])

def run(self, *args, **kwargs):
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    return _run(self, "127.0.0.1", PORT, **kwargs)

litserve.LitServer.run = run
sys.argv = sys.argv[1:2]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class Snippet:
    doc: str
    line: int
    source: str
    tags: set[str]
    clients: list[tuple[int, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line, info string, body) of every fenced block."""
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def snippets() -> list[Snippet]:
    out: list[Snippet] = []
    for path in DOCS:
        doc = str(path.relative_to(ROOT))
        last: Snippet | None = None
        for line, info, body in blocks(path):
            words = info.split()
            if not words or words[0] != "python":
                continue
            tags = set(words[1:])
            if "continues" in tags:
                assert last is not None, f"{doc}:{line}: 'continues' without a runnable block before it"
                last.source += "\n\n" + body
            elif "runnable" in tags:
                last = Snippet(doc, line, body, tags)
                out.append(last)
            elif "client" in tags:
                assert last is not None, f"{doc}:{line}: a client block needs a runnable server block before it"
                last.clients.append((line, body))
    return out


def python_blocks() -> list[tuple[str, str]]:
    return [
        (f"{path.relative_to(ROOT)}:{line}", body)
        for path in DOCS
        for line, info, body in blocks(path)
        if info.split()[:1] == ["python"]
    ]


def make_classifier_weights(path: Path) -> None:
    """The weights of a 4-feature, 3-class linear classifier: the stand-in for a user's ``model.pt``."""
    import torch

    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)


STAND_INS = {'torch.load("model.pt"': ("model.pt", make_classifier_weights)}


def test_the_docs_have_runnable_snippets():
    found = {s.doc for s in snippets()}
    assert {"README.md", "docs/quickstart.md", "docs/batching.md", "docs/streaming.md"} <= found


@pytest.mark.parametrize("where, body", python_blocks(), ids=[w for w, _ in python_blocks()])
def test_no_block_starts_a_server_at_module_level(where, body):
    try:
        tree = ast.parse(textwrap.dedent(body))
    except SyntaxError:
        return  # a fragment (an indented line, a doctest): nothing is run at module level
    for node in tree.body:
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)] if not isinstance(node, ast.If) else []
        for call in calls:
            if isinstance(call.func, ast.Attribute) and call.func.attr == "run" and not _is_def(node):
                pytest.fail(f'{where}: .run() at module level; put it under if __name__ == "__main__":')


def _is_def(node: ast.stmt) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


@pytest.mark.slow  # each snippet is a server started in a subprocess
@pytest.mark.parametrize("snippet", snippets(), ids=lambda s: s.id)
def test_snippet_runs_as_pasted(snippet: Snippet, tmp_path: Path):
    if "import torch" in snippet.source and not HAS_TORCH:
        pytest.skip("needs torch (pip install torch; see the README)")
    if "gpu" in snippet.tags:
        wanted = max([int(n) for n in re.findall(r"devices=(\d+)", snippet.source)] or [1])
        if cuda_device_count() < wanted:
            pytest.skip(f"needs {wanted} CUDA GPU(s)")
    for marker, (name, build) in STAND_INS.items():
        if marker in snippet.source:
            build(tmp_path / name)
    script = tmp_path / "snippet.py"
    script.write_text(snippet.source)

    if ".run(" not in snippet.source:  # defines things, or runs to its end
        with Proc.python([str(script)], tmp_path) as proc:
            code = proc.wait_exit(120)
            assert code == 0, f"{snippet.id} exited with {code}:\n{proc.output()}"
        return

    with Proc.python(["-c", RUNNER, str(script), "{port}"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=120)
        names = re.findall(r"^class (\w+)\(ls\.LitAPI\)", snippet.source, re.M)
        assert names, f"{snippet.id}: no LitAPI class"
        if names[-1] in SAMPLES:
            body, expected = SAMPLES[names[-1]]
            r = httpx.post(f"{proc.url}/predict", json=body, timeout=60)
            assert r.status_code == 200, r.text
            if expected is not None:
                assert r.json() == expected
            elif "stream=True" in snippet.source:
                tokens = [json.loads(line)["token"] for line in r.text.splitlines()]
                assert tokens == body["prompt"].split()
            else:
                assert r.json()
        for line, client in snippet.clients:
            code = client.replace(":8000", f":{proc.port}")
            (tmp_path / "client_snippet.py").write_text(code)
            with Proc.python([str(tmp_path / "client_snippet.py")], tmp_path) as c:
                assert c.wait_exit(60) == 0, f"{snippet.doc}:{line} failed:\n{c.output()}"
        proc.signal(signal.SIGINT)
        code = proc.wait_exit(60)
        output = proc.output()
        assert code == 0, f"{snippet.id} exited with {code}:\n{output}"
        assert "Traceback" not in output, output


def test_shell_commands_work_where_only_python3_exists():
    """A bare ``python`` is only used after a virtual environment is activated in the same block."""
    for path in DOCS:
        for line, info, body in blocks(path):
            if info not in ("bash", "sh", "console"):
                continue
            activated = False
            for part in re.split(r"&&|;|\||\n", body):
                part = part.strip().removeprefix("$ ")
                if re.match(r"^(\w+=\S+\s+)*python\s", part) and not activated:
                    pytest.fail(f"{path.relative_to(ROOT)}:{line}: '{part}' needs python3 (or a venv first)")
                activated = activated or "bin/activate" in part


def test_curl_commands_send_json_as_json():
    """curl's ``-d`` alone sends ``application/x-www-form-urlencoded``: a JSON body pasted that way reaches
    ``decode_request`` as a form and gets a 422, so every documented curl that posts JSON says so."""
    for path in DOCS:
        for line, info, body in blocks(path):
            if info not in ("bash", "sh", "console"):
                continue
            for command in re.split(r"\n(?!\s)|&&|;", body.replace("\\\n", " ")):
                if "curl " not in command or not re.search(r"\s(-d|--data\S*)\s+'[{\[]", command):
                    continue
                assert re.search(r"content-type:\s*application/json", command, re.I), (
                    f"{path.relative_to(ROOT)}:{line}: {command.strip()!r} posts JSON without "
                    "-H 'Content-Type: application/json' (curl -d alone sends a form)"
                )


def test_help_points_to_docs_a_wheel_user_can_reach():
    """``help(ls.LitServer)`` works from an installed wheel: it names every setting and sends the reader to
    other ``help()`` pages, never to a docs/ file that only a checkout has."""
    import dataclasses
    import pydoc

    import litserve as ls

    text = pydoc.render_doc(ls.LitServer, renderer=pydoc.plaintext)
    assert "help(litserve.Settings)" in text and "help(litserve.LitAPI)" in text
    for obj in (ls.LitServer, ls.create_app, ls.Settings, ls.LitAPI, ls.LitServer.run):
        assert "docs/" not in (obj.__doc__ or ""), obj
    settings_doc = ls.Settings.__doc__ or ""
    for f in dataclasses.fields(ls.Settings):  # where help(litserve.Settings) sends the reader
        assert f"{f.name}:" in settings_doc, f"{f.name} is not described in help(litserve.Settings)"

"""Settings are written once (``litserve.config.Settings``), checked once, and reach every part that
uses them: the keyword arguments editors see, ``/info``, and the workers' log level."""

from __future__ import annotations

import dataclasses
import logging
import textwrap
import typing
from pathlib import Path

import httpx
import pytest
from apis import SquareAPI
from support.poll import wait_for
from support.servers import Proc

import litserve as ls
from litserve.config import LEGACY_MODEL_SETTINGS, ServerArgs, SettingsArgs


def test_the_keyword_arguments_are_exactly_the_settings():
    fields = {f.name for f in dataclasses.fields(ls.Settings)}
    assert set(typing.get_type_hints(SettingsArgs)) == fields
    # Every setting is documented where Settings is, and in docs/settings.md.
    doc = ls.Settings.__doc__ or ""
    headings = [ln for ln in (Path(__file__).parent.parent / "docs" / "settings.md").read_text().splitlines()]
    headings = [ln for ln in headings if ln.startswith("### ")]
    assert [n for n in fields if f"{n}:" not in doc or not any(f"`{n}`" in h for h in headings)] == []
    # The server also takes LitServe's old per-server model settings, and forwards them to the API.
    assert set(typing.get_type_hints(ServerArgs)) == fields | set(LEGACY_MODEL_SETTINGS)


def test_build_checks_once_and_replace_checks_again():
    s = ls.Settings.build(timeout=False, max_payload_size="1.5KiB", log_level="debug", api_key="")
    assert (s.timeout, s.max_payload_size, s.log_level, s.api_key) == (None, 1536, logging.DEBUG, None)
    assert s.replace(log_level="warning").log_level == logging.WARNING
    # stream_buffer: a size, or off (None, or False as every other setting that can be off)
    assert [s.replace(stream_buffer=v).stream_buffer for v in ("2MiB", 4096, None, False)] == [2**21, 4096, None, None]
    with pytest.raises(ls.ConfigurationError, match="log_level"):
        s.replace(log_level="loud")
    with pytest.raises(ls.ConfigurationError, match="unknown setting.*timeuot"):
        ls.create_app(SquareAPI(), accelerator="cpu", timeuot=3)  # type: ignore[call-arg]


def test_api_key_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("LIT_SERVER_API_KEY", "from-env")
    assert ls.Settings.build().api_key == "from-env"
    assert ls.Settings.build(api_key="given").api_key == "given"
    assert ls.Settings.build(api_key="").api_key is None  # "" turns authentication off


def test_info_shows_the_checked_settings_without_the_key():
    from starlette.testclient import TestClient

    app = ls.create_app(SquareAPI(), accelerator="cpu", api_key="k", log_level="warning", max_payload_size="1KB")
    with TestClient(app) as client:
        assert client.get("/info").status_code == 401
        shown = client.get("/info", headers={"X-API-Key": "k"}).json()["settings"]
    assert "api_key" not in shown and shown["auth"] is True
    assert shown["log_level"] == "WARNING" and shown["max_payload_size"] == 1000


SERVER = textwrap.dedent(
    """
    import sys
    import litserve as ls
    from apis import SquareAPI

    if __name__ == "__main__":
        server = ls.LitServer(SquareAPI(), accelerator="cpu", devices=1, workers_per_device=1)
        server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level=sys.argv[2])
    """
)


@pytest.mark.slow  # starts a LitServer in a subprocess
@pytest.mark.parametrize("level", ["critical", "info"])
def test_run_log_level_reaches_the_workers(tmp_path, level):
    """A predict that raises is logged by its worker at ERROR: shown at "info", not at "critical"."""
    (tmp_path / "serve.py").write_text(SERVER)
    with Proc.python(["serve.py", "{port}", level], tmp_path) as proc:
        proc.wait_http("/ready")
        r = httpx.post(proc.url + "/predict", json={"input": "four"}, timeout=10)
        assert r.status_code == 500
        if level == "info":
            wait_for(lambda: "predict raised for request" in proc.output())
        else:
            assert httpx.get(proc.url + "/health", timeout=10).status_code == 200
            assert "raised for request" not in proc.output()
            assert "Traceback" not in proc.output()

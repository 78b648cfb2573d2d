"""The ``litserve`` command: ``serve`` (targets, flags, errors, the drain) and ``dockerize``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.servers import Proc, serve_args

import litserve as ls
from litserve.cli import dockerize, main
from litserve.cli.serve import TargetError, load_app
from litserve.core.app import LitApp

HERE = Path(__file__).parent


def litserve(*args: str, cwd: Path = HERE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "litserve", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_help_lists_every_setting_and_its_default():
    out = litserve("serve", "--help")
    assert out.returncode == 0, out.stderr
    for flag in (
        "--host",
        "--port",
        "--workers",
        "--accelerator",
        "--devices",
        "--timeout",
        "--api-path",
        "--max-queue-size",
        "--max-payload-size",
        "--stream-buffer",
        "--startup-timeout",
        "--shutdown-grace",
        "--log-level",
    ):
        assert flag in out.stdout, flag
    assert "(default: 30.0)" in out.stdout  # read from create_app's signature
    flat = " ".join(out.stdout.split())  # argparse wraps help text
    assert "(default: --timeout)" in flat and "(default: --timeout) (default:" not in flat  # said once
    assert "do not log each request (default" not in flat  # store_false's True would read as "off by default"
    top = litserve("--help")
    assert "serve" in top.stdout and "dockerize" in top.stdout


def test_a_busy_or_impossible_port_fails_in_one_line_naming_the_flag(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        status, err = in_process("serve", "apis_deploy:api", "--host", "127.0.0.1", "--port", str(port), capsys=capsys)
    assert status == 1
    assert err == (
        f"litserve serve: port {port} is already in use on 127.0.0.1: stop the process holding it, "
        "or pass another --port\n"
    )
    status, err = in_process("serve", "apis_deploy:api", "--port", "99999", capsys=capsys)
    assert status == 1 and err == "litserve serve: cannot listen on port 99999: a port is a number from 0 to 65535\n"


def test_version_names_the_distribution_and_where_it_is_imported_from(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    package = Path(ls.__file__).resolve().parent
    assert capsys.readouterr().out.strip() == f"litserve-zmq {ls.__version__} (imported as litserve from {package})"


def test_the_console_script_runs_the_same_command():
    exe = shutil.which("litserve")
    if exe is None:
        pytest.skip("the project is not installed here (pip install -e .), so there is no console script")
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--shutdown-grace" in out.stdout, out.stderr


def test_a_litapi_target_is_built_with_the_flags():
    app = load_app("apis_deploy:api", {"workers_per_device": 3, "timeout": None, "api_path": "/v1/run"})
    assert isinstance(app, LitApp)
    assert app.settings.workers_per_device == 3 and app.settings.timeout is None
    assert [e.path for e in app.endpoints] == ["/v1/run"]  # a model setting: set on the API
    assert load_app("apis_deploy:DeployAPI", {}).api.__class__.__name__ == "DeployAPI"  # a class: instantiated


@pytest.mark.parametrize(("given", "expected"), [("64KiB", 65536), ("none", None)])
def test_the_stream_buffer_flag_reaches_the_settings(given, expected):
    from litserve.cli import build_parser
    from litserve.cli.serve import SETTINGS_FLAGS

    args = build_parser().parse_args(["serve", "apis_deploy:api", "--stream-buffer", given])
    settings = {name: getattr(args, name) for _, name, _, _ in SETTINGS_FLAGS if hasattr(args, name)}
    assert load_app("apis_deploy:api", settings).settings.stream_buffer == expected


def test_prebuilt_targets_are_served_as_built_and_refuse_settings_flags():
    import apis_deploy

    assert load_app("apis_deploy:app", {}) is apis_deploy.app
    assert load_app("apis_deploy:server", {}) is apis_deploy.server.app
    with pytest.raises(TargetError, match="--workers would be ignored"):
        load_app("apis_deploy:server", {"workers_per_device": 2})
    assert load_app("apis_deploy", {}) is apis_deploy.server.app  # no attr: the module's one LitServer


def test_a_module_with_two_apis_needs_the_attr_named(tmp_path):
    (tmp_path / "two_apis.py").write_text("from apis_deploy import DeployAPI\na = DeployAPI()\nb = DeployAPI()\n")
    with pytest.raises(TargetError, match="several LitAPIs; name one: two_apis:a, two_apis:b"):
        load_app("two_apis", {}, app_dir=str(tmp_path))
    assert isinstance(load_app("two_apis.py:b", {}, app_dir=str(tmp_path)), LitApp)  # a file name works too


def in_process(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``litserve ARGS`` run by the function the command runs (no interpreter start): status, stderr."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


def test_bad_targets_say_what_is_wrong(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty.py").write_text("x = 1\n")
    out = litserve("serve", "empty", cwd=tmp_path)  # once as the real command: its exit status and stderr
    assert out.returncode == 2 and "defines no LitServer, app or LitAPI" in out.stderr
    assert "classes serve too" not in out.stderr
    (tmp_path / "classonly.py").write_text("import litserve as ls\n\n\nclass Square(ls.LitAPI):\n    pass\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts --app-dir on it
    for name in ("empty", "classonly", "nosuchmodule"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # and imports these: forgotten after the test
    here = ("--app-dir", str(tmp_path))
    status, err = in_process("serve", "classonly", *here, capsys=capsys)
    assert status == 2 and "its LitAPI classes serve too: classonly:Square" in err, err
    status, err = in_process("serve", "nosuchmodule:api", *here, capsys=capsys)
    assert status == 2 and "no module named 'nosuchmodule'" in err
    status, err = in_process("serve", "empty:api", *here, capsys=capsys)
    assert status == 2 and "has no attribute 'api'" in err
    status, err = in_process("serve", "empty:x", *here, capsys=capsys)
    assert status == 2 and "is a int" in err
    status, err = in_process("serve", "apis_deploy:api", "--timeout", "-1", "--app-dir", str(HERE), capsys=capsys)
    assert status == 2 and err.startswith("litserve serve: --timeout: timeout must be"), err
    status, err = in_process("serve", "apis_deploy:api", "--workers", "0", "--app-dir", str(HERE), capsys=capsys)
    assert status == 2 and err.startswith("litserve serve: --workers: workers_per_device must be"), err


@pytest.mark.slow
def test_serve_answers_then_sigterm_drains_and_exits_zero_with_nothing_left(tmp_path):
    args = serve_args("apis_deploy:api", "--workers", "2", "--shutdown-grace", "10")
    with Proc.python(args, tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        info = httpx.get(proc.url + "/info", timeout=10).json()
        assert info["settings"]["workers_per_device"] == 2 and info["settings"]["shutdown_grace"] == 10.0
        assert httpx.post(proc.url + "/predict", json={"value": 7}, timeout=10).json()["value"] == 7
        assert not (tmp_path / "client.py").exists()  # the command writes nothing into the image's directory
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.output()
        proc.wait_group_gone()
        assert "draining" in proc.output()


@pytest.mark.slow
def test_dockerize_writes_a_non_root_image_with_a_healthcheck(tmp_path):
    server = tmp_path / "server.py"
    server.write_text("import litserve as ls\n")
    out = litserve("dockerize", str(server), "--port", "9000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "Dockerfile").read_text()
    assert text.startswith("# Generated by `litserve dockerize server.py`")
    assert "-slim" in text and "USER litserve" in text and "EXPOSE 9000" in text
    assert "HEALTHCHECK" in text and "127.0.0.1:9000/health" in text
    assert 'CMD ["python", "server.py"]' in text
    assert "requirements.txt" not in text
    assert "docker build -t litserve-model" in out.stdout

    again = litserve("dockerize", str(server), cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr  # never overwrites silently

    (tmp_path / "requirements.txt").write_text("numpy\n")
    text = dockerize.render(server, gpu=True, serve="server", port=8000)
    assert "COPY requirements.txt /app/requirements.txt" in text and "-r requirements.txt" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text and "--gpus all" in text
    assert 'CMD ["litserve", "serve", "server:server", "--host", "0.0.0.0", "--port", "8000"]' in text
    # The HEALTHCHECK's probe is valid Python (it runs in the image with no shell).
    probe = dockerize.PROBE.format(port=1)
    compile(probe, "<healthcheck>", "exec")


def test_dockerize_matches_the_files_port_and_says_what_would_break(tmp_path, capsys):
    """The image exposes and probes the port the file's run() listens on; mistakes that would give a
    container with nothing listening are named before any `docker build`."""
    server = tmp_path / "server.py"
    server.write_text(
        "import litserve as ls\nfrom apis import SquareAPI\n"
        "if __name__ == '__main__':\n    ls.LitServer(SquareAPI()).run(host='0.0.0.0', port=8080)\n"
    )
    status, err = in_process("dockerize", str(server), capsys=capsys)
    text = (tmp_path / "Dockerfile").read_text()
    assert status == 0 and "EXPOSE 8080" in text and "127.0.0.1:8080/health" in text
    assert "runs its server on port" not in err and "never calls" not in err

    status, err = in_process("dockerize", str(server), "--port", "9000", "--force", capsys=capsys)
    assert status == 0 and "EXPOSE 9000" in (tmp_path / "Dockerfile").read_text()  # the flag wins, with a warning
    assert "server.py runs its server on port 8080" in err and "Pass --port 8080" in err, err

    status, err = in_process("dockerize", str(server), "--port", "9000", "--serve", "api", "--force", capsys=capsys)
    assert status == 0 and "runs its server on port" not in err  # litserve serve --port 9000: any port works

    norun = tmp_path / "norun.py"
    norun.write_text("from apis import SquareAPI\napi = SquareAPI()\n")
    assert main(["dockerize", str(norun), "-o", str(tmp_path / "D2")]) == 0
    out, err = capsys.readouterr()
    assert "never calls .run(...)" in err and "--serve ATTR" in err, err
    assert f"docker build -t litserve-model -f {tmp_path / 'D2'} {tmp_path}" in out, out  # context: the file's dir

    run_only = tmp_path / "plain.py"
    run_only.write_text("import litserve as ls\nfrom apis import SquareAPI\nls.LitServer(SquareAPI()).run()\n")
    assert dockerize.file_ports(run_only) == (True, {8000})  # run() without a port: LitServer.run's 8000
    from_env = tmp_path / "env.py"
    from_env.write_text("import os\nserver.run(port=int(os.environ['PORT']))\n")
    assert dockerize.file_ports(from_env) == (True, set())  # computed: not judged


def test_dockerize_installs_a_wheel_of_a_checkout_from_the_build_context(tmp_path, capsys):
    """litserve from a checkout is not on PyPI: the command says how to build its wheel, and a wheel in
    the build context is what the image installs."""
    server = tmp_path / "server.py"
    server.write_text("import litserve as ls\nls.LitServer(None).run(port=8000)\n")
    status, err = in_process("dockerize", str(server), capsys=capsys)
    text = (tmp_path / "Dockerfile").read_text()
    assert status == 0 and f'RUN pip install "litserve-zmq=={ls.__version__}"' in text
    assert dockerize.installed_from_checkout() is not None  # the tests run from a checkout
    assert f"pip wheel --no-deps -w {tmp_path} " in err and "--force" in err, err

    wheel = f"litserve_zmq-{ls.__version__}-py3-none-any.whl"
    (tmp_path / wheel).write_bytes(b"")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    status, err = in_process("dockerize", str(server), "--force", capsys=capsys)
    text = (tmp_path / "Dockerfile").read_text()
    assert status == 0 and "pip wheel" not in err
    assert f"COPY {wheel} /tmp/{wheel}" in text and f"RUN pip install /tmp/{wheel} -r requirements.txt" in text
    assert "litserve-zmq==" not in text

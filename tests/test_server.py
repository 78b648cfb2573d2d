"""``LitServer(...).run()`` in a subprocess: it serves, writes a working client.py, logs which worker
runs on which device with which pid, stops cleanly on SIGTERM/SIGINT leaving no process behind,
leaves no orphan when killed with -9, fails fast and clearly when setup raises, and idles quietly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support.poll import wait_for
from support.procs import all_gone, cpu_seconds
from support.servers import Proc

pytestmark = pytest.mark.slow  # each test starts a LitServer in a subprocess: seconds apiece

SCRIPT = textwrap.dedent(
    """
    import sys
    import litserve as ls
    from apis import BatchedSquareAPI, FailingSetupAPI, SquareAPI

    if __name__ == "__main__":  # workers are spawned: they import this file, and must not serve
        kind, port, workers, client = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
        api = {
            "square": SquareAPI,
            "failing": FailingSetupAPI,
            "batching": lambda: [  # one server, both kinds of batch_timeout (0 and not): one idle wait
                BatchedSquareAPI(max_batch_size=8, batch_timeout=0.0, api_path="/batch0"),
                BatchedSquareAPI(max_batch_size=8, batch_timeout=0.01, api_path="/batch10ms"),
            ],
        }[kind]()
        server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=workers, timeout=10,
                              shutdown_grace=5)
        server.run(host="127.0.0.1", port=port, generate_client_file=client)
    """
)


def _start(tmp_path, kind: str = "square", workers: int = 2, client: bool = True, env=None) -> Proc:
    (tmp_path / "serve.py").write_text(SCRIPT)
    return Proc.python(["serve.py", kind, "{port}", str(workers), "1" if client else "0"], tmp_path, env=env)


def _worker_pids(proc: Proc) -> list[int]:
    info = httpx.get(proc.url + "/info", timeout=10).json()
    return [w["pid"] for w in info["workers"]]


def _table(output: str) -> dict[int, tuple[str, str]]:
    """pid -> (worker name, device) from the table the server logs at start."""
    return {int(pid): (name, dev) for name, dev, pid in re.findall(r"(worker-\d+)\s+(\S+)\s+pid (\d+)", output)}


def test_serves_writes_a_working_client_logs_the_table_idles_and_stops_on_sigterm(tmp_path):
    with _start(tmp_path) as proc:
        proc.wait_http("/ready")
        r = httpx.post(proc.url + "/predict", json={"input": 3.0}, timeout=10)
        assert r.status_code == 200 and r.json() == {"output": 9.0}

        client = tmp_path / "client.py"
        assert client.exists()
        run = subprocess.run([sys.executable, str(client)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Status: 200" in run.stdout
        assert '{"output":16.0}' in run.stdout.replace(" ", "")  # the sample {"input": 4.0}, squared

        workers = _worker_pids(proc)
        assert len(workers) == 2 and len(set(workers)) == 2
        wait_for(lambda: len(_table(proc.output())) == 2)
        table = _table(proc.output())
        assert table == {workers[0]: ("worker-0", "cpu"), workers[1]: ("worker-1", "cpu")}

        # Idle: no busy polling anywhere. Sum the CPU time of the app and its workers over a few
        # seconds (3 rather than 2: /proc counts in 10 ms ticks, and 1% of 2 s is only two of them).
        pids = [proc.pid, *workers]
        before, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 3.0, timeout=6, interval=0.1)
        used, elapsed = sum(cpu_seconds(p) for p in pids) - before, time.monotonic() - t0
        assert used / elapsed < 0.01, f"idle server used {used:.3f}s of CPU in {elapsed:.2f}s"

        proc.signal(signal.SIGTERM)
        code = proc.wait_exit(20)
        assert code in (0, -signal.SIGTERM), proc.output()
        all_gone(workers)
        proc.wait_group_gone()
        assert "Traceback" not in proc.output()


def test_an_idle_batching_server_burns_no_cpu(tmp_path):
    """With batching on, for any batch_timeout (0 included), nothing spins while no request comes."""
    with _start(tmp_path, kind="batching", workers=1, client=False) as proc:
        proc.wait_http("/ready")
        with ThreadPoolExecutor(8) as pool:
            for url in (proc.url + "/batch0", proc.url + "/batch10ms"):
                bodies = list(pool.map(lambda i, url=url: httpx.post(url, json={"input": i}, timeout=10), range(16)))
                assert [b.json() for b in bodies] == [{"output": i * i} for i in range(16)], url
        pids = [proc.pid, *_worker_pids(proc)]
        assert len(pids) == 3  # the app and one worker per API
        before, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 3.0, timeout=6, interval=0.1)
        used, elapsed = sum(cpu_seconds(p) for p in pids) - before, time.monotonic() - t0
        assert used / elapsed < 0.01, f"idle batching server used {used:.3f}s of CPU in {elapsed:.2f}s"
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(20) in (0, -signal.SIGTERM), proc.output()
        proc.wait_group_gone()


def test_no_client_file_when_asked_and_sigint_stops_it(tmp_path):
    with _start(tmp_path, workers=1, client=False) as proc:
        proc.wait_http("/ready")
        assert httpx.post(proc.url + "/predict", json={"input": 2.0}, timeout=10).json() == {"output": 4.0}
        assert not (tmp_path / "client.py").exists()
        workers = _worker_pids(proc)
        proc.signal(signal.SIGINT)
        code = proc.wait_exit(20)
        assert code in (0, -signal.SIGINT, 130), proc.output()
        all_gone(workers)
        proc.wait_group_gone()


def test_workers_exit_by_themselves_when_the_server_is_killed(tmp_path):
    private_tmp = tmp_path / "t"  # where the server makes its socket directory (short: ipc paths are bounded)
    private_tmp.mkdir()
    with _start(tmp_path, client=False, env={"TMPDIR": str(private_tmp)}) as proc:
        proc.wait_http("/ready")
        workers = _worker_pids(proc)
        assert len(workers) == 2
        assert [p.name[: len("litserve-")] for p in private_tmp.iterdir()] == ["litserve-"]
        proc.signal(signal.SIGKILL)
        assert proc.wait_exit(10) == -signal.SIGKILL
        all_gone(workers, timeout=5)  # nobody stopped them: they noticed their parent is gone
        proc.wait_group_gone()
        assert list(private_tmp.iterdir()) == []  # and removed the socket directory it left behind


def test_setup_that_raises_exits_non_zero_naming_the_error(tmp_path):
    with _start(tmp_path, kind="failing", workers=1, client=False) as proc:
        code = proc.wait_exit(30)
        out = proc.output()
        assert code != 0, out
        assert "could not start: RuntimeError: weights not found" in out  # the error, named, at the top level
        proc.wait_group_gone()


def test_sigterm_to_the_whole_group_also_stops_cleanly(tmp_path):
    """A process manager (systemd, docker stop) signals every process of the group at once."""
    sig = signal.SIGTERM
    with _start(tmp_path, workers=1, client=False) as proc:
        proc.wait_http("/ready")
        workers = _worker_pids(proc)
        os.killpg(proc.pid, sig)
        code = proc.wait_exit(20)
        assert code in (0, -sig), proc.output()
        all_gone(workers)
        proc.wait_group_gone()


SLOW_SETUP = textwrap.dedent(
    """
    import os
    import sys
    import time

    import litserve as ls


    class LoadingAPI(ls.LitAPI):
        def setup(self, device):
            open(f"loading-{os.getpid()}", "w").close()  # the test waits for this: the model is loading
            time.sleep(600)  # a big model loading, up to startup_timeout

        def predict(self, x):
            return x


    if __name__ == "__main__":
        server = ls.LitServer(LoadingAPI(), accelerator="cpu", devices=2)
        server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_models_load_stops_the_server_at_once(tmp_path, sig):
    """Ctrl-C (or SIGTERM) while setup runs stops the server now, killing the workers in setup; it used to
    go unanswered until every setup had finished, up to startup_timeout (600 s by default)."""
    (tmp_path / "loading.py").write_text(SLOW_SETUP)
    with Proc.python(["loading.py", "{port}"], tmp_path) as proc:
        loading = lambda: sorted(tmp_path.glob("loading-*"))  # noqa: E731
        wait_for(lambda: len(loading()) == 2, timeout=60)
        workers = [int(path.name.split("-")[1]) for path in loading()]
        proc.signal(sig)
        code = proc.wait_exit(60)  # far less than the 600 s the setups would take
        output = proc.output()
        assert code == 0, output
        assert "interrupted while the workers were starting: stopping them" in output
        assert "Traceback" not in output and "listening on" not in output, output
        all_gone(workers)
        proc.wait_group_gone()

"""accelerator / devices / workers_per_device -> one device string per worker, with a faked GPU count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import litserve as ls
from litserve import devices as D
from litserve.devices import resolve_devices


def test_cuda_count_devices():
    assert resolve_devices("cuda", 4, cuda_count=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert resolve_devices("cuda", 2, cuda_count=4) == ["cuda:0", "cuda:1"]
    assert resolve_devices("cuda", "auto", cuda_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert resolve_devices("gpu", "auto", cuda_count=2) == ["cuda:0", "cuda:1"]
    assert resolve_devices("CUDA", 1, cuda_count=2) == ["cuda:0"]


def test_cuda_device_list():
    assert resolve_devices("cuda", [0, 3], cuda_count=4) == ["cuda:0", "cuda:3"]
    assert resolve_devices("cuda", (2,), cuda_count=4) == ["cuda:2"]
    assert resolve_devices("cuda", [3, 1], cuda_count=4) == ["cuda:3", "cuda:1"]


def test_workers_per_device_gives_each_device_several_workers_grouped():
    assert resolve_devices("cuda", 2, 2, cuda_count=2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert resolve_devices("cuda", [0, 3], workers_per_device=3, cuda_count=4) == ["cuda:0"] * 3 + ["cuda:3"] * 3
    assert resolve_devices("cpu", 1, 2) == ["cpu", "cpu"]
    assert resolve_devices("cpu", 2, 2) == ["cpu"] * 4


def test_auto_picks_cpu_without_gpus_and_cuda_with_them():
    assert resolve_devices("auto", "auto", cuda_count=0, mps_available=False) == ["cpu"]
    assert resolve_devices("auto", "auto", cuda_count=2, mps_available=False) == ["cuda:0", "cuda:1"]
    assert resolve_devices("auto", "auto", 2, cuda_count=0, mps_available=False) == ["cpu", "cpu"]
    assert resolve_devices("auto", 1, cuda_count=2) == ["cuda:0"]
    assert resolve_devices("auto", "auto", cuda_count=0, mps_available=True) == ["mps"]
    assert resolve_devices("mps", "auto", 2, mps_available=True) == ["mps", "mps"]


def test_defaults_on_this_machine_resolve_to_something_usable():
    devs = resolve_devices()
    assert devs and all(d == "cpu" or d == "mps" or d.startswith("cuda:") for d in devs)


def test_cpu_accelerator_ignores_gpus():
    assert resolve_devices("cpu", "auto", cuda_count=8) == ["cpu"]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        (dict(accelerator="tpu"), "accelerator"),
        (dict(accelerator=None), "accelerator"),
        (dict(accelerator="cuda", cuda_count=0), "no CUDA device"),
        (dict(accelerator="mps", mps_available=False), "MPS"),
        (dict(accelerator="cuda", devices=5, cuda_count=4), "devices=5"),
        (dict(accelerator="cuda", devices=0, cuda_count=4), "devices=0"),
        (dict(accelerator="cuda", devices=-1, cuda_count=4), "devices=-1"),
        (dict(accelerator="cuda", devices=[4], cuda_count=4), "device id 4"),
        (dict(accelerator="cuda", devices=[-1], cuda_count=4), "device id -1"),
        (dict(accelerator="cuda", devices=[0, 0], cuda_count=4), "twice"),
        (dict(accelerator="cuda", devices=[], cuda_count=4), "devices"),
        (dict(accelerator="cuda", devices="0,1", cuda_count=4), "devices"),
        (dict(accelerator="cuda", devices=True, cuda_count=4), "devices"),
        (dict(accelerator="cuda", devices=[True], cuda_count=4), "device id True"),
        (dict(accelerator="cuda", devices=1.5, cuda_count=4), "devices"),
        (dict(accelerator="cpu", devices=0), "devices"),
        (dict(accelerator="cpu", devices=[0]), "devices"),
        (dict(accelerator="cpu", devices="many"), "devices"),
        (dict(accelerator="cpu", workers_per_device=0), "workers_per_device"),
        (dict(accelerator="cpu", workers_per_device=1.5), "workers_per_device"),
        (dict(accelerator="cpu", workers_per_device=True), "workers_per_device"),
        (dict(accelerator="cpu", workers_per_device="2"), "workers_per_device"),
    ],
)
def test_bad_values_raise_configuration_error_naming_them(kwargs, names):
    with pytest.raises(ls.ConfigurationError, match=names):
        resolve_devices(**kwargs)


def test_configuration_error_is_a_value_error():
    with pytest.raises(ValueError):
        resolve_devices("tpu")


@pytest.fixture
def gpus(monkeypatch):
    """Pretend NVML reports ``n`` GPUs (the physical count, before CUDA_VISIBLE_DEVICES)."""

    def set_count(n: int) -> None:
        monkeypatch.setattr(D, "_nvml_device_count", lambda: n)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return set_count


@pytest.mark.parametrize(
    ("visible", "physical", "expected"),
    [
        (None, 4, 4),
        ("0,1", 4, 2),
        ("3", 4, 1),
        ("GPU-8f5c2a1e,GPU-1b2c3d4e", 4, 2),  # UUIDs count too
        (" 1 , 2 ", 4, 2),
        ("", 4, 0),  # empty: CUDA sees nothing
        ("0,-1,2", 4, 1),  # CUDA stops at the first invalid entry
        ("-1", 4, 0),
        ("0,1,2,3,4,5", 2, 2),  # cannot exceed what the machine has
        ("0,1", 0, 0),
        (None, 0, 0),
    ],
)
def test_cuda_visible_devices(gpus, monkeypatch, visible, physical, expected):
    gpus(physical)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert D.cuda_device_count() == expected


def test_visible_devices_are_renumbered_from_zero(gpus, monkeypatch):
    gpus(8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert resolve_devices("auto", "auto", mps_available=False) == ["cuda:0", "cuda:1"]
    assert resolve_devices("cuda", [1]) == ["cuda:1"]
    with pytest.raises(ls.ConfigurationError, match="device id 5"):
        resolve_devices("cuda", [5])


def test_hidden_gpus_mean_cpu_for_auto_and_an_error_for_cuda(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_devices("auto", "auto", mps_available=False) == ["cpu"]
    with pytest.raises(ls.ConfigurationError, match="no CUDA device"):
        resolve_devices("cuda")


def test_explicit_count_overrides_detection(gpus):
    gpus(0)
    assert resolve_devices("cuda", 2, cuda_count=2) == ["cuda:0", "cuda:1"]


def test_create_app_uses_the_resolved_devices(gpus):
    gpus(3)
    from apis import SquareAPI

    app = ls.create_app(SquareAPI(), accelerator="cuda", devices=[0, 2], workers_per_device=2)
    assert app.pool.devices == ["cuda:0", "cuda:0", "cuda:2", "cuda:2"]
    assert [w["device"] for w in app.pool.workers_info()] == app.pool.devices
    assert app.pool.state == "new"  # nothing spawned, no GPU touched


def test_import_and_auto_resolution_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import litserve as ls\n"
        "from litserve.devices import resolve_devices, cuda_device_count\n"
        "print(resolve_devices('auto', 'auto'), cuda_device_count())\n"
        "from tests_apis_probe import app\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('NO_TORCH')\n"
    )
    probe = (
        "import litserve as ls\n"
        "class A(ls.LitAPI):\n"
        "    def predict(self, x):\n"
        "        return x\n"
        "app = ls.create_app(A(), accelerator='auto')\n"
    )
    (tmp_path / "tests_apis_probe.py").write_text(probe)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NO_TORCH" in r.stdout

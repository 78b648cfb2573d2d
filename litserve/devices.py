"""Turning ``accelerator`` / ``devices`` / ``workers_per_device`` into one device string per worker.

Detection never initialises CUDA (or imports torch) in the app process: CUDA GPUs are counted through
NVML, which ships with the NVIDIA driver, so the app stays small and safe to fork, and only the
workers touch the GPU. MPS is only looked for on macOS.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Sequence

from .errors import ConfigurationError

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def resolve_devices(
    accelerator: str = "auto",
    devices: int | Sequence[int] | str = "auto",
    workers_per_device: int = 1,
    *,
    cuda_count: int | None = None,
    mps_available: bool | None = None,
) -> list[str]:
    """One device string (``"cpu"``, ``"cuda:3"``, ``"mps"``) per worker, grouped by device.

    ``cuda_count`` and ``mps_available`` override detection (tests, or callers who know better).
    """
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATORS:
        raise ConfigurationError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if isinstance(workers_per_device, bool) or not isinstance(workers_per_device, int) or workers_per_device < 1:
        raise ConfigurationError(f"workers_per_device must be an int >= 1, got {workers_per_device!r}")
    accelerator = accelerator.lower()
    if accelerator == "gpu":
        accelerator = "cuda"
    if accelerator == "auto":
        if cuda_count is None:
            cuda_count = cuda_device_count()
        if cuda_count > 0:
            accelerator = "cuda"
        elif mps_available if mps_available is not None else _mps_available():
            accelerator = "mps"
        else:
            accelerator = "cpu"

    if accelerator == "cuda":
        available = cuda_device_count() if cuda_count is None else cuda_count
        if available == 0:
            raise ConfigurationError(
                "accelerator='cuda' but no CUDA device is visible (NVML finds no GPU, or CUDA_VISIBLE_DEVICES "
                "hides them): use accelerator='auto' to take a GPU when there is one and the CPU otherwise, "
                "or accelerator='cpu'"
            )
        ids = _device_ids(devices, available, "cuda")
        names = [f"cuda:{i}" for i in ids]
    elif accelerator == "mps":
        if mps_available is False:
            raise ConfigurationError(
                "accelerator='mps' but MPS is not available: use accelerator='auto' or accelerator='cpu'"
            )
        names = ["mps" for _ in _device_ids(devices, 1, "mps")]
    else:
        count = 1 if devices == "auto" else devices
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"with accelerator='cpu', devices must be 'auto' or an int >= 1, got {devices!r}")
        names = ["cpu"] * count
    return [name for name in names for _ in range(workers_per_device)]


def _device_ids(devices: int | Sequence[int] | str, available: int, kind: str) -> list[int]:
    if devices == "auto":
        return list(range(available))
    if isinstance(devices, bool):
        raise ConfigurationError(f"devices must be 'auto', an int or a list of ints, got {devices!r}")
    if isinstance(devices, int):
        if not 1 <= devices <= available:
            raise ConfigurationError(f"devices={devices} but {available} {kind} device(s) are visible")
        return list(range(devices))
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise ConfigurationError(f"devices must be 'auto', an int or a non-empty list of ints, got {devices!r}")
    ids: list[int] = list(devices)  # type: ignore[arg-type]  # str was refused just above
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < available:
            raise ConfigurationError(f"device id {i!r} is not one of the {available} visible {kind} device(s)")
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"devices lists a device twice: {ids}; use workers_per_device instead")
    return ids


def cuda_device_count() -> int:
    """CUDA devices this process may use, counted through NVML and CUDA_VISIBLE_DEVICES."""
    total = _nvml_device_count()
    if total == 0:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return total
    count = 0
    for part in visible.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break  # CUDA stops at the first invalid entry
        count += 1
    return min(count, total)


def _nvml_device_count() -> int:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return 0
    try:
        if nvml.nvmlInit_v2() != 0:
            return 0
        count = ctypes.c_uint(0)
        ok = nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0
        nvml.nvmlShutdown()
        return count.value if ok else 0
    except AttributeError:
        return 0


def _mps_available() -> bool:
    if platform.system() != "Darwin":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.backends.mps.is_available())

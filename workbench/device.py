"""Devices and number formats: what this machine has, and what a run should use.

``auto`` picks cuda, then mps, then cpu. Precision ``auto`` is fp32 on CPU and MPS (safe and
exact), bf16 autocast on CUDA where supported, else fp16 autocast with a gradient scaler.
bf16 on CPU is offered explicitly: weights, gradients and optimizer state stay fp32 (master
weights) and only the matrix products run in bf16 through autocast.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from .errors import WorkbenchError


def describe_devices() -> list[dict]:
    """Every device torch can use here, with what a user needs to choose."""
    import psutil
    import torch

    out = [{
        "device": "cpu", "name": _cpu_name(), "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total, "available": True,
    }]
    if torch.backends.mps.is_available():
        out.append({"device": "mps", "name": "Apple GPU (MPS)", "memory_bytes": psutil.virtual_memory().total,
                    "available": True})
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"device": f"cuda:{i}", "name": p.name, "memory_bytes": p.total_memory,
                        "bf16": torch.cuda.is_bf16_supported(), "available": True})
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def resolve_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError("train.device = 'cuda' is not available on this machine (no CUDA GPU found); use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise WorkbenchError("train.device = 'mps' is not available on this machine (no Apple GPU); use auto or cpu")
    return torch.device(name)


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    autocast_dtype: object | None  # torch dtype, or None for plain fp32
    use_scaler: bool

    def autocast(self, device):
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def resolve_precision(name: str, device) -> Precision:
    import torch

    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name == "fp32":
        return Precision("fp32", None, False)
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise WorkbenchError("train.precision = 'bf16' is not supported by this GPU; use fp16 or auto")
        if device.type == "mps":
            raise WorkbenchError("train.precision = 'bf16' is not supported on mps here; use fp32 or auto")
        return Precision("bf16", torch.bfloat16, False)
    if name == "fp16":
        if device.type == "cpu":
            raise WorkbenchError("train.precision = 'fp16' is not supported on cpu; use fp32 or bf16")
        return Precision("fp16", torch.float16, device.type == "cuda")
    raise WorkbenchError(f"train.precision = {name!r} is not known; choose auto, fp32, bf16 or fp16")


def memory_in_use(device) -> int:
    """Bytes in use: allocated GPU memory on CUDA, resident memory of this process otherwise."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)

"""Devices and number formats: what this machine has, and what a run should use.

``auto`` picks cuda, then mps, then cpu. Precision ``auto`` picks the fastest format whose
training matches fp32: on a CPU, bf16 autocast where this CPU's bf16 matmul measured clearly
faster than fp32 (``workbench.machine.probe``, cached per machine), else fp32; on CUDA, bf16 autocast
where supported, else fp16 autocast with a gradient scaler; on MPS fp32 (autocast there is
not measured here, and bf16 on MPS needs a recent macOS). Under autocast the weights, gradients
and optimizer state stay fp32 (master weights); only the matrix products run in bf16 or fp16.
An explicit fp32, bf16 or fp16 always wins over the measurement.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.machine.probe import cpu_name


def describe_devices() -> list[dict]:
    """Every device torch can use here, with what a user needs to choose (for the CPU: what
    precision ``auto`` picks and the measured bf16 speed-up behind it)."""
    import psutil
    import torch

    from workbench.machine.probe import matmul_probe

    probe = matmul_probe()  # measured once per machine (about half a second), then cached
    precision, reason = auto_precision(torch.device("cpu"))
    out = [{
        "device": "cpu", "name": cpu_name(), "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total, "available": True,
        "precision": precision, "precision_reason": reason,
        "bf16_speedup": probe.get("bf16_speedup") if probe else None,
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


def device_name(name: str) -> str:
    """``auto`` made concrete: cuda, then mps, then cpu (torch is imported only to find out)."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(name: str):
    """The torch device a run uses; a device this machine lacks is refused in words."""
    import torch

    name = device_name(name)
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
    reason: str = ""  # why this one, in words (shown by the CLI and the Train pane)

    def autocast(self, device):
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def auto_precision(device, measure: bool = True, announce=None) -> tuple[str, str]:
    """(precision, reason) that ``auto`` means on ``device`` (a torch device or its name). The
    one rule: training uses it, and the estimates ask it too, through ``choices.precision_for``.
    On a CPU it reads the cached measurement without torch (``measure=False``: fp32 until measured)."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", "auto; this GPU supports bf16: bf16 autocast"
        return "fp16", "auto; this GPU has no bf16: fp16 autocast with a gradient scaler"
    if kind == "cpu":
        from workbench.machine.probe import cpu_precision_choice, matmul_probe

        return cpu_precision_choice(matmul_probe(measure=measure, announce=announce))
    return "fp32", f"auto; autocast on {kind} is not measured here"


def resolve_precision(name: str, device, reason: str = "set in the config") -> Precision:
    """The number format ``name`` (fp32, bf16 or fp16: what ``auto`` means is decided by
    ``choices.precision_for``) on ``device``, or a WorkbenchError when the device lacks it."""
    import torch

    if name == "fp32":
        return Precision("fp32", None, False, reason)
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise WorkbenchError("train.precision = 'bf16' is not supported by this GPU; use fp16 or auto")
        if device.type == "mps":
            raise WorkbenchError("train.precision = 'bf16' is not supported on mps here; use fp32 or auto")
        return Precision("bf16", torch.bfloat16, False, reason)
    if name == "fp16":
        if device.type == "cpu":
            raise WorkbenchError("train.precision = 'fp16' is not supported on cpu; use fp32 or bf16")
        return Precision("fp16", torch.float16, device.type == "cuda", reason)
    raise WorkbenchError(f"train.precision = {name!r} is not known; choose auto, fp32, bf16 or fp16")


def memory_in_use(device) -> int:
    """Bytes in use: allocated GPU memory on CUDA, resident memory of this process otherwise."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)

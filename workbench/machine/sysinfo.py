"""What the machine offers a training run: the device ``auto`` means here, and free memory.

Kept out of the panes so tests can inject fixed numbers (snapshots must not show this
machine's RAM) and so torch is imported only when it can change the answer.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass


def _might_have_accelerator() -> bool:
    """Cheap check: without an NVIDIA driver or Apple silicon, ``auto`` is the CPU and we
    need not import torch (seconds) to find that out."""
    if os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl"):
        return True
    return sys.platform == "darwin" and platform.machine() == "arm64"


class SystemProbe:
    """The real machine. ``device_for`` may import torch: call it from a worker thread."""

    def device_for(self, choice: str) -> str:
        if choice != "auto":
            return choice
        if not _might_have_accelerator():
            return "cpu"
        from workbench.machine.device import device_name

        return device_name("auto")

    def available(self, device: str) -> dict:
        from workbench.machine.estimate import available_memory

        return available_memory(device)

    def devices(self) -> list[dict]:
        """Every device torch can use (imports torch: call it from a worker thread)."""
        from workbench.machine.device import describe_devices

        try:
            return describe_devices()
        except Exception as e:  # a broken driver must not take the app down: say so in its place
            return [{"device": "cpu", "name": f"(could not list devices: {e})", "cores": "?"}]


@dataclass
class FixedProbe:
    """A machine with fixed numbers, for tests and snapshots."""

    device: str = "cpu"
    free: int = 8 * 1024**3
    total: int = 16 * 1024**3

    def device_for(self, choice: str) -> str:
        return self.device if choice == "auto" else choice

    def available(self, device: str) -> dict:
        return {"device": device, "available": self.free, "total": self.total}

    def devices(self) -> list[dict]:
        return [{"device": "cpu", "name": "Test CPU", "cores": 2, "memory_bytes": self.total,
                 "available": True, "precision": "bf16", "bf16_speedup": 4.0,
                 "precision_reason": "auto: bf16 autocast (a test machine)"}]


def machine(probe, choice: str) -> tuple[str, dict]:
    """The device ``choice`` means on ``probe``'s machine and its free memory, as
    ``config.report.machine_now`` gives them; a broken driver gives unknown memory, saying why
    (it must not take the app down)."""
    try:
        device = probe.device_for(choice)
        return device, probe.available(device)
    except Exception as e:
        return choice, {"available": 0, "total": 0, "note": f"unknown: {e}"}

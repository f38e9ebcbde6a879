"""The choices a run makes per machine, each decided here once: the number format ``auto``
means, and the attention kernel for a shape. Training, the planner and the estimates all ask
these two functions, so what the Config pane predicts is what a run then uses.

``measure=False`` never measures (the estimates, which run while the user types): a CPU without a
cached measurement then means fp32 and SDPA. No torch import unless a measurement runs.
"""

from __future__ import annotations

from workbench.machine.device import auto_precision
from workbench.machine.probe import attention_choice, attention_probe


MEASURING_MATMUL = "measuring this CPU's bf16 and fp32 matmul speed (once per machine) …"
MEASURING_ATTENTION = "measuring attention kernels for this shape (once per machine) …"


def precision_for(precision: str, device, measure: bool = False, say=None) -> tuple[str, str]:
    """(name, reason) of the number format a run on ``device`` (a torch device or its name)
    uses for the config's ``train.precision``: ``auto`` by ``device.auto_precision``. ``say``
    hears a line before a measurement that takes a while."""
    if precision != "auto":
        return precision, "set in the config"
    return auto_precision(device, measure, announce=(lambda: say(MEASURING_MATMUL)) if say else None)


def attention_for(mc, batch_size: int, precision: str, device_kind: str, measure: bool = False,
                  say=None) -> tuple[str, str]:
    """(kernel, reason): the fused SDPA off the CPU; on a CPU the faster of SDPA and the
    explicit kernel as measured for this shape (``probe.attention_choice``, which also keeps the
    explicit kernel's probabilities within a memory cap)."""
    if device_kind != "cpu":
        return "sdpa", f"the fused kernel on {device_kind}"
    dt = "bfloat16" if precision == "bf16" else "float32"
    timing = attention_probe(mc.n_heads, mc.kv_heads, mc.max_seq_len, mc.head_dim, dt, measure=measure,
                             announce=(lambda: say(MEASURING_ATTENTION)) if say else None)
    return attention_choice(timing, batch_size, mc.n_heads, mc.max_seq_len, mc.n_layers,
                            2 if precision in ("bf16", "fp16") else 4)

"""What to trace, as one request: the model (a config with random weights, or a run and one of
its checkpoints), the input (text encoded by a real tokenizer, or random ids) and how. Plain
data without torch, so the Trace pane builds it on the UI thread; ``workbench.tracing.run.run_trace``
carries it out for the pane and for ``workbench trace`` alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from workbench.errors import WorkbenchError

INIT = "@init"  # checkpoint: the run's model freshly initialised instead of a saved checkpoint


@dataclass(frozen=True)
class TraceRequest:
    config: Optional[str] = None      # a config YAML or preset name (weights random), or
    run: Optional[str] = None         # a run in trained_models/
    checkpoint: Optional[str] = None  # of the run: a checkpoint name, None = the latest, INIT
    text: Optional[str] = None        # the input, encoded with the run's or ``tokenizer``
    tokenizer: Optional[str] = None   # a workspace tokenizer (with ``config``; overrides a run's)
    tokens: int = 8                   # without text: this many random token ids
    batch: int = 1
    seed: int = 0                     # of the random init and the random ids
    meta: bool = False                # shapes and FLOPs only, no memory for weights
    keep: tuple = ()                  # logged intermediates whose tensors are kept (e.g. "probs")
    sets: tuple = ()                  # "model.FIELD=VALUE" changes to the config (not to a run)

    def __post_init__(self):
        if (self.config is None) == (self.run is None):
            raise WorkbenchError("model: choose a config or a run to trace (one of them)")
        for name in ("tokens", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise WorkbenchError(f"{name} = {v!r} is not allowed: a whole number, at least 1")
        if self.text is not None and not self.text.strip():
            raise WorkbenchError("text is empty: type some input text, or trace random ids")
        if self.text is None and self.tokenizer is not None:
            raise WorkbenchError(f"tokenizer {self.tokenizer!r} is used only with text to encode")
        if self.sets and self.run is not None:
            raise WorkbenchError("--set changes a config's model, which a run's checkpoint cannot follow: trace "
                                 "the run as it is, or its config file with --config and --set")
        if self.checkpoint is not None and self.run is None:
            raise WorkbenchError("checkpoint: only a run has checkpoints; a config starts from random weights")

    @property
    def source(self) -> str:
        return f"run {self.run}" if self.run else f"config {self.config}"


def header_text(result: dict) -> str:
    """The lines above a printed or saved trace: what was traced, on what input, and the FLOPs."""
    B, T = result["input_shape"]
    lines = [f"{result['source']}: {result['params']:,} parameters, input ({B}, {T}) on {result['device']}"
             + (f", checkpoint {result['checkpoint']}" if result.get("checkpoint") else "")
             + (" (random token ids)" if result.get("random_ids") else "")]
    if result.get("text"):
        lines.append(f"text: {result['text']!r}")
    lines.append(f"forward FLOPs: traced {result['total_flops']:,}, estimated {result['estimated_flops']:,}")
    return "\n".join(lines)

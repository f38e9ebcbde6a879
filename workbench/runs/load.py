"""A run's model, built from its config and loaded from one of its checkpoints.
"""

from __future__ import annotations


from workbench.runs import checkpoint
from workbench.runs.folder import Run, run_config


def load_run_model(run: Run, checkpoint_name: str | None = None, device: str = "cpu", say=None):
    """The run's model with a checkpoint's weights (latest by default, see
    ``checkpoint.load_weights``; ``say`` hears a fall-back), in eval mode, and its tokenizer."""
    from workbench.model import build_model

    cfg = run_config(run)
    model = build_model(cfg.model, device=device)
    name = checkpoint.load_weights(model, run.path, checkpoint_name, say=say)
    model.eval()
    return model, run.load_tokenizer(), cfg, name

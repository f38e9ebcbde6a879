"""A workspace holding run ``tiny``: a small model trained for a few steps inside the test
session (once, however many test modules ask), on the UI tests' corpus and tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

from workbench.workspace import Workspace

_ROOTS: dict = {}
RUN = "tiny"


def tiny_cfg():
    from workbench.config.schema import load_config

    cfg = load_config("debug")
    cfg.model = cfg.model.replace(vocab_size=400, max_seq_len=32, dim=32, n_layers=2)
    cfg.train = cfg.train.replace(batch_size=4, max_steps=20, warmup_steps=2, eval_interval=10,
                                  eval_batches=2, log_interval=5, checkpoint_interval=10,
                                  keep_last=2, num_threads=1, seed=0)
    return cfg


def trained_root(tmp_path_factory, built_root: Path, corpus: Path) -> Path:
    """Session-wide: a copy of the built workspace with run ``tiny`` (checkpoints at steps
    10 and 20)."""
    if built_root not in _ROOTS:
        from workbench.training.trainer import Trainer

        root = tmp_path_factory.mktemp("trained")
        shutil.rmtree(root)
        shutil.copytree(built_root, root)
        state = Trainer.new(Workspace.at(root), tiny_cfg(), "stories-400", str(corpus), name=RUN).run()
        assert state["state"] == "finished", state
        _ROOTS[built_root] = root
    return _ROOTS[built_root]


def copy_ws(root: Path, tmp_path: Path) -> Workspace:
    dest = tmp_path / "ws"
    shutil.copytree(root, dest)
    return Workspace.at(dest)

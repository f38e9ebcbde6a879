"""Runs for generation and export tests, written by the real engine: ``Trainer`` trains a tiny
model for one step on the corpus the session tokenizer ``tok`` (the ``built`` fixture) was built
on, so the folder holds what `workbench train` writes — config, tokenizer, metrics, status, a
checkpoint with its optimizer state — in well under a second once the session has warmed up."""

from __future__ import annotations

from workbench.config.schema import Config, ModelConfig, TrainConfig
from workbench.runs.folder import get_run
from workbench.runs.load import load_run_model
from workbench.tokenizer.tokenizer import tokenizer_info
from workbench.training.trainer import Trainer

TINY = dict(vocab_size=400, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)


def make_run(ws, name: str, seed: int = 0, **model):
    """Train run ``name`` in ``ws`` for one step of ``TINY`` with ``model`` changes; returns
    (run, its model loaded from the checkpoint, in eval mode)."""
    cfg = Config(ModelConfig(**{**TINY, **model}),
                 TrainConfig(batch_size=2, max_steps=1, warmup_steps=0, eval_interval=1, eval_batches=1,
                             log_interval=1, checkpoint_interval=1, num_threads=1, seed=seed))
    source = tokenizer_info(ws, "tok").settings["data"]
    state = Trainer.new(ws, cfg, "tok", source, name=name).run()
    assert state["state"] == "finished", state
    run = get_run(ws, name)
    return run, load_run_model(run)[0]

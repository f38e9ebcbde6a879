"""Helpers for generation and export tests: a run folder with a random-init checkpoint, made in
well under a second (no training), using the session tokenizer ``tok`` of the ``built`` fixture."""

from __future__ import annotations

from workbench import checkpoint
from workbench.config import Config, ModelConfig
from workbench.model import build_model
from workbench.runs import create_run

TINY = dict(vocab_size=400, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)


def make_run(ws, name: str, seed: int = 0, **model):
    """Create run ``name`` in ``ws`` holding one checkpoint of a random model; returns (run, model)."""
    cfg = ModelConfig(**{**TINY, **model})
    net = build_model(cfg, seed=seed).eval()
    run = create_run(ws, name, Config(cfg), ws.tokenizer_path("tok"), {"name": "none"})
    checkpoint.save_checkpoint(run.path, 1, net, {"step": 1}, keep_last=3)
    return run, net

"""Parallel blocks (GPT-J, PaLM): attention and the MLP read the same normalised input side by
side, x = x + attn(norm(x)) + mlp(norm(x)), instead of one after the other. Try it beside the
default:

    workbench --experiments examples/experiments train --config debug --tokenizer T --set model.block=parallel
"""

from __future__ import annotations

import torch

from workbench.experiments import register
from workbench.experiments.registry import build
from workbench.model.base import LoggingModule
from workbench.model.mlp import make_mlp
from workbench.model.norms import make_norm


@register("block", "parallel", "attention and MLP side by side on one norm (GPT-J, PaLM)")
class ParallelBlock(LoggingModule):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.norm = make_norm(cfg)
        self.attn = build("attention", cfg.attention)(cfg, layer_idx)
        self.mlp = make_mlp(cfg)

    def forward(self, x: torch.Tensor, rope=None, mask=None, kv_cache=None) -> torch.Tensor:
        h = self.norm(x)
        self.log("normed", h)
        return x + self.attn(h, rope, mask, kv_cache) + self.mlp(h)

"""One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

from __future__ import annotations

import torch

from workbench.model.base import LoggingModule
from workbench.experiments.registry import build
from workbench.model.mlp import make_mlp
from workbench.model.norms import make_norm


class Block(LoggingModule):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = build("attention", cfg.attention)(cfg, layer_idx)
        self.mlp_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg)

    def forward(self, x: torch.Tensor, rope=None, mask=None, kv_cache=None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, mask, kv_cache)
        return x + self.mlp(self.mlp_norm(x))

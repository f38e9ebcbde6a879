"""Transformer blocks: pre-norm, x + attn(norm(x)) then x + mlp(norm(x)) (llama, GPT-2: the
default), and post-norm, x = norm(x + attn(x)) then x = norm(x + mlp(x)) (the original
Transformer's; templateGPT's minGrok option), which began as an experiment file and became
built in when it beat the default beyond the seed spread (benchmarks/EXPERIMENTS.md)."""

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


class PostNormBlock(LoggingModule):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.attn = build("attention", cfg.attention)(cfg, layer_idx)
        self.attn_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg)
        self.mlp_norm = make_norm(cfg)

    def forward(self, x: torch.Tensor, rope=None, mask=None, kv_cache=None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, rope, mask, kv_cache))
        return self.mlp_norm(x + self.mlp(x))

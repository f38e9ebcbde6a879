"""Feed-forward blocks: GELU (GPT-2) and SwiGLU (llama), picked by ``config.mlp``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..trace import LoggingModule
from .basic import Linear, dropout


class GeluMLP(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)
        self.w2 = Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)
        self.drop = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.drop(self.w2(F.gelu(self.w1(x), approximate="tanh")))


class SwiGLU(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        # gate (w1) and up (w3) projections fused into one matmul; split after
        self.hidden = cfg.ffn_dim
        self.w13 = Linear(cfg.dim, 2 * cfg.ffn_dim, bias=cfg.bias)
        self.w2 = Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)
        self.drop = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.drop(self.w2(F.silu(gate) * up))


MLPS = {"gelu": GeluMLP, "swiglu": SwiGLU}


def make_mlp(cfg) -> LoggingModule:
    return MLPS[cfg.mlp](cfg)

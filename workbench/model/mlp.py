"""Feed-forward blocks: GELU (GPT-2), SwiGLU (llama) and squared ReLU, picked by ``config.mlp``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.experiments.registry import build
from workbench.model.base import Linear, LoggingModule, dropout


class PlainMLP(LoggingModule):
    """w2(act(w1 x)): the MLPs without a gate, which differ only in ``act``."""

    def __init__(self, cfg):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)
        self.w2 = Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)
        self.drop = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.drop(self.w2(self.act(self.w1(x))))


class GeluMLP(PlainMLP):
    @staticmethod
    def act(h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h, approximate="tanh")


class SwiGLU(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        # gate (w1) and up (w3) as separate matmuls (llama's names): a fused one would need
        # its output split, and the split's backward copies the whole gradient (measured slower)
        self.w1 = Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)
        self.w3 = Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)
        self.w2 = Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)
        self.drop = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class ReluSquared(PlainMLP):
    """relu(x)^2 (Primer; the modded-nanoGPT speedruns): GELU's shape, cheaper and sparser."""

    @staticmethod
    def act(h: torch.Tensor) -> torch.Tensor:
        return F.relu(h).square()




def make_mlp(cfg) -> LoggingModule:
    return build("mlp", cfg.mlp)(cfg)

"""Normalisation layers: RMSNorm (llama) and LayerNorm (GPT-2), picked by ``config.norm``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.experiments.registry import build
from workbench.model.base import LoggingModule


class RMSNorm(LoggingModule):
    def __init__(self, dim: int, eps: float, bias: bool = False):
        super().__init__()
        # RMSNorm has no bias by definition; `bias` is accepted so both norms share a signature
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class LayerNorm(LoggingModule):
    def __init__(self, dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)




def make_norm(cfg) -> LoggingModule:
    return build("norm", cfg.norm)(cfg.dim, cfg.norm_eps, cfg.bias)

"""Post-norm blocks (the original Transformer's, and templateGPT's minGrok option): the norm
comes after each residual addition, x = norm(x + attn(x)), then x = norm(x + mlp(x)), instead
of before each sublayer. Try it beside the default:

    workbench --experiments examples/experiments train --config debug --tokenizer T --set model.block=postnorm
"""

from __future__ import annotations

import torch

from workbench.experiments import register
from workbench.experiments.registry import build
from workbench.model.base import LoggingModule
from workbench.model.mlp import make_mlp
from workbench.model.norms import make_norm


@register("block", "postnorm", "norm after each residual addition (post-LN, minGrok)")
class PostNormBlock(LoggingModule):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.attn = build("attention", cfg.attention)(cfg, layer_idx)
        self.attn_norm = make_norm(cfg)
        self.mlp = make_mlp(cfg)
        self.mlp_norm = make_norm(cfg)

    def forward(self, x: torch.Tensor, rope=None, mask=None, kv_cache=None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, rope, mask, kv_cache))
        self.log("after_attn", x)
        return self.mlp_norm(x + self.mlp(x))

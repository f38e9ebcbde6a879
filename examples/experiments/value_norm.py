"""Value norm (from lmplay): an RMS norm, with a learned gain per head dimension, on each head's
value vectors before attention mixes them, as QK-norm does for queries and keys. Try it:

    workbench --experiments examples/experiments train --config debug --tokenizer T --set model.attention=value_norm
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.experiments import register
from workbench.model.attention import Attention


@register("attention", "value_norm", "RMS-normalised values per head, with a learned gain")
class ValueNormAttention(Attention):
    def __init__(self, cfg, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.v_gain = nn.Parameter(torch.ones(self.head_dim))

    def values(self, v: torch.Tensor) -> torch.Tensor:  # v: (B, T, Hkv, D)
        v = F.rms_norm(v, (self.head_dim,), self.v_gain.to(v.dtype))  # each value vector to unit RMS, times a gain
        self.log("v_normed", v)
        return v

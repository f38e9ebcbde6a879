"""Value norm (from lmplay): an RMS norm, with a learned gain per head dimension, on each head's
value vectors before attention mixes them, as QK-norm does for queries and keys. Try it:

    workbench --experiments examples/experiments train --config debug --tokenizer T --set model.attention=value_norm
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.experiments import register
from workbench.model.attention import Attention, explicit_attention


@register("attention", "value_norm", "RMS-normalised values per head, with a learned gain")
class ValueNormAttention(Attention):
    def __init__(self, cfg, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.v_gain = nn.Parameter(torch.ones(self.head_dim))

    def forward(self, x: torch.Tensor, rope=None, mask: torch.Tensor | None = None, kv_cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qk, v = self.wqkv(x).view(B, T, H + 2 * Hkv, D).split((H + Hkv, Hkv), dim=2)
        q, k = self.rotate(self.qk_norm(qk), rope).split((H, Hkv), dim=2)
        v = F.rms_norm(v, (D,), self.v_gain)  # the change: each value vector to unit RMS, times a gain
        self.log("v_normed", v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        p = self.attn_dropout if self.training else 0.0
        if self._tracer is not None:
            y = explicit_attention(q, k, v, mask, p, log=self.log)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=mask is None and T > 1, enable_gqa=self.gqa)
        return self.resid_drop(self.wo(y.transpose(1, 2).reshape(B, T, H * D)))

"""Causal self-attention with n_kv_heads for MHA (= n_heads), GQA (between) and MQA (1).

The fast path is ``F.scaled_dot_product_attention`` (fused kernels, GQA handled natively).
While a trace is active the same attention is computed explicitly so the scores and
probabilities exist as tensors to record; outside a trace that path is never taken.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..trace import LoggingModule
from .basic import Linear, dropout
from .positions import rotary_fn


class Attention(LoggingModule):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        # q, k and v come from one matmul: one big GEMM beats three small ones on CPU
        self.wqkv = Linear(cfg.dim, (H + 2 * Hkv) * D, bias=cfg.bias)
        self.wo = Linear(H * D, cfg.dim, bias=cfg.bias)
        self.rotate = rotary_fn(cfg)
        self.attn_dropout = cfg.dropout
        self.resid_drop = dropout(cfg.dropout)
        self.gqa = Hkv != H

    def forward(self, x: torch.Tensor, rope=None, mask: torch.Tensor | None = None,
                kv_cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qk, v = self.wqkv(x).view(B, T, H + 2 * Hkv, D).split((H + Hkv, Hkv), dim=2)
        q, k = self.rotate(qk, rope).split((H, Hkv), dim=2)
        # transposed views, not copies: SDPA takes strided inputs, and its output then comes
        # back in (B, T, H, D) order so the reshape below is free
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, Hkv, S, D), S = cache pos + T
        p = self.attn_dropout if self.training else 0.0
        if self._tracer is None:
            # one query (a decode step) is the newest position and sees every key: no mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=mask is None and T > 1, enable_gqa=self.gqa)
        else:
            y = self._explicit(q, k, v, mask, p)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C)
        return self.resid_drop(self.wo(y))

    def _explicit(self, q, k, v, mask, p):
        """The math SDPA computes, with every intermediate recorded (tracing only)."""
        self.log("q", q)
        self.log("k", k)
        self.log("v", v)
        T, S = q.shape[2], k.shape[2]
        if mask is None:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        groups = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(groups, dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, S)
        # stats over the positions a query may see: masked entries are never used
        self.log("scores", scores, where=mask)
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        self.log("probs", probs, where=mask)
        probs = F.dropout(probs, p) if p > 0 else probs
        return probs @ v  # (B, H, T, D)

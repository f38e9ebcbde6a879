"""Causal self-attention with n_kv_heads for MHA (= n_heads), GQA (between) and MQA (1).

Two kernels compute training's causal attention: torch's fused
``F.scaled_dot_product_attention`` (the default, and always used with a KV cache), and an
explicit matmul-softmax-matmul that keeps the (B, H, T, T) probabilities. On a CPU in bf16 the
explicit one measured up to 2x faster for heads of 32-48 dims at T = 256, and SDPA faster for
tiny heads or in fp32, so the trainer picks per shape by measuring (``workbench.machine.probe``) and
sets it with ``Transformer.set_attention_kernel``. While a trace is active the explicit maths
runs whatever the kernel, recording q, k, v, the scores and the probabilities.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from workbench.model.base import LoggingModule
from workbench.model.base import Linear, dropout
from workbench.model.positions import rotary_fn

KERNELS = ("sdpa", "explicit")
_BIAS: dict = {}


def _causal_bias(T: int, S: int, dtype, device) -> torch.Tensor:
    """(T, S) additive mask for T queries at the end of S keys: 0 where a query may look, -inf
    after it; made once per shape."""
    key = (T, S, dtype, str(device))
    if key not in _BIAS:
        if len(_BIAS) > 8:
            _BIAS.clear()
        _BIAS[key] = torch.full((T, S), float("-inf"), dtype=dtype, device=device).triu(S - T + 1)
    return _BIAS[key]


def explicit_attention(q, k, v, mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                       log=None) -> torch.Tensor:
    """softmax(q kᵀ / √D + mask) v as three kernels, in the inputs' dtype (under autocast the
    softmax would go fp32): q (B, H, T, D), k/v (B, Hkv, S, D) -> (B, H, T, D). Causal (the T
    queries are the last T of S positions) unless ``mask`` (T, S), True where a query may look,
    says otherwise. The one copy of this maths: the ``explicit`` training kernel, and the
    trace's, which passes ``log`` (``LoggingModule.log``) to record q, k, v, scores and probs."""
    B, H, T, D = q.shape
    S = k.shape[2]
    off = contextlib.nullcontext() if q.device.type == "meta" else torch.autocast(q.device.type, enabled=False)
    with off:
        if log is not None:
            log("q", q)
            log("k", k)
            log("v", v)
        if k.shape[1] != H:
            k = k.repeat_interleave(H // k.shape[1], dim=1)
            v = v.repeat_interleave(H // v.shape[1], dim=1)
        if mask is None:
            bias = _causal_bias(T, S, q.dtype, q.device)
        else:
            bias = torch.zeros(T, S, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        s = torch.baddbmm(bias.expand(B * H, T, S), q.reshape(B * H, T, D), k.reshape(B * H, S, D).transpose(1, 2),
                          alpha=1.0 / math.sqrt(D))  # (B*H, T, S)
        p = torch.softmax(s, dim=-1)
        if log is not None:
            # stats over the positions a query may see: masked entries are never used
            seen = mask if mask is not None else torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            log("scores", s.view(B, H, T, S), seen)
            log("probs", p.view(B, H, T, S), seen)
        if dropout_p > 0:
            p = F.dropout(p, dropout_p)
        return torch.bmm(p, v.reshape(B * H, S, D)).view(B, H, T, D)


def _qk_rms(qk: torch.Tensor) -> torch.Tensor:
    """QK-norm: each head's query and key vectors to unit RMS (no weight), bounding the scores."""
    return F.rms_norm(qk, (qk.shape[-1],))


def _no_norm(qk: torch.Tensor) -> torch.Tensor:
    return qk


def causal_attention(kernel: str, q, k, v, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal self-attention over a whole window with the named kernel (see ``KERNELS``)."""
    if kernel == "explicit":
        return explicit_attention(q, k, v, None, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True,
                                          enable_gqa=k.shape[1] != q.shape[1])


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
        self.qk_norm = _qk_rms if cfg.qk_norm else _no_norm
        self.attn_dropout = cfg.dropout
        self.resid_drop = dropout(cfg.dropout)
        self.gqa = Hkv != H
        self.kernel = "sdpa"

    def values(self, v: torch.Tensor) -> torch.Tensor:
        """The value vectors (B, T, Hkv, D) of the new positions, before attention mixes them.
        Unchanged here; an experiment's subclass may change them (a value norm, value embeddings)."""
        return v

    def forward(self, x: torch.Tensor, rope=None, mask: torch.Tensor | None = None,
                kv_cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qk, v = self.wqkv(x).view(B, T, H + 2 * Hkv, D).split((H + Hkv, Hkv), dim=2)
        q, k = self.rotate(self.qk_norm(qk), rope).split((H, Hkv), dim=2)
        v = self.values(v)
        # transposed views, not copies: SDPA takes strided inputs, and its output then comes
        # back in (B, T, H, D) order so the reshape below is free
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, Hkv, S, D), S = cache pos + T
        p = self.attn_dropout if self.training else 0.0
        if self._tracer is not None:  # the maths spelled out, so its intermediates exist to record
            y = explicit_attention(q, k, v, mask, p, log=self.log)
        elif self.kernel == "explicit" and kv_cache is None and mask is None:
            y = explicit_attention(q, k, v, None, p)
        else:
            # one query (a decode step) is the newest position and sees every key: no mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=mask is None and T > 1, enable_gqa=self.gqa)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C)
        return self.resid_drop(self.wo(y))

"""The GPT/Llama-family transformer: embeddings, blocks, final norm, output head.

``forward(idx, kv_cache=None)`` returns logits (B, T, vocab_size); ``forward(idx,
targets=t)`` returns the mean loss instead, computed from the last hidden states without the
batch's full logits (``model.loss.linear_cross_entropy``), which is how training calls it. Variants (norm, positions, MLP, bias, tied embeddings) are fixed when the
model is built, so forward has no per-variant branches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workbench.model.base import LoggingModule
from workbench.model.base import Embedding, Linear, dropout
from workbench.experiments.registry import build
from workbench.model.loss import linear_cross_entropy
from workbench.model.norms import make_norm
from workbench.model.positions import make_positions


class Transformer(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.tok_emb = Embedding(cfg.vocab_size, cfg.dim)
        self.pos = make_positions(cfg)
        self.drop = dropout(cfg.dropout)
        block = build("block", cfg.block)
        self.layers = nn.ModuleList(block(cfg, i) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.lm_head = Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor, kv_cache=None, logits_to_keep: int = 0,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V); with ``logits_to_keep`` n > 0 only the last n positions' (B, n, V),
        which spares a prefill the output layer for every prompt token (generation needs one).
        With ``targets`` (B, T) the mean next-token loss (a scalar) instead of logits."""
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.pos
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than the model's "
                             f"max_seq_len {self.config.max_seq_len}")
        x = self.drop(self.pos(self.tok_emb(idx), start))  # (B, T, C)
        rope = self.pos.rotary(start, T)
        # with cached keys the query block sits at the end of the key range; SDPA's is_causal
        # aligns top-left, so pass an explicit mask there (and only there); a single query
        # (a decode step) sees every key and needs none
        mask = None if start == 0 or T == 1 else torch.ones(
            T, start + T, dtype=torch.bool, device=idx.device).tril(start)
        x = self.blocks(x, idx, rope, mask, kv_cache)
        cap = self.config.logit_softcap
        if targets is not None:
            return linear_cross_entropy(self.norm(x), self.lm_head.weight, targets, softcap=cap)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        if cap:
            logits = cap * torch.tanh(logits / cap)
        if kv_cache is not None:
            kv_cache.advance(T)
        return logits

    def blocks(self, x: torch.Tensor, idx: torch.Tensor, rope, mask, kv_cache) -> torch.Tensor:
        """The residual stream through every block. A whole-model experiment (a subclass
        registered as a ``model`` variant) may override this, e.g. to give layers something
        computed from the token ids ``idx``."""
        for layer in self.layers:
            x = layer(x, rope, mask, kv_cache)
        return x

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> "Transformer":
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2*n_layers)."""
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                is_resid = name.endswith(".wo") or name.endswith(".mlp.w2")
                nn.init.normal_(m.weight, 0.0, resid_std if is_resid else std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                if m is self.tok_emb and self.config.tie_embeddings:
                    continue  # already initialised as lm_head.weight
                nn.init.normal_(m.weight, 0.0, std)
            elif hasattr(m, "reset_parameters") and not list(m.children()):
                m.reset_parameters()
        return self

    def set_attention_kernel(self, kernel: str) -> None:
        """Which kernel computes full-window causal attention (``attention.KERNELS``)."""
        from workbench.model.attention import KERNELS, Attention

        if kernel not in KERNELS:
            raise ValueError(f"attention kernel {kernel!r} is not one of {', '.join(KERNELS)}")
        for m in self.modules():
            if isinstance(m, Attention):
                m.kernel = kernel

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                seed: int | None = None) -> Transformer:
    """Build and initialise a model; on the ``meta`` device only shapes exist (no memory)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = build("model", cfg.arch)(cfg)  # Transformer, or an experiment's subclass of it
        if str(device) != "meta":
            model.init_weights()
    return model.to(dtype) if dtype is not None else model

"""Value embeddings (modded-nanogpt, nanochat): extra token-embedding tables whose rows are mixed
into the attention values, v = a*v + b*ve[token], with learned a and b per layer. Each of
``ve_layers`` tables feeds one of the first layers and, shared, the matching one of the last
layers (modded-nanogpt's layout: tables 0..n-1 at layers 0..n-1 and L-n..L-1). Each table costs
vocab_size x (n_kv_heads * head_dim) parameters, which the token lookup makes cheap to compute.
A whole model (``model.arch: value_embed``), because the layers need the token ids.

It began as an experiment file and became built in when it beat the default recipe beyond the
seed spread at equal tokens (benchmarks/EXPERIMENTS.md); it is registered in
``experiments.registry`` like every built-in part, with its field ``model.ve_layers``.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.model.attention import Attention
from workbench.model.base import Embedding
from workbench.model.transformer import Transformer


class ValueEmbedAttention(Attention):
    """Attention whose values take a value embedding, set by the model before each call."""

    def __init__(self, cfg, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.ve: torch.Tensor | None = None  # (B, T, Hkv * D) for this call's tokens

    def values(self, v: torch.Tensor) -> torch.Tensor:
        if self.ve is None:
            return v
        ve = self.ve.view_as(v)
        self.log("value_embed", ve)
        return (self.lambdas[0] * v + self.lambdas[1] * ve).to(v.dtype)  # bf16 stays bf16 under autocast


def fed_layers(n_layers: int, ve_layers: int) -> dict[int, int]:
    """Layer -> the table it reads: tables 0..n-1 at layers 0..n-1 and again at L-n..L-1."""
    n = min(ve_layers, n_layers)
    return {**{i: i for i in range(n)}, **{n_layers - n + i: i for i in range(n)}}


class ValueEmbedTransformer(Transformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        n = min(cfg.ve_layers, cfg.n_layers)
        self.value_embeds = nn.ModuleList(Embedding(cfg.vocab_size, cfg.kv_heads * cfg.head_dim) for _ in range(n))
        self.table_of = fed_layers(cfg.n_layers, cfg.ve_layers)
        for i in self.table_of:
            self.layers[i].attn = ValueEmbedAttention(cfg, i)

    def blocks(self, x, idx, rope, mask, kv_cache):
        tables = [ve(idx) for ve in self.value_embeds]
        for i, layer in enumerate(self.layers):
            if i in self.table_of:
                layer.attn.ve = tables[self.table_of[i]]
            x = layer(x, rope, mask, kv_cache)
            if i in self.table_of:
                layer.attn.ve = None  # the batch's tensors are not kept past this call
        return x

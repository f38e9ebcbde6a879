"""A pre-allocated key/value cache for incremental decoding.

Per layer one key and one value buffer of shape (B, n_kv_heads, max_seq_len, head_dim) is
allocated up front, so decoding never reallocates. ``Transformer.forward(idx, kv_cache=c)``
writes the new keys/values at ``c.pos``, attends over ``[0, c.pos + T)``, then advances
``c.pos`` by T. The no-cache forward is the oracle this must agree with.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, cfg, batch_size: int, max_seq_len: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        S = cfg.max_seq_len if max_seq_len is None else max_seq_len
        if not 1 <= S <= cfg.max_seq_len:
            raise ValueError(f"KV cache length {S} must be between 1 and the model's "
                             f"max_seq_len {cfg.max_seq_len}")
        shape = (batch_size, cfg.kv_heads, S, cfg.head_dim)  # (B, Hkv, S, D)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.batch_size = batch_size
        self.max_seq_len = S
        self.pos = 0

    @classmethod
    def for_model(cls, model, batch_size: int, max_seq_len: int | None = None) -> "KVCache":
        p = next(model.parameters())
        return cls(model.config, batch_size, max_seq_len, p.device, p.dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, D) at the current position; return all keys/values so far."""
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, T: int) -> None:
        self.pos += T

    def reset(self) -> None:
        self.pos = 0

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep the batch rows ``index`` (in that order, repeats allowed): beam search moves each
        surviving beam's keys and values to its new row (and one row becomes several)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]
        self.batch_size = int(index.numel())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

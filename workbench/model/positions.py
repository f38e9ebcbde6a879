"""Position information: rotary (RoPE, real-valued), a learned table, or none (NoPE).

RoPE is computed with real cos/sin tables instead of complex numbers so it runs on every
backend (MPS has no complex support). The half-split layout (rotate the first half of each
head against the second, as GPT-NeoX and Hugging Face do) avoids strided interleaving.
"""

from __future__ import annotations

import torch

from workbench.model.base import LoggingModule
from workbench.model.base import Embedding
from workbench.experiments.registry import build

Rotary = tuple[torch.Tensor, torch.Tensor]  # cos, sin: (T, 1, D/2), broadcast over heads


class NoPositions(LoggingModule):
    """NoPE: the causal mask alone tells tokens apart."""

    @classmethod
    def from_config(cls, cfg) -> "NoPositions":
        return cls()

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x

    def rotary(self, start: int, T: int) -> Rotary | None:
        return None


class LearnedPositions(LoggingModule):
    """GPT-2: a learned vector per absolute position, added to the token embedding."""

    @classmethod
    def from_config(cls, cfg) -> "LearnedPositions":
        return cls(cfg.max_seq_len, cfg.dim)

    def __init__(self, max_seq_len: int, dim: int):
        super().__init__()
        self.emb = Embedding(max_seq_len, dim)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:  # (B, T, C)
        # a slice of the table rather than an index lookup: the positions are contiguous
        return x + self.emb.weight[start:start + x.shape[1]]

    def rotary(self, start: int, T: int) -> Rotary | None:
        return None


class RotaryPositions(LoggingModule):
    """RoPE: rotates query/key pairs by a position-dependent angle inside attention."""

    rotates_qk = True  # attention applies ``rotary``'s angles to q and k (``rotary_fn``)

    @classmethod
    def from_config(cls, cfg) -> "RotaryPositions":
        return cls(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)

    def __init__(self, max_seq_len: int, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
        # not persistent: derived from the config, so checkpoints stay free of them
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x

    def rotary(self, start: int, T: int) -> Rotary:
        return self.cos[start:start + T, None], self.sin[start:start + T, None]


def apply_rotary(qk: torch.Tensor, rope: Rotary) -> torch.Tensor:
    """Rotate queries and keys together, (B, T, H + Hkv, D), in the layout the matmul wrote.

    One pass over both (rather than q and k separately, after transposing) halves the
    elementwise kernels, which dominate RoPE's cost on CPU.
    """
    cos, sin = rope
    cos, sin = cos.to(qk.dtype), sin.to(qk.dtype)
    x1, x2 = qk.chunk(2, dim=-1)  # (B, T, H + Hkv, D/2) each
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def no_rotary(qk: torch.Tensor, rope: Rotary | None) -> torch.Tensor:
    return qk


def make_positions(cfg) -> LoggingModule:
    """The positions variant ``cfg.pos`` names (``experiments.registry``), built from the config."""
    cls = build("pos", cfg.pos)
    return cls.from_config(cfg) if hasattr(cls, "from_config") else cls(cfg)


def rotary_fn(cfg):
    """The function attention uses on q and k, fixed when the model is built: the rotation
    for a positions variant that says it ``rotates_qk``, else none."""
    return apply_rotary if getattr(build("pos", cfg.pos), "rotates_qk", False) else no_rotary

"""AdamW with decay only on matrices, and the learning-rate schedule (warm-up, then decay)."""

from __future__ import annotations

import math


def make_optimizer(model, tc, device):
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kw = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=1e-8)
    # Fused AdamW runs one kernel for all parameters (CPU and CUDA); fall back where it is missing.
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda", "mps"), **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def lr_at(tc, step: int, progress: float) -> float:
    """Learning rate for ``step`` (0-based) with ``progress`` in [0, 1] through the budget."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    p = min(max(progress, 0.0), 1.0)
    if tc.schedule == "linear":
        return tc.lr + (tc.min_lr - tc.lr) * p
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * p))

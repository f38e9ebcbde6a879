"""The language-modelling loss, kept outside the model so forward() returns only logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean next-token cross-entropy; logits (B, T, V), targets (B, T) already shifted."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)

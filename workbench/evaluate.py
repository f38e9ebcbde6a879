"""Honest evaluation: a fixed held-out set, dropout off, token-weighted means.

Loss is the mean next-token cross-entropy over the first ``max_batches`` sequential windows of
the validation tokens (the same windows every time, so evaluations are comparable). Perplexity
is ``exp(mean loss)``; bits per byte is ``loss / ln 2 * tokens / bytes`` with the validation
split's own token and byte counts, so runs with different tokenizers compare. Top-1 and top-5
are teacher-forcing accuracies. The result names the precision the forward ran in (a run
evaluates in the precision it trains in; ``workbench eval --precision fp32`` re-checks in fp32).
"""

from __future__ import annotations

import math


def evaluate(model, tokens, batch_size: int, seq_len: int, max_batches: int | None,
             bytes_per_token: float, device, precision=None) -> dict:
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total_loss = 0.0
    n = top1 = top5 = 0
    try:
        with torch.no_grad():
            for batch in tokens.windows(batch_size, seq_len, max_batches):
                b = torch.from_numpy(batch).to(device)
                x, y = b[:, :-1], b[:, 1:]
                ctx = precision.autocast(device) if precision is not None else _null()
                with ctx:
                    logits = model(x)
                logits = logits.float().reshape(-1, logits.shape[-1])
                y = y.reshape(-1)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                k = min(5, logits.shape[-1])
                top = logits.topk(k, dim=-1).indices
                top1 += (top[:, 0] == y).sum().item()
                top5 += (top == y[:, None]).any(dim=-1).sum().item()
                n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no validation windows to evaluate")
    loss = total_loss / n
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 700.0)),
        "bpb": loss / math.log(2) / bytes_per_token,
        "top1": top1 / n,
        "top5": top5 / n,
        "val_tokens": n,
        "precision": precision.name if precision is not None else "fp32",
    }


def _null():
    import contextlib

    return contextlib.nullcontext()

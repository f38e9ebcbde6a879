"""The language-modelling loss, kept apart from the logits so forward() can return either.

``lm_loss`` is the mean next-token cross-entropy of logits. ``linear_cross_entropy`` computes the
same number from the final hidden states and the output layer's weight without materialising the
batch's (B*T, V) logits in fp32 and their log-softmax copies: it walks the rows in chunks, and
while each chunk's logits are hot it turns them into their gradient (softmax minus one-hot), so
backward is two matmuls. On a CPU at vocab 4096 the head and loss ran 1.2-2.2x faster than
``F.linear`` + ``F.cross_entropy`` and use a fraction of the memory (``benchmarks`` note in the
README); it is what training uses on a CPU. Elsewhere the plain path runs (not measured there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1
# rows per chunk: about 4 MB of fp32 logits, small enough to stay in cache
CHUNK_ELEMENTS = 1 << 20


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean next-token cross-entropy; logits (B, T, V), targets (B, T) already shifted."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = mean CE(x @ w.T, t); the gradients are made in forward and scaled in backward."""

    @staticmethod
    def forward(ctx, x, w, targets, dtype, chunk: int, ignore_index: int, need: bool, cap: float | None):
        N, V = x.shape[0], w.shape[0]
        valid_all = targets != ignore_index
        inv = 1.0 / max(1, int(valid_all.sum()))
        with torch.autocast(x.device.type, enabled=False):
            xc_all, wc = x.to(dtype), w.to(dtype)
            acc = torch.float64 if dtype == torch.float64 else torch.float32  # softmax and loss
            loss = torch.zeros((), dtype=acc, device=x.device)
            # grad of the logits, in the compute dtype (what autocast's backward would hold)
            P = torch.empty(N, V, dtype=dtype, device=x.device) if need else None
            for s in range(0, N, chunk):
                t = targets[s:s + chunk].clamp(min=0)[:, None]
                valid = valid_all[s:s + chunk].to(acc)
                logits = torch.mm(xc_all[s:s + chunk], wc.t()).to(acc)  # (n, V)
                if cap:  # soft cap: z = c tanh(l / c), and dz/dl = 1 - tanh^2 scales the gradient
                    th = torch.tanh(logits.div_(cap))
                    logits = th * cap
                lse = torch.logsumexp(logits, dim=-1)
                loss += ((lse - logits.gather(1, t)[:, 0]) * valid).sum()
                if need:
                    p = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                    p.scatter_add_(1, t, -valid[:, None])
                    p.mul_((valid * inv)[:, None])
                    if cap:
                        p.mul_(1 - th.square_())
                    P[s:s + chunk] = p
            if need:
                ctx.save_for_backward(torch.mm(P, wc).to(x.dtype), torch.mm(P.t(), xc_all).to(w.dtype))
        return loss * inv

    @staticmethod
    def backward(ctx, g):
        gx, gw = ctx.saved_tensors
        return gx * g, gw * g, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX, softcap: float | None = None) -> torch.Tensor:
    """Mean CE of ``hidden @ weight.T`` (soft-capped at ``softcap`` when given) against
    ``targets``; hidden (B, T, C), weight (V, C)."""
    x, t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if x.device.type != "cpu":
        logits = F.linear(x, weight).float()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        return lm_loss(logits, t, ignore_index)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else weight.dtype
    chunk = max(32, CHUNK_ELEMENTS // weight.shape[0])
    # forward runs with grad mode off, so whether gradients are wanted is decided out here
    need = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(x, weight, t, dtype, chunk, ignore_index, need, softcap)

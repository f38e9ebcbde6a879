"""Model health over training: what happens inside each layer, measured every
``train.health_interval`` optimizer steps and appended to the run's ``health.jsonl``.

Per layer (each of ``model.layers``, the transformer blocks):

- ``grad_norm``: the L2 norm of the layer's gradients, after the loss scaler is undone and
  before clipping (what the layer's backward produced);
- ``update_ratio``: ‖W after the step − W before‖ / ‖W before‖ over the layer's parameters,
  the optimizer's real step (weight decay included), not a formula for it;
- ``act_rms``: the RMS of the layer's output (the residual stream after the block);
- ``attn_entropy``: the mean entropy, in nats, of the attention distributions of every head and
  query (a query at position t can spread over t + 1 keys, so ln(t + 1) is its ceiling).

The last two come from one extra forward pass, without gradients, on a fixed batch of
validation sequences (the same at every measurement, so a change is the model's, not the
data's), in the run's precision, with attention written out so its probabilities exist.
Measured overhead is in benchmarks/HEALTH.md. ``flags`` names the layers whose update ratio
leaves a sane band (too small: the layer is not learning; too large: it may diverge).

No torch at import: ``read_health``, ``flags`` and ``table`` serve the CLI and the UI.
"""

from __future__ import annotations

import math
from pathlib import Path

HEALTH = "health.jsonl"
QUANTITIES = ("update_ratio", "grad_norm", "act_rms", "attn_entropy")
LABELS = {"grad_norm": "gradient norm", "update_ratio": "update/weight", "act_rms": "activation RMS",
          "attn_entropy": "attention entropy (nats)"}
SHORT = {"grad_norm": "grad", "update_ratio": "upd/w", "act_rms": "act rms", "attn_entropy": "entropy"}
LOG_SCALE = {"grad_norm": True, "update_ratio": True, "act_rms": True, "attn_entropy": False}
PROBE_SEQUENCES = 4  # the fixed batch of the extra forward
# update/weight per step: below LOW while the learning rate is at least LR_AWAKE of its peak, a
# layer is not learning; above HIGH it moves a tenth of itself or more each step.
LOW, HIGH = 1e-5, 1e-1
LR_AWAKE = 0.1


class HealthMonitor:
    """Measures one step's health: ``before_step()`` between backward and the optimizer step,
    ``after_step()`` after it (the trainer calls both on the steps ``due`` says, rank 0 only)."""

    def __init__(self, model, interval: int, probe_idx, autocast):
        self.model, self.interval, self.probe_idx, self.autocast = model, interval, probe_idx, autocast
        self.groups = [[p for p in layer.parameters() if p.requires_grad] for layer in model.layers]
        self._before = None
        self._grads = None

    def due(self, next_step: int) -> bool:
        """Whether the step about to finish (numbered ``next_step``) is measured."""
        return self.interval > 0 and next_step % self.interval == 0

    def before_step(self) -> None:
        """Gradient norms (already unscaled, not yet clipped) and a copy of the weights."""
        import torch

        with torch.no_grad():
            self._grads = [_norm([p.grad for p in g if p.grad is not None]) for g in self.groups]
            self._before = [[p.detach().clone() for p in g] for g in self.groups]

    def after_step(self, step: int, tokens: int, lr: float) -> dict:
        import torch

        with torch.no_grad():
            ratios = []
            for g, before in zip(self.groups, self._before):
                delta = _norm([p.detach() - b for p, b in zip(g, before)])
                w = _norm(before)
                ratios.append(delta / w if w > 0 else float("nan"))
        self._before = None
        act, ent = probe(self.model, self.probe_idx, self.autocast)
        return {"step": step, "tokens": tokens, "lr": lr, "grad_norm": self._grads, "update_ratio": ratios,
                "act_rms": act, "attn_entropy": ent}


def _norm(tensors) -> float:
    import torch

    if not tensors:
        return 0.0
    return math.sqrt(sum(float(torch.sum(t.float() * t.float())) for t in tensors))


class _EntropyRecorder:
    """Stands in for a tracer on the attention modules for one forward: it keeps the mean
    entropy of the ``probs`` each logs (``model.base.LoggingModule.log``) and ignores the rest."""

    def __init__(self):
        self.entropy: dict[int, list[float]] = {}
        self.layer_of: dict[int, int] = {}

    def record_log(self, module, name, tensor, where) -> None:
        import torch

        if name != "probs":
            return
        p = tensor.detach().float()  # (B, H, T, S); masked entries are exactly 0
        h = -torch.special.xlogy(p, p).sum(-1)  # (B, H, T)
        self.entropy.setdefault(self.layer_of[id(module)], []).append(float(h.mean()))


def probe(model, idx, autocast) -> tuple[list, list]:
    """(activation RMS per layer, attention entropy per layer or None where a layer's attention
    logs no probabilities) from one forward on ``idx`` without gradients, in eval mode."""
    import torch

    from workbench.model.base import LoggingModule

    rec = _EntropyRecorder()
    rms: dict[int, float] = {}
    handles, marked = [], []
    for i, layer in enumerate(model.layers):
        handles.append(layer.register_forward_hook(
            lambda m, a, out, i=i: rms.__setitem__(i, float(out.detach().float().pow(2).mean().sqrt()))))
        for m in layer.modules():
            if isinstance(m, LoggingModule):
                rec.layer_of[id(m)] = i
                m._tracer = rec
                marked.append(m)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast():
            model(idx, targets=idx)  # the fused loss: no (B, T, V) logits to make and drop
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        for m in marked:
            m.__dict__.pop("_tracer", None)
    n = len(model.layers)
    ent = [sum(rec.entropy[i]) / len(rec.entropy[i]) if rec.entropy.get(i) else None for i in range(n)]
    return [rms.get(i) for i in range(n)], ent


def probe_batch(data, T: int, n: int = PROBE_SEQUENCES, seed: int = 0):
    """The fixed validation sequences (n, T) the activation and entropy probe reads."""
    import numpy as np
    import torch

    return torch.from_numpy(data.val.sample_batch(n, T, np.random.default_rng(seed)))[:, :-1].contiguous()


def as_scalars(row: dict) -> dict:
    """A health row as a flat row for the curve tools (``training.loggers``): kind ``health``,
    one number per quantity and layer, named ``QUANTITY/L<i>`` (a missing figure left out)."""
    out = {"kind": "health", "step": row["step"]}
    for q in QUANTITIES:
        for i, v in enumerate(row.get(q) or []):
            if v is not None:
                out[f"{q}/L{i}"] = v
    return out


# ---------------------------------------------------------------- reading

def read_health(run_path: Path) -> list[dict]:
    from workbench.runs.folder import read_jsonl

    return read_jsonl(Path(run_path) / HEALTH)


def flags(row: dict, peak_lr: float | None = None) -> list[str]:
    """One line per layer whose update ratio leaves [LOW, HIGH] (too small only counts while
    the learning rate is at least LR_AWAKE of ``peak_lr``) or whose figures are not finite."""
    return [text for _, text in layer_flags(row, peak_lr)]


def layer_flags(row: dict, peak_lr: float | None = None) -> list[tuple[int, str]]:
    """``flags`` with the layer each is about: (layer, line)."""
    out = []
    lr = row.get("lr") or 0.0
    awake = peak_lr is None or (peak_lr > 0 and lr >= LR_AWAKE * peak_lr)
    for i, r in enumerate(row.get("update_ratio") or []):
        bad = [q for q in QUANTITIES if _at(row, q, i) is not None and not math.isfinite(_at(row, q, i))]
        at = f"at step {row['step']}"
        if bad:
            out.append((i, f"layer {i}: {', '.join(LABELS[q] for q in bad)} not finite {at}"))
        elif r > HIGH:
            out.append((i, f"layer {i}: update/weight {r:.2g} > {HIGH:g} {at}: too large, may diverge"))
        elif awake and r < LOW:
            out.append((i, f"layer {i}: update/weight {r:.2g} < {LOW:g} {at}: too small, not learning"))
    return out


def _at(row: dict, q: str, i: int):
    vals = row.get(q) or []
    return vals[i] if i < len(vals) else None


def run_flags(rows: list[dict]) -> list[tuple[int, str]]:
    """``layer_flags`` of the newest row, with the run's peak learning rate so far."""
    if not rows:
        return []
    return layer_flags(rows[-1], max((r.get("lr") or 0.0) for r in rows))


def fmt(q: str, v) -> str:
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    if q == "attn_entropy":
        return f"{v:.3f}"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def table(row: dict) -> tuple[list[str], list[list[str]]]:
    """(header, one line per layer) of one health row, for ``workbench runs health``."""
    n = len(row.get("update_ratio") or row.get("grad_norm") or [])
    header = ["layer"] + [LABELS[q] for q in QUANTITIES]
    lines = [[str(i)] + [fmt(q, _at(row, q, i)) for q in QUANTITIES] for i in range(n)]
    return header, lines


def report(run, quantity: str | None = None, last: int = 20) -> dict:
    """The health verb (``workbench runs health`` and the Train pane read the same rows): a
    run's newest health row, its flags, and the last ``last`` rows' ``quantity`` per layer."""
    from workbench.errors import WorkbenchError

    if quantity is not None and quantity not in QUANTITIES:
        raise WorkbenchError(f"--quantity {quantity!r} is not one of {', '.join(QUANTITIES)}")
    rows = read_health(run.path)
    if not rows:
        raise WorkbenchError(f"run {run.name!r} has no health records ({HEALTH}): it trained with "
                             "train.health_interval = 0 or before health was recorded; train it on with "
                             "--set train.health_interval=50")
    out = {"run": run.name, "step": rows[-1]["step"], "latest": rows[-1], "flags": [t for _, t in run_flags(rows)],
           "records": len(rows)}
    if quantity is not None:
        out["quantity"] = quantity
        out["history"] = [{"step": r["step"], quantity: r.get(quantity)} for r in rows[-last:]]
    return out

"""Optimizers and the learning-rate schedule.

``adamw``: AdamW on everything, weight decay on matrices only (fused where torch has it).
An experiment may register its own (``@register("optimizer", NAME)`` on a function of
(model, train config, device) that returns a torch optimizer).

``muon``: Muon (``torch.optim.Muon``, torch >= 2.9) on the 2-D hidden matrices — attention and
MLP projections — and AdamW on the embedding, the output head, norms and biases, as Muon's
authors use it. Muon's update is scaled to match AdamW's RMS (Moonshot's rule), so both share
``train.lr`` and the schedule. Both live in one ``Optimizers`` object that trains, checkpoints and
resumes like a single optimizer.

The schedule: linear warm-up, then cosine, linear or constant decay over the budget, or
warmup-stable-decay (``wsd``): the peak rate until the last ``decay_fraction`` of the budget,
then linear to ``min_lr``. The budget's progress is the largest of steps, tokens and elapsed time
against their limits, so a time budget decays on the clock.
"""

from __future__ import annotations

import math

from workbench.errors import WorkbenchError


class Optimizers:
    """Several torch optimizers stepped together (AdamW alone, or Muon plus AdamW)."""

    def __init__(self, optimizers: list):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def defaults(self) -> dict:
        return self.optimizers[-1].defaults  # AdamW's, which is last

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers],
                "kinds": [type(o).__name__ for o in self.optimizers]}

    def load_state_dict(self, sd: dict) -> None:
        if "optimizers" not in sd:  # a checkpoint from before several optimizers: one AdamW
            sd = {"optimizers": [sd], "kinds": ["AdamW"]}
        kinds = [type(o).__name__ for o in self.optimizers]
        if sd.get("kinds") != kinds:
            raise ValueError(f"the checkpoint was trained with {'+'.join(sd.get('kinds') or ['?'])}, "
                             f"this run uses {'+'.join(kinds)}")
        for o, s in zip(self.optimizers, sd["optimizers"]):
            o.load_state_dict(s)


def _adamw(groups, tc, device):
    import torch

    kw = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=1e-8)
    # Fused AdamW runs one kernel for all parameters (CPU and CUDA); fall back where it is missing.
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda", "mps"), **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def _groups(params, tc) -> list[dict]:
    """AdamW's groups: weight decay on matrices only (not on norms and biases)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [g for g in ({"params": decay, "weight_decay": tc.weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def adamw(model, tc, device):
    """AdamW on every parameter (the built-in optimizer ``adamw``)."""
    return _adamw(_groups([p for p in model.parameters() if p.requires_grad], tc), tc, device)


def muon(model, tc, device) -> Optimizers:
    """Muon on the 2-D hidden matrices (the weights of linear layers but the output head), AdamW
    on embedding tables, the head, norms and biases (the built-in optimizer ``muon``)."""
    import torch

    head = id(model.lm_head.weight)  # tied or not: the output layer stays with AdamW
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)} - {head}
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() == 2 and id(p) in linear]
    rest = [p for p in params if not (p.dim() == 2 and id(p) in linear)]
    opts = []
    if hidden:
        if not hasattr(torch.optim, "Muon"):
            raise WorkbenchError(f"train.optimizer = 'muon' needs torch >= 2.9 (this is {torch.__version__}); "
                                 "use adamw")
        opts.append(torch.optim.Muon(hidden, lr=tc.lr, weight_decay=tc.weight_decay, momentum=0.95,
                                     nesterov=True, adjust_lr_fn="match_rms_adamw"))
    opts.append(_adamw(_groups(rest, tc), tc, device))
    return Optimizers(opts)


def make_optimizer(model, tc, device) -> Optimizers:
    """The optimizer ``tc.optimizer`` names (built in or an experiment's), as one ``Optimizers``
    whose learning rate the schedule sets (each group's ``lr``)."""
    import torch

    from workbench.experiments.registry import build

    made = build("optimizer", tc.optimizer)(model, tc, device)
    if isinstance(made, Optimizers):
        return made
    if not isinstance(made, torch.optim.Optimizer):
        raise WorkbenchError(f"optimizer {tc.optimizer!r} returned {type(made).__name__}, not a torch.optim.Optimizer")
    return Optimizers([made])


def lr_at(tc, step: int, progress: float) -> float:
    """Learning rate for ``step`` (0-based) with ``progress`` in [0, 1] through the budget."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.schedule == "constant":
        return tc.lr
    p = min(max(progress, 0.0), 1.0)
    if tc.schedule == "linear":
        return tc.lr + (tc.min_lr - tc.lr) * p
    if tc.schedule == "wsd":
        start = 1.0 - tc.decay_fraction
        if p <= start:
            return tc.lr
        return tc.lr + (tc.min_lr - tc.lr) * (p - start) / tc.decay_fraction
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * p))

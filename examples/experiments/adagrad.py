"""Adagrad (lmplay's optimizer experiment): one learning rate per parameter, scaled by the root of
its summed squared gradients. The schedule still sets the base rate (``train.lr``). Try it:

    workbench --experiments examples/experiments train --config debug --tokenizer T \\
        --set train.optimizer=adagrad --set train.lr=0.01
"""

from __future__ import annotations

import torch

from workbench.experiments import option, register


@register("optimizer", "adagrad", "Adagrad on every parameter (lmplay)",
          options={"adagrad_eps": option(1e-10, "Adagrad's epsilon, added to the root of the summed "
                                                "squared gradients", min=0.0, max=1.0)})
def adagrad(model, tc, device):
    return torch.optim.Adagrad([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                               eps=tc.adagrad_eps, weight_decay=0.0)

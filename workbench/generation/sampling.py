"""Choosing the next token from a model's logits: greedy, temperature, top-k, top-p,
repetition penalty — one small function each, applied in that order (as transformers does).

The functions work on one row of logits (V,) in float32 on the CPU: sampling happens once per
token, so its cost is dwarfed by the forward pass, and a CPU ``torch.Generator`` gives the same
tokens for the same seed whatever device the model runs on.

Tie rules are part of the contract, so results are deterministic and exact:

* greedy (temperature 0) picks the highest logit, the lowest id among equals;
* top-k keeps exactly k ids — among equal logits at the cut, the lowest ids win, so ties never
  let more than k through;
* top-p keeps the smallest prefix of the distribution (sorted by probability, lowest id first
  among equals) whose mass reaches p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError


@dataclass
class SamplingParams:
    """How to generate. ``None`` for top_k / top_p means off; seed None means a fresh one."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_at_eos: bool = True
    alternatives: int = 5  # top-n alternatives reported per generated token (0 = none)

    def validate(self) -> "SamplingParams":
        def bad(name, value, allowed):
            raise WorkbenchError(f"{name} = {value!r} is not allowed: expected {allowed}")

        if not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            bad("max_tokens", self.max_tokens, "an integer >= 0")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            bad("temperature", self.temperature, "a number >= 0 (0 is greedy)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            bad("top_k", self.top_k, "an integer >= 1, or none (off)")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            bad("top_p", self.top_p, "a number > 0 and <= 1, or none (off)")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0
                and math.isfinite(self.repetition_penalty)):
            bad("repetition_penalty", self.repetition_penalty, "a number > 0 (1 is off)")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            bad("seed", self.seed, "an integer from 0 to 2**63-1, or none (random)")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if any(not isinstance(s, str) or not s for s in self.stop):
            bad("stop", self.stop, "non-empty strings")
        if not isinstance(self.alternatives, int) or self.alternatives < 0:
            bad("alternatives", self.alternatives, "an integer >= 0")
        return self


# A form's settings come as text: what each parses to, and what it allows in a form's words
# (empty is off, or a fresh seed, where the setting may be None).
TEXT = {
    "temperature": (float, "a number >= 0 (0 is greedy)"),
    "top_k": (int, "an integer >= 1, or empty (off)"),
    "top_p": (float, "a number > 0 and <= 1, or empty (off)"),
    "max_tokens": (int, "an integer >= 1"),
    "seed": (int, "an integer >= 0, or empty (random)"),
}


def sampling_params(labels: dict[str, str] | None = None, **values) -> SamplingParams:
    """Checked SamplingParams from ``workbench generate``'s options or the Chat pane's form,
    whose values come as text (see ``TEXT``). Every error names the setting as ``labels`` has
    it (the form's labels), else by its field name."""
    labels = labels or {}
    for key, v in values.items():
        if not (isinstance(v, str) and key in TEXT):
            continue
        kind, allowed = TEXT[key]
        text = v.strip()
        if not text and "empty" in allowed:
            values[key] = None
            continue
        try:
            values[key] = kind(text)
        except ValueError:
            raise WorkbenchError(f"{labels.get(key, key)} {text!r} is not allowed: expected {allowed}") from None
        if key == "max_tokens" and values[key] < 1:  # a form asks for a reply; the CLI may ask for none
            raise WorkbenchError(f"{labels.get(key, key)} {values[key]} is not allowed: expected {allowed}")
    try:
        return SamplingParams(**values).validate()
    except WorkbenchError as e:
        msg = str(e)
        for key, label in labels.items():
            msg = msg.replace(key, label)
        raise WorkbenchError(msg) from None


def apply_repetition_penalty(logits, seen, penalty: float):
    """CTRL's penalty: logits of ids already in the text are divided by ``penalty`` when
    positive and multiplied when negative, so a penalty > 1 always makes them less likely."""
    import torch

    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits, top_k: int | None = None, top_p: float | None = None):
    """Logits with everything outside the top-k / top-p set at -inf (a new tensor if changed)."""
    import torch

    V = logits.shape[-1]
    k_on = top_k is not None and top_k < V
    p_on = top_p is not None and top_p < 1.0
    if not (k_on or p_on):
        return logits
    # a stable sort puts the lowest id first among equal logits: that is the tie rule
    sorted_logits, order = torch.sort(logits, descending=True, stable=True)
    keep = top_k if k_on else V
    if p_on:
        probs = torch.softmax(sorted_logits[:keep], dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of the ids ranked above
        # the smallest prefix reaching p: every id whose predecessors have not reached p yet
        keep = max(1, int((mass_before < top_p).sum()))
    kept = order[:keep]
    out = torch.full_like(logits, float("-inf"))
    out[kept] = logits[kept]
    return out


def choose(logits, params: SamplingParams, generator=None, seen=None) -> int:
    """The next id from one row of logits (V,), float32 on the CPU."""
    import torch

    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature == 0:
        return int(torch.argmax(logits))  # the first maximum: lowest id among ties
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))

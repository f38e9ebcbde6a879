"""Beam search: the most likely continuations of a prompt, not a sample of them.

``beam_search(model, prompt_ids, beams=4, max_tokens=40, eos_id=tok.eos_id)`` keeps the
``beams`` best partial continuations at each step (by the sum of their tokens' log-probabilities)
and returns the ``n_best`` best finished ones, best first. A continuation finishes at EOS or at
``max_tokens``; finished ones are ranked by ``logprob / length ** length_penalty`` (as
transformers does: 0 ranks by the plain sum, which favours short texts; 1, the default, by the
mean; above 1 favours long ones). All beams go through the model together: one forward per step
for every beam, each beam's keys and values moved to its row of the KV cache
(``KVCache.select_rows``). ``use_cache=False`` runs every beam's whole sequence each step, the
reference the tests hold the cached path to.

Ties are broken the way greedy decoding breaks them (the lowest beam, then the lowest id, wins),
so one beam is greedy decoding exactly. The context must hold the prompt and ``max_tokens``:
a longer prompt keeps its most recent tokens (no context shift inside a search).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError


@dataclass
class Beam:
    """One finished continuation: its ids (EOS not included), the sum of the log-probabilities of
    its tokens (EOS included when it ended there), its ranking score, and why it ended."""

    ids: list[int]
    logprob: float
    score: float
    ended: str  # eos | max_tokens | cancelled
    text: str = ""


@dataclass
class BeamSearch:
    """The settings of a search, checked by ``validate``."""

    beams: int = 4
    max_tokens: int = 40
    length_penalty: float = 1.0
    n_best: int | None = None  # how many to return (default: all beams)
    stop_at_eos: bool = True
    notes: list[str] = field(default_factory=list)

    def validate(self) -> "BeamSearch":
        def bad(name, value, allowed):
            raise WorkbenchError(f"{name} = {value!r} is not allowed: expected {allowed}")

        if not isinstance(self.beams, int) or isinstance(self.beams, bool) or not 1 <= self.beams <= 256:
            bad("beams", self.beams, "an integer from 1 to 256")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            bad("max_tokens", self.max_tokens, "an integer >= 1")
        if not isinstance(self.length_penalty, (int, float)) or not -10 <= self.length_penalty <= 10:
            bad("length_penalty", self.length_penalty, "a number from -10 to 10 (1 ranks by the mean log-probability)")
        n = self.beams if self.n_best is None else self.n_best
        if not isinstance(n, int) or not 1 <= n <= self.beams:
            bad("n_best", self.n_best, f"an integer from 1 to the number of beams ({self.beams})")
        self.n_best = n
        return self


def _score(logprob: float, length: int, penalty: float) -> float:
    return logprob / (max(1, length) ** penalty)


def beam_search(model, prompt_ids: list[int], search: BeamSearch, eos_id: int | None = None,
                vocab_limit: int | None = None, stop_event: threading.Event | None = None,
                use_cache: bool = True) -> list[Beam]:
    """The ``search.n_best`` best continuations of ``prompt_ids``, best first (see the module)."""
    import torch

    search.validate()
    cfg = model.config
    L, W = cfg.max_seq_len, search.beams
    if search.max_tokens >= L:
        raise WorkbenchError(f"max_tokens = {search.max_tokens} is not allowed with beams: the prompt and the "
                             f"continuation must fit the context, so at most max_seq_len - 1 = {L - 1}")
    if not prompt_ids:
        raise WorkbenchError("the prompt is empty: give at least one token (e.g. BOS)")
    bad = [i for i in prompt_ids if not 0 <= int(i) < cfg.vocab_size]
    if bad:
        raise WorkbenchError(f"prompt token id {int(bad[0])} is out of range: the model's vocab_size is {cfg.vocab_size}")
    prompt = [int(i) for i in prompt_ids][-(L - search.max_tokens):]
    if len(prompt) < len(prompt_ids):
        search.notes.append(f"the prompt ({len(prompt_ids)} tokens) and {search.max_tokens} new tokens do not fit "
                            f"the context (max_seq_len {L}): kept the prompt's most recent {len(prompt)} tokens")
    V = min(cfg.vocab_size, vocab_limit or cfg.vocab_size)
    eos = eos_id if search.stop_at_eos else None
    device = next(model.parameters()).device
    penalty = search.length_penalty
    finished: list[Beam] = []
    seqs: list[list[int]] = [[]]  # the live beams' generated ids
    sums = torch.zeros(1, dtype=torch.float64)
    cache = None
    ended = "max_tokens"
    with torch.inference_mode():
        if use_cache:
            from workbench.model import KVCache

            cache = KVCache.for_model(model, 1, max_seq_len=len(prompt) + search.max_tokens)
        logits = model(torch.tensor([prompt], device=device), kv_cache=cache, logits_to_keep=1)[:, -1]
        for t in range(search.max_tokens):
            logp = torch.log_softmax(logits[:, :V].float().cpu(), dim=-1)  # (beams, V)
            cand = (sums[:, None] + logp.double()).flatten()
            new_seqs, new_sums, parents = [], [], []
            for idx in _best(cand, 2 * W + 1):
                b, tok = divmod(idx, V)
                lp = float(cand[idx])
                if lp == float("-inf"):
                    break
                if eos is not None and tok == eos:
                    finished.append(Beam(list(seqs[b]), lp, _score(lp, len(seqs[b]) + 1, penalty), "eos"))
                    continue
                new_seqs.append(seqs[b] + [tok])
                new_sums.append(lp)
                parents.append(b)
                if len(new_seqs) == W:
                    break
            seqs, sums = new_seqs, torch.tensor(new_sums, dtype=torch.float64)
            if seqs and _done(finished, seqs, sums, search, t + 1):
                seqs = []  # none of them can still win: they end here, unreported
            if not seqs:
                break
            if stop_event is not None and stop_event.is_set():
                ended = "cancelled"
                break
            if t + 1 == search.max_tokens:
                break
            last = torch.tensor([[s[-1]] for s in seqs], device=device)
            if cache is not None:
                cache.select_rows(torch.tensor(parents, device=device))
                logits = model(last, kv_cache=cache, logits_to_keep=1)[:, -1]
            else:
                full = torch.tensor([prompt + s for s in seqs], device=device)
                logits = model(full)[:, -1]
    finished += [Beam(s, float(lp), _score(float(lp), len(s), penalty), ended)
                 for s, lp in zip(seqs, sums.tolist())]
    finished.sort(key=lambda h: -h.score)  # stable: the earlier found wins a tie
    return finished[: search.n_best]


def _best(scores, k: int) -> list[int]:
    """The indices of the ``k`` highest scores, highest first; among equal scores the lowest index
    first, also at the cut (greedy decoding's rule), in O(n): no sort of the whole row."""
    import torch

    k = min(k, scores.numel())
    cut = torch.topk(scores, k).values[-1]
    above = torch.nonzero(scores > cut).flatten()
    at_cut = torch.nonzero(scores == cut).flatten()[: k - above.numel()]
    chosen = torch.cat([above, at_cut])  # ascending index within each part
    chosen = chosen[torch.argsort(chosen)]  # ascending index overall, then a stable sort by score
    order = torch.sort(scores[chosen], descending=True, stable=True).indices
    return chosen[order].tolist()


def _done(finished: list[Beam], seqs, sums, search: BeamSearch, length: int) -> bool:
    """No live beam can still beat the n-th best finished one (so stopping now changes nothing).
    A live beam's log-probability ``lp`` (< 0) only falls as it grows, so its best possible
    score is ``lp / max_len ** penalty`` for a positive length penalty (the longest it can get)
    and its score now otherwise."""
    if len(finished) < search.n_best:
        return False
    nth = sorted((h.score for h in finished), reverse=True)[search.n_best - 1]
    reach = search.max_tokens + 1 if search.length_penalty > 0 else length  # + 1: an EOS counts
    best_live = max(_score(float(s), reach, search.length_penalty) for s in sums)
    return best_live <= nth

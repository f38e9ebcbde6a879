"""Beam search against exhaustive search, greedy decoding and its own uncached path, and the
`generate --beams` command on a run the real engine trained."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch

from helpers import TRAINED_RUN
from workbench.cli import main
from workbench.config.schema import ModelConfig
from workbench.errors import WorkbenchError
from workbench.generation.beam import BeamSearch, beam_search
from workbench.generation.generate import token_loop
from workbench.generation.sampling import SamplingParams
from workbench.model import build_model

V, EOS, PROMPT = 5, 4, [0, 1]  # EOS: a marker; the tests pick the likeliest id


@pytest.fixture(scope="module")
def tiny():
    """A random model over 5 ids, so every continuation of 3 tokens can be scored (125)."""
    cfg = ModelConfig(vocab_size=V, dim=16, n_layers=2, n_heads=2, max_seq_len=8)
    model = build_model(cfg, seed=7)
    for p in model.parameters():  # spread the distributions so the ranking is not a near-tie
        p.data.mul_(3.0)
    return model.eval()


def _logprob(model, seq: list[int]) -> float:
    """Sum of the log-probabilities of ``seq`` after PROMPT, from one plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT + seq]))[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(PROMPT) - 1 + i, t]) for i, t in enumerate(seq))


def _exhaustive(model, max_tokens: int, eos: int | None, penalty: float):
    """Every way a search can end, scored by hand: ids, log-probability, score."""
    out = []
    alphabet = [t for t in range(V) if t != eos]
    for k in range(max_tokens + 1):
        for body in itertools.product(alphabet, repeat=k):
            body = list(body)
            if eos is not None and k < max_tokens:  # ends at EOS as token k + 1
                lp = _logprob(model, body + [eos])
                out.append((body, lp, lp / (k + 1) ** penalty))
            if k == max_tokens:  # ends at the budget
                lp = _logprob(model, body)
                out.append((body, lp, lp / k ** penalty))
    return sorted(out, key=lambda r: -r[2])


def _likely_eos(model) -> int:
    """The id most likely right after PROMPT, made the EOS: continuations that end early then
    compete with long ones, so the length penalty and the early stop both matter."""
    with torch.no_grad():
        return int(model(torch.tensor([PROMPT]))[0, -1].argmax())


@pytest.mark.parametrize("n_best", [1, 5])
@pytest.mark.parametrize("max_tokens", [3, 4])
@pytest.mark.parametrize("eos,penalty", [(None, 1.0), (EOS, 0.0), (EOS, 1.0), (EOS, 2.0), (EOS, -1.0)])
def test_a_beam_as_wide_as_the_candidates_finds_the_exhaustive_best(tiny, eos, penalty, max_tokens, n_best):
    """n_best 1 with a length penalty of 2: an early EOS is finished first, yet a longer
    continuation scores better in the end (the search must not stop at the first)."""
    eos = None if eos is None else _likely_eos(tiny)
    want = _exhaustive(tiny, max_tokens, eos, penalty)[:n_best]
    if eos is not None and penalty <= 1 and n_best > 1:  # an EOS ending is among the best
        assert any(len(w[0]) < max_tokens for w in want)
    width = V ** (max_tokens - 1)  # at least every live continuation at every step
    for use_cache in (True, False):
        got = beam_search(tiny, PROMPT, BeamSearch(beams=width, max_tokens=max_tokens, length_penalty=penalty,
                                                   n_best=n_best), eos_id=eos, use_cache=use_cache)
        assert [b.ids for b in got] == [w[0] for w in want]
        for b, w in zip(got, want):
            assert b.logprob == pytest.approx(w[1], abs=1e-4) and b.score == pytest.approx(w[2], abs=1e-4)
            assert b.ended == ("eos" if eos is not None and len(b.ids) < max_tokens else "max_tokens")


def test_a_narrow_beam_can_miss_the_best_but_never_reports_a_wrong_score(tiny):
    for w in (1, 2, 3):
        for b in beam_search(tiny, PROMPT, BeamSearch(beams=w, max_tokens=4, length_penalty=0.0), eos_id=None):
            assert b.logprob == pytest.approx(_logprob(tiny, b.ids), abs=1e-4)


def test_one_beam_is_greedy_decoding(trained):
    from workbench.generation.generate import load_for_generation

    model, tok, _, _ = load_for_generation(trained, TRAINED_RUN, precision="fp32")
    ids = tok.encode("Once upon a time", bos=True)
    greedy = [s.id for s in token_loop(model, ids, SamplingParams(max_tokens=20, temperature=0, stop_at_eos=False))]
    (beam,) = beam_search(model, ids, BeamSearch(beams=1, max_tokens=20, stop_at_eos=False), eos_id=tok.eos_id)
    assert beam.ids == greedy


def test_cached_and_plain_beams_agree_on_a_trained_model(trained):
    from workbench.generation.generate import load_for_generation

    model, tok, _, _ = load_for_generation(trained, TRAINED_RUN, precision="fp32")
    ids = tok.encode("Lily", bos=True)
    s = BeamSearch(beams=4, max_tokens=12)
    a = beam_search(model, ids, s, eos_id=tok.eos_id)
    b = beam_search(model, ids, BeamSearch(beams=4, max_tokens=12), eos_id=tok.eos_id, use_cache=False)
    assert [x.ids for x in a] == [x.ids for x in b]
    assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)
    assert [x.score for x in a] == sorted([x.score for x in a], reverse=True)


def test_generate_with_beams_prints_the_best_continuations(trained, capsys):
    from workbench.generation.generate import load_for_generation

    ws = ["--workspace", str(trained.root)]
    assert main([*ws, "generate", TRAINED_RUN, "--beams", "3", "--max-tokens", "8", "--prompt", "Once",
                 "--precision", "fp32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 3 and out["beams"] == 3
    model, tok, _, _ = load_for_generation(trained, TRAINED_RUN, precision="fp32")
    prompt = tok.encode("Once", bos=True)
    with torch.no_grad():
        for r in out["results"]:  # each log-probability, recomputed by hand from one forward
            seq = r["ids"] + ([tok.eos_id] if r["ended"] == "eos" else [])
            logp = torch.log_softmax(model(torch.tensor([prompt + seq]))[0].double(), dim=-1)
            lp = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(seq))
            assert r["logprob"] == pytest.approx(lp, abs=1e-4)
            assert r["score"] == pytest.approx(lp / len(seq), abs=1e-4)
            assert r["text"] == tok.decode(r["ids"])
    assert [r["score"] for r in out["results"]] == sorted((r["score"] for r in out["results"]), reverse=True)
    assert main([*ws, "generate", TRAINED_RUN, "--beams", "2", "--max-tokens", "5", "--prompt", "Once"]) == 0
    text = capsys.readouterr().out
    assert text.count("--- beam ") == 2 and "--- beam 1: log-prob " in text


@pytest.mark.parametrize("args,said", [
    (["--beams", "3", "--temperature", "0.5"], "--temperature cannot be used with --beams"),
    (["--beams", "3", "--n", "2", "--seed", "1"], "--seed, --n cannot be used with --beams"),
    (["--length-penalty", "2"], "--length-penalty applies only to beam search: add --beams W"),
    (["--beams", "0"], "beams = 0 is not allowed: expected an integer from 1 to 256"),
    (["--beams", "2", "--max-tokens", "64"], "max_tokens = 64 is not allowed with beams"),
])
def test_beam_options_are_checked_in_one_line(trained, capsys, args, said):
    assert main(["--workspace", str(trained.root), "generate", TRAINED_RUN, *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and said in err.strip().splitlines()[-1]


def test_bad_search_settings_name_the_field():
    with pytest.raises(WorkbenchError, match="n_best = 5 is not allowed"):
        BeamSearch(beams=4, n_best=5).validate()
    with pytest.raises(WorkbenchError, match="length_penalty"):
        BeamSearch(length_penalty=math.inf).validate()


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.integers(1, 45))
def test_the_best_candidates_break_ties_by_the_lowest_index_also_at_the_cut(values, k):
    from workbench.generation.beam import _best

    scores = torch.tensor(values, dtype=torch.float64)  # few distinct values: ties everywhere
    want = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    assert _best(scores, k) == want


def test_beam_generation_scores_the_best_beam_token_by_token(trained):
    """The Chat pane's and ``generate --beams``' engine: the beams are beam_search's, and each
    step of the best one carries the probability the model gives that token after the tokens
    before it — checked here with one forward per prefix, not the single scoring forward."""
    from workbench.generation.generate import beam_generation, load_for_generation

    model, tok, _, _ = load_for_generation(trained, TRAINED_RUN, None, "cpu", "fp32")
    prompt = "Once upon a time"
    res = beam_generation(model, tok, prompt, BeamSearch(beams=3, max_tokens=10))
    ids = tok.encode(prompt, bos=True)
    want = beam_search(model, ids, BeamSearch(beams=3, max_tokens=10), eos_id=tok.eos_id, vocab_limit=tok.vocab_size)
    assert [b.ids for b in res.beams] == [b.ids for b in want]
    assert [b.text for b in res.beams] == [tok.decode(b.ids) for b in want]
    best = want[0].ids
    assert [s.id for s in res.steps if s.id >= 0] == best
    assert "".join(s.text for s in res.steps) == tok.decode(best)
    with torch.inference_mode():
        for t, step in enumerate(s for s in res.steps if s.id >= 0):
            p = torch.softmax(model(torch.tensor([ids + best[:t]]))[0, -1, :tok.vocab_size].float(), -1)
            assert step.prob == pytest.approx(float(p[best[t]]), rel=1e-4, abs=1e-6)
            assert [i for i, _ in step.top] == torch.topk(p, 5).indices.tolist()
    lp = sum(math.log(s.prob) for s in res.steps if s.id >= 0)
    if want[0].ended == "eos":  # the beam's log-probability also counts its EOS
        assert lp > want[0].logprob
    else:
        assert lp == pytest.approx(want[0].logprob, abs=1e-3)

"""Generation: KV cache vs the no-cache oracle on every variant, the sampler's exact rules,
streaming text deltas (byte pieces, emoji, CJK, stop strings), stopping, long prompts,
strict checkpoint loading, and the generate / chat commands."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_run
from workbench.cli import main
from workbench.config.schema import ModelConfig
from workbench.errors import WorkbenchError
from workbench.generation.generate import Generation, generate, load_for_generation, token_loop
from workbench.model import build_model
from workbench.generation.sampling import (SamplingParams, apply_repetition_penalty, choose, filter_top_k_top_p, sampling_params)
from workbench.generation.streaming import StopStrings, TextDeltas
from workbench.tokenizer.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parent.parent
GREEDY = dict(temperature=0.0, stop_at_eos=False, alternatives=0)


@pytest.fixture(scope="module")
def tok(built):
    return load_tokenizer(built, "tok")


def spread_model(cfg, seed=0):
    """A random model whose logits are far apart, so greedy choices are not float coin-flips."""
    model = build_model(cfg, seed=seed)
    model.init_weights(std=0.3)
    return model.eval()


# --- KV cache == no cache ------------------------------------------------------------------

VARIANTS = list(itertools.product(("swiglu", "gelu"), ("rmsnorm", "layernorm"),
                                  ("rope", "learned", "none"), (4, 2, 1)))


@pytest.mark.parametrize("mlp,norm,pos,kv", VARIANTS,
                         ids=[f"{m}-{n}-{p}-kv{k}" for m, n, p, k in VARIANTS])
def test_kv_cache_equals_no_cache_200_tokens(mlp, norm, pos, kv):
    torch.set_num_threads(1)
    cfg = ModelConfig(vocab_size=64, dim=16, n_layers=2, n_heads=4, n_kv_heads=kv, mlp=mlp,
                      norm=norm, pos=pos, max_seq_len=208, bias=(norm == "layernorm"))
    model = spread_model(cfg)
    prompt = [1, 5, 9, 3]
    params = SamplingParams(max_tokens=200, **GREEDY)
    cached = [s.id for s in token_loop(model, prompt, params)]
    plain = [s.id for s in token_loop(model, prompt, params, use_cache=False)]
    assert len(cached) == len(plain) == 200
    assert_same_greedy(model, prompt, cached, plain)


def assert_same_greedy(model, prompt, cached, plain):
    """The cached ids are the oracle's greedy choices at every one of the steps.

    Teacher-forced: one no-cache forward over prompt + cached ids gives the oracle's logits for
    each prefix. A slowly drifting random model can pass through an exact float tie between
    two ids (seen with NoPE); there either choice is greedy, the two runs may part, and the
    check continues on the cached run alone — still every step is verified.
    """
    with torch.no_grad():
        logits = model(torch.tensor([prompt + cached]))[0, len(prompt) - 1:-1]  # (200, V)
    best = logits.max(-1).values
    chosen = logits.gather(-1, torch.tensor(cached)[:, None])[:, 0]
    assert torch.all(best - chosen <= 1e-5), "a cached step did not pick the oracle's maximum"
    exact = logits.argmax(-1) == torch.tensor(cached)
    assert exact.float().mean() > 0.97  # ties are rare; most steps are clear-cut
    split = next((i for i, (a, b) in enumerate(zip(cached, plain)) if a != b), None)
    if split is not None:  # the plain path may part only at a tie
        top2 = logits[split].topk(2).values
        assert top2[0] - top2[1] <= 1e-5, f"cached and no-cache paths differ at step {split}"


def test_context_shift_agrees_and_never_crashes():
    cfg = ModelConfig(vocab_size=64, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
    model = spread_model(cfg, seed=1)
    params = SamplingParams(max_tokens=60, **GREEDY)
    prompt = list(range(4, 44))  # longer than the context
    cached = [s.id for s in token_loop(model, prompt, params)]
    plain = [s.id for s in token_loop(model, prompt, params, use_cache=False)]
    assert len(cached) == 60
    assert cached == plain


# --- the sampler ---------------------------------------------------------------------------

def test_top_k_is_exact_with_ties():
    logits = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0, 3.0])
    out = filter_top_k_top_p(logits, top_k=2)
    assert torch.isfinite(out).sum() == 2
    assert torch.isfinite(out).nonzero().flatten().tolist() == [1, 2]  # lowest ids among ties
    g = torch.Generator().manual_seed(0)
    p = SamplingParams(temperature=1.0, top_k=2)
    assert {choose(logits, p, g) for _ in range(300)} == {1, 2}
    assert torch.isfinite(filter_top_k_top_p(logits, top_k=4)).sum() == 4
    assert torch.isfinite(filter_top_k_top_p(logits, top_k=100)).all()


@pytest.mark.parametrize("p,kept", [(0.3, [0]), (0.55, [0, 1]), (0.79, [0, 1]), (0.81, [0, 1, 2]),
                                    (0.96, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[[2, 0, 3, 1]]  # shuffled: ids 1, 3, 0, 2 hold 0.5, 0.3, 0.15, 0.05
    rank_to_id = [1, 3, 0, 2]
    out = filter_top_k_top_p(logits, top_p=p)
    assert sorted(torch.isfinite(out).nonzero().flatten().tolist()) == sorted(rank_to_id[i] for i in kept)


def test_top_p_after_top_k_and_one_token_always_kept():
    logits = torch.tensor([5.0, 0.0, 0.0, 0.0])
    assert torch.isfinite(filter_top_k_top_p(logits, top_p=0.01)).nonzero().flatten().tolist() == [0]
    out = filter_top_k_top_p(torch.tensor([2.0, 2.0, 2.0, 1.0]), top_k=2, top_p=0.9)
    assert torch.isfinite(out).nonzero().flatten().tolist() == [0, 1]


def test_greedy_at_temperature_zero_ignores_seed():
    logits = torch.tensor([0.1, 2.0, -1.0, 2.0])
    p = SamplingParams(temperature=0.0, top_k=3)
    picks = {choose(logits, p, torch.Generator().manual_seed(s)) for s in range(20)}
    assert picks == {1}  # the maximum, lowest id among equals


def test_repetition_penalty():
    logits = torch.tensor([2.0, -1.0, 1.5])
    seen = torch.tensor([True, True, False])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [1.0, -2.0, 1.5]
    assert choose(logits, SamplingParams(temperature=0), seen=seen) == 0
    assert choose(logits, SamplingParams(temperature=0, repetition_penalty=2.0), seen=seen) == 2


def test_repetition_penalty_in_the_loop_changes_greedy_text():
    cfg = ModelConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, max_seq_len=64)
    model = spread_model(cfg, seed=3)
    plain = [s.id for s in token_loop(model, [1], SamplingParams(max_tokens=40, **GREEDY))]
    pen = [s.id for s in token_loop(model, [1], SamplingParams(max_tokens=40, repetition_penalty=5.0, **GREEDY))]
    assert len(set(pen)) >= len(set(plain))
    assert pen != plain


def test_same_seed_same_text(tok):
    model = build_model(ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, max_seq_len=64), seed=0).eval()
    p = dict(max_tokens=40, temperature=1.0, top_p=0.95, top_k=50, stop_at_eos=False)
    a = generate(model, tok, "Once upon", SamplingParams(seed=7, **p))
    b = generate(model, tok, "Once upon", SamplingParams(seed=7, **p))
    c = generate(model, tok, "Once upon", SamplingParams(seed=8, **p))
    assert a.text == b.text and a.ids == b.ids
    assert c.ids != a.ids
    d = generate(model, tok, "Once upon", SamplingParams(**p))
    assert d.seed is not None  # a fresh seed is chosen and reported, so d can be redone
    assert generate(model, tok, "Once upon", SamplingParams(**{**p, "seed": d.seed})).ids == d.ids


def test_out_of_range_prompt_ids_are_refused():
    model = build_model(ModelConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, max_seq_len=16))
    with pytest.raises(WorkbenchError, match="prompt token id 64 is out of range"):
        list(token_loop(model, [1, 64], SamplingParams()))
    with pytest.raises(WorkbenchError, match="empty"):
        list(token_loop(model, [], SamplingParams()))


def test_model_vocab_beyond_the_tokenizer_is_never_sampled(tok):
    model = byte_happy(build_model(ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=4, max_seq_len=64)).eval(),
                       tok)
    with torch.no_grad():
        model.lm_head.bias[400:] = 50.0  # the padded ids are by far the likeliest
    r = generate(model, tok, "Once", SamplingParams(max_tokens=30, temperature=1.0, seed=0, stop_at_eos=False))
    assert len(r.ids) == 30 and max(r.ids) < tok.vocab_size


def test_bad_settings_name_the_field():
    for kw, field in [({"top_p": 0.0}, "top_p"), ({"top_k": 0}, "top_k"),
                      ({"temperature": -1}, "temperature"), ({"repetition_penalty": 0}, "repetition_penalty")]:
        with pytest.raises(WorkbenchError, match=field):
            SamplingParams(**kw).validate()


FORM_LABELS = {"temperature": "temperature", "top_k": "top-k", "top_p": "top-p", "max_tokens": "max tokens",
               "seed": "seed"}


def test_the_chat_form_and_the_cli_make_the_same_params():
    """The Chat pane's text and `workbench generate`'s typed options go through one function."""
    form = sampling_params(FORM_LABELS, temperature=" 0.7", top_k="40", top_p="", max_tokens="12", seed="",
                           stop_at_eos=False)
    cli = sampling_params(temperature=0.7, top_k=40, top_p=None, max_tokens=12, seed=None, stop_at_eos=False)
    assert form == cli == SamplingParams(max_tokens=12, temperature=0.7, top_k=40, stop_at_eos=False)


@pytest.mark.parametrize("field, text, said", [
    ("top_k", "x", "top-k 'x' is not allowed: expected an integer >= 1, or empty (off)"),
    ("temperature", "", "temperature '' is not allowed: expected a number >= 0 (0 is greedy)"),
    ("max_tokens", "0", "max tokens 0 is not allowed: expected an integer >= 1"),
    ("top_p", "1.5", "top-p = 1.5 is not allowed: expected a number > 0 and <= 1, or none (off)"),
    ("seed", "-1", "seed = -1 is not allowed: expected an integer from 0 to 2**63-1, or none (random)"),
])
def test_form_text_is_refused_naming_the_field_as_the_form_labels_it(field, text, said):
    values = {"temperature": "0.8", "max_tokens": "20", field: text}
    with pytest.raises(WorkbenchError) as e:
        sampling_params(FORM_LABELS, **values)
    assert str(e.value) == said
    if field == "top_p":  # the CLI names the field as SamplingParams does
        with pytest.raises(WorkbenchError, match="^top_p = 1.5 is not allowed"):
            sampling_params(top_p=1.5)


# --- streaming -----------------------------------------------------------------------------

TEXT = st.text(alphabet=st.one_of(
    st.sampled_from(list("abc thelo,.!\n  ▁")),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),      # CJK
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F),    # emoji
    st.characters(codec="utf-8")), max_size=40)


def stream(tok, ids):
    d = TextDeltas(tok.decode)
    return "".join(d.push(i) for i in ids) + d.flush()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_stream_of_encoded_text_is_exact(tok, text):
    ids = tok.encode(text)
    assert stream(tok, ids) == tok.decode(ids) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stream_of_any_ids_equals_decode(tok, data):
    # byte pieces are ids 4..259: weight them heavily so split and invalid UTF-8 is common
    ids = data.draw(st.lists(st.one_of(st.integers(4, 259), st.integers(0, tok.vocab_size - 1)), max_size=30))
    assert stream(tok, ids) == tok.decode(ids)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab\n日😀", max_size=30), cuts=st.lists(st.integers(0, 30), max_size=8),
       stops=st.lists(st.text(alphabet="ab\n日😀", min_size=1, max_size=3), max_size=2))
def test_stop_strings_cut_exactly(text, cuts, stops):
    s = StopStrings(tuple(stops))
    bounds = sorted({0, len(text), *[min(c, len(text)) for c in cuts]})
    out = "".join(s.push(text[a:b]) for a, b in zip(bounds, bounds[1:])) + s.flush()
    hits = [i for x in stops if (i := text.find(x)) >= 0]
    assert out == (text[:min(hits)] if hits else text)
    assert s.hit == bool(hits)


def byte_happy(model, tok, boost=6.0):
    """The same model with its output biased toward byte pieces (split multi-byte characters)."""
    head = torch.nn.Linear(model.config.dim, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        for i in range(tok.vocab_size):
            if tok.sp.is_byte(i):
                head.bias[i] = boost
    model.lm_head = head
    return model


def test_streamed_generation_with_byte_pieces_equals_decode(tok):
    cfg = ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)
    model = byte_happy(build_model(cfg, seed=0).eval(), tok)
    n_bytes = 0
    for seed, prompt in enumerate(["Once 日本 😀", " the", "", "▁▁ x"]):
        g = Generation(model, tok, prompt, SamplingParams(max_tokens=80, temperature=1.0, seed=seed, stop_at_eos=False))
        deltas = list(g)
        r = g.result
        n_bytes += sum(tok.sp.is_byte(i) for i in r.ids)
        assert "".join(deltas) == tok.decode(r.ids) == r.text
        assert len(r.tokens) == len(r.ids) == 80 and r.stop_reason == "max_tokens"
        assert all(0 <= t.prob <= 1 and len(t.top) == 5 and len(t.top_pieces) == 5 for t in r.tokens)
        assert r.tokens[0].top[0][1] >= r.tokens[0].top[-1][1]
    assert n_bytes > 100  # the case under test really happened


def test_stop_string_and_steps_concatenate(tok):
    cfg = ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, max_seq_len=128)
    model = build_model(cfg, seed=2).eval()
    base = generate(model, tok, "Once", SamplingParams(max_tokens=60, temperature=1.0, seed=4, stop_at_eos=False))
    stop = base.text[10:12] if len(base.text) > 12 else base.text[-1:]
    g = Generation(model, tok, "Once", SamplingParams(max_tokens=60, temperature=1.0, seed=4,
                                                      stop_at_eos=False, stop=(stop,)))
    text = "".join(s.text for s in g.steps())
    assert g.result.stop_reason == "stop"
    assert text == g.result.text == base.text[:base.text.find(stop)]


def test_stop_event_ends_between_tokens(tok):
    model = build_model(ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, max_seq_len=64), seed=0).eval()
    ev = threading.Event()
    g = Generation(model, tok, "Once", SamplingParams(max_tokens=50, temperature=1.0, seed=0, stop_at_eos=False),
                   stop_event=ev)
    for i, _ in enumerate(g.steps()):
        if i == 2:
            ev.set()
    assert g.result.stop_reason == "cancelled" and len(g.result.ids) == 3


def test_long_prompt_keeps_recent_tokens_and_says_so(tok):
    model = build_model(ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, max_seq_len=32), seed=0).eval()
    prompt = "the cat said hello to the dog. " * 20
    r = generate(model, tok, prompt, SamplingParams(max_tokens=40, temperature=0.7, seed=1, stop_at_eos=False))
    assert r.prompt_dropped > 0 and len(r.prompt_ids) == 32
    assert r.prompt_ids == tok.encode(prompt, bos=True)[-32:]
    assert "longer than the context" in r.notes[0]
    assert len(r.ids) == 40 and r.context_shifts >= 1


# --- loading checkpoints -------------------------------------------------------------------

def test_load_any_checkpoint_strictly(built):
    run, net = make_run(built, "gen-load")
    from workbench.runs import checkpoint

    checkpoint.save_checkpoint(run.path, 2, build_model(net.config, seed=5), {"step": 2}, keep_last=3)
    m1, *_ , name1 = load_for_generation(built, "gen-load", "step_000001", "cpu")
    m2, *_ , name2 = load_for_generation(built, "gen-load")
    assert (name1, name2) == ("step_000001", "step_000002")
    assert torch.equal(m1.tok_emb.weight, net.tok_emb.weight)
    assert not torch.equal(m2.tok_emb.weight, net.tok_emb.weight)
    with pytest.raises(WorkbenchError, match="step_000009.*available: step_000001, step_000002"):
        load_for_generation(built, "gen-load", "step_000009")


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty", "mismatched"])
def test_damaged_checkpoint_names_the_file(built, damage):
    name = f"gen-{damage}"
    run, _ = make_run(built, name)
    f = run.path / "checkpoints" / "step_000001" / "model.safetensors"
    data = f.read_bytes()
    if damage == "corrupt":
        f.write_bytes(b"\x13\x00\x00\x00\x00\x00\x00\x00{not json at all!!}" + data[40:])
    elif damage == "truncated":
        f.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        text = run.config_path.read_text().replace("dim: 32", "dim: 48")
        run.config_path.write_text(text)
    with pytest.raises(WorkbenchError) as e:
        load_for_generation(built, name, device="cpu")
    msg = str(e.value)
    assert str(f) in msg
    assert ("does not match the model config" if damage == "mismatched" else "corrupt or truncated") in msg


# --- the commands --------------------------------------------------------------------------

def test_generate_cli_json_and_text(built, capsys):
    make_run(built, "gen-cli")
    ws = ["--workspace", str(built.root)]
    rc = main([*ws, "generate", "gen-cli", "--prompt", "Once upon", "--max-tokens", "12", "--seed", "3",
               "--n", "2", "--top-k", "20", "--top-p", "0.9", "--temperature", "0.9", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    s = out["samples"]
    assert len(s) == 2 and [x["seed"] for x in s] == [3, 4] and out["checkpoint"] == "step_000001"
    assert all(len(t["top"]) == 5 and 0 <= t["prob"] <= 1 for x in s for t in x["tokens"])
    rc = main([*ws, "generate", "gen-cli", "--prompt", "Once upon", "--max-tokens", "12", "--seed", "3",
               "--temperature", "0.9", "--top-k", "20", "--top-p", "0.9"])
    assert rc == 0
    assert capsys.readouterr().out == "Once upon" + s[0]["text"] + "\n"
    assert main([*ws, "generate", "gen-cli", "--prompt", "x", "--top-p", "2"]) == 2
    assert "top_p = 2.0 is not allowed" in capsys.readouterr().err
    assert main([*ws, "generate", "nope", "--prompt", "x"]) == 2


def _chat(built, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "workbench", "--workspace", str(built.root), "chat", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_chat_cli_streams_replies_and_quits(built):
    make_run(built, "gen-chat")
    p = _chat(built, "gen-chat", "--max-tokens", "8", "--seed", "1", "--ignore-eos")
    out, err = p.communicate(b"Once upon a time\n\nthe cat\n/quit\nnever read\n", timeout=60)
    assert p.returncode == 0, err.decode()
    text = out.decode()
    assert text.endswith("\n") and text.count("\n") >= 2 and text.strip()
    # /quit ends it: the same two prompts then end-of-input print exactly the same, and a third
    # prompt instead of /quit prints more (a third reply)
    p = _chat(built, "gen-chat", "--max-tokens", "8", "--seed", "1", "--ignore-eos")
    two, _ = p.communicate(b"Once upon a time\n\nthe cat\n", timeout=60)
    p = _chat(built, "gen-chat", "--max-tokens", "8", "--seed", "1", "--ignore-eos")
    three, _ = p.communicate(b"Once upon a time\n\nthe cat\nnever read\n", timeout=60)
    assert out == two and len(three) > len(two) and three.startswith(two)
    # EOF also exits cleanly
    p = _chat(built, "gen-chat", "--max-tokens", "4")
    _, err = p.communicate(b"hi\n", timeout=60)
    assert p.returncode == 0, err.decode()


def test_chat_ctrl_c_stops_the_reply_not_the_program(built):
    make_run(built, "gen-chat-int")
    p = _chat(built, "gen-chat-int", "--max-tokens", "1000000", "--ignore-eos", "--seed", "0")
    try:
        p.stdin.write(b"Once upon a time\n")
        p.stdin.flush()
        got, deadline = b"", time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:  # the reply is streaming
            if select.select([p.stdout], [], [], 0.5)[0]:
                got += os.read(p.stdout.fileno(), 4096)
        assert len(got) >= 20
        p.send_signal(signal.SIGINT)
        said, deadline = b"", time.monotonic() + 60
        while b"[stopped]" not in said and time.monotonic() < deadline:  # the reply ends; the program goes on
            if select.select([p.stderr], [], [], 0.5)[0]:
                said += os.read(p.stderr.fileno(), 4096)
        assert b"[stopped]" in said and p.poll() is None
        p.stdin.write(b"/quit\n")
        p.stdin.flush()
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()

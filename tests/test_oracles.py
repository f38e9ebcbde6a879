"""Oracles for the maths: each test computes the right answer its own way (plain torch, a
formula written here, counting by hand) and holds the engine to it.

Hermetic and fast: the text is made here, the tokenizer is the session's ``tok`` (built on the
synthetic ``corpus``), every model is tiny and trains on the CPU in well under a second per
run; nothing needs the TinyStories sample. ``tests/mutations.py`` checks that each of these
fails when the engine's maths is broken on purpose.
"""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.config.schema import Config, ModelConfig, TrainConfig
from workbench.data.prepare import ensure_prepared
from workbench.generation.generate import Generation, token_loop
from workbench.generation.sampling import SamplingParams, apply_repetition_penalty, choose, filter_top_k_top_p
from workbench.model import KVCache, build_model
from workbench.runs.folder import get_run
from workbench.tokenizer.tokenizer import load_tokenizer
from workbench.training.evaluate import evaluate
from workbench.training.optim import lr_at, make_optimizer
from workbench.training.trainer import Trainer
from workbench.workspace import Workspace

TINY = dict(vocab_size=400, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
BASE = dict(batch_size=2, grad_accum=1, max_steps=1, warmup_steps=0, schedule="constant", lr=1e-2, min_lr=0.0,
            weight_decay=0.1, grad_clip=0.0, eval_interval=10_000, eval_batches=1, log_interval=1,
            checkpoint_interval=10_000, num_threads=1, seed=7, precision="fp32", device="cpu")
EPS = 1e-8  # AdamW's epsilon


# --- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ows(tmp_path_factory, built) -> Workspace:
    """A workspace of this module's own holding a copy of the session tokenizer ``tok``."""
    root = tmp_path_factory.mktemp("oracles") / "ws"
    shutil.copytree(built.root, root)
    return Workspace.at(root)


_names = itertools.count()


def train(ws, source, model=None, hooks=(), setup=None, **train):
    """Train a new run with ``BASE`` + ``train``; returns (trainer, summary, train rows, eval rows)."""
    cfg = Config(ModelConfig(**{**TINY, **(model or {})}), TrainConfig(**{**BASE, **train}))
    name = f"oracle-{next(_names)}"
    t = Trainer.new(ws, cfg, "tok", str(source), name=name)
    t.setup()
    if setup is not None:
        setup(t)
    t.step_hooks.extend(hooks)
    summary = t.run()
    assert summary["state"] == "finished", summary
    rows = get_run(ws, name).metrics()
    return t, summary, [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "eval"]


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def split_tokens(data, split: str) -> np.ndarray:
    """A split's token ids read straight from its file (``train.bin`` / ``val.bin``)."""
    return np.fromfile(data.path / f"{split}.bin", dtype=data.dtype).astype(np.int64)


def micro_batches(data, tc, T: int, steps: int):
    """The windows the trainer draws: per micro-batch ``batch_size`` random starts from a
    generator seeded ``[seed, rank 0]``, each window ``T + 1`` tokens of the train split."""
    tokens = split_tokens(data, "train")
    rng = np.random.default_rng([tc.seed, 0])
    out = []
    for _ in range(steps):
        step = []
        for _ in range(tc.grad_accum):
            starts = rng.integers(0, len(tokens) - T, size=tc.batch_size)
            step.append(torch.from_numpy(np.stack([tokens[s:s + T + 1] for s in starts])))
        out.append(step)
    return out


def plain_loss(model, batch):
    """Mean next-token cross-entropy over every position of ``batch`` (B, T+1), plain torch."""
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def reference_gradient(model, batches):
    """Loss and gradients of ONE batch holding all ``batches`` (k micro-batches as one k-times batch)."""
    model.zero_grad(set_to_none=True)
    loss = plain_loss(model, torch.cat(batches))
    loss.backward()
    g = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return loss.item(), g


def global_norm(g: dict) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in g.values()))


def assert_close_dicts(a: dict, b: dict, rtol=1e-4, atol=1e-6, what="tensor"):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=rtol, atol=atol), \
            f"{what} {k}: max diff {(a[k].double() - b[k].double()).abs().max().item():.3g}"


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    """A tiny synthetic language: every document is a cycle of six words from a random offset."""
    import random

    words = "once upon a time there was".split()
    rng = random.Random(0)

    def doc():
        k = rng.randrange(len(words))
        return " ".join(words[(k + i) % len(words)] for i in range(60))

    d = tmp_path_factory.mktemp("pattern")
    for name, n in (("train.txt", 200), ("valid.txt", 20)):
        (d / name).write_text("".join(doc() + "\n<|endoftext|>\n" for _ in range(n)), encoding="utf-8")
    return d


# --- gradient accumulation and clipping (through the trainer's own step) -----------------------

def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch(ows, corpus_dir):
    """k = 3 micro-batches of 2 windows: the step's gradient, loss and gradient norm are those
    of one batch of 6 windows, and the weights after the step are a plain AdamW step on it."""
    seen = {}
    t, _, rows, _ = train(ows, corpus_dir, grad_accum=3,
                          setup=lambda t: seen.update(init=weights(t.raw_model)),
                          hooks=[lambda t: seen.update(grads=grads(t.raw_model), after=weights(t.raw_model))])
    tc, T = t.cfg.train, t.cfg.model.max_seq_len
    (batches,) = micro_batches(t.data, tc, T, 1)
    ref = build_model(t.cfg.model)
    ref.load_state_dict(seen["init"])
    loss, g = reference_gradient(ref, batches)
    assert rows[0]["loss"] == pytest.approx(loss, rel=1e-5)
    assert rows[0]["grad_norm"] == pytest.approx(global_norm(g), rel=1e-4)
    assert_close_dicts(seen["grads"], g, rtol=1e-4, atol=1e-7, what="gradient")
    # the step itself: AdamW with decay on the matrices only, written out here
    decay = [p for p in ref.parameters() if p.dim() == 2]
    other = [p for p in ref.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=EPS, foreach=False)
    opt.step()
    assert_close_dicts(seen["after"], weights(ref), rtol=0, atol=1e-5, what="weight")


@pytest.mark.parametrize("factor", [0.25, 4.0], ids=["large-norm-clipped", "small-norm-unchanged"])
def test_clipping_bounds_the_global_norm_and_leaves_a_small_one_unchanged(ows, corpus_dir, factor):
    """With ``grad_clip`` = factor x the true norm the step's gradient is the true one scaled
    to norm ``grad_clip`` (factor < 1) or the true one exactly (factor > 1)."""
    seen = {}
    # the true gradient of the first step, from a run without clipping
    train(ows, corpus_dir, setup=lambda t: seen.update(init=weights(t.raw_model)),
          hooks=[lambda t: seen.update(cfg=t.cfg, data=t.data)])
    ref = build_model(seen["cfg"].model)
    ref.load_state_dict(seen["init"])
    (batches,) = micro_batches(seen["data"], seen["cfg"].train, seen["cfg"].model.max_seq_len, 1)
    _, g = reference_gradient(ref, batches)
    norm = global_norm(g)
    clip = factor * norm
    t, _, rows, _ = train(ows, corpus_dir, grad_clip=clip, hooks=[lambda t: seen.update(grads=grads(t.raw_model))])
    got = global_norm(seen["grads"])
    assert rows[0]["grad_norm"] == pytest.approx(norm, rel=1e-4)  # reported before clipping
    if factor < 1:
        assert got == pytest.approx(clip, rel=1e-4)
        want = {k: v * (clip / norm) for k, v in g.items()}
    else:
        assert got == pytest.approx(norm, rel=1e-4)
        want = g
    assert_close_dicts(seen["grads"], want, rtol=1e-4, atol=1e-7, what="gradient")


# --- the learning-rate schedule ------------------------------------------------------------------

def schedule_formula(schedule, step, p, lr=1e-2, min_lr=1e-3, warmup=3, decay_fraction=0.25):
    """The documented schedule: linear warm-up from lr/warmup to lr over ``warmup`` steps,
    then, with p the fraction of the budget after warm-up, cosine / linear / constant / wsd."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(max(p, 0.0), 1.0)
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr - (lr - min_lr) * p
    if schedule == "wsd":
        return lr if p <= 1 - decay_fraction else lr - (lr - min_lr) * (p - (1 - decay_fraction)) / decay_fraction
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * p)) / 2


SCHEDULES = ("cosine", "linear", "constant", "wsd")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_lr_at_equals_the_formula(schedule):
    tc = TrainConfig(lr=1e-2, min_lr=1e-3, warmup_steps=3, schedule=schedule, decay_fraction=0.25)
    for step, p in [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.1), (7, 0.5), (9, 0.74), (9, 0.75),
                    (10, 0.8), (11, 0.9), (12, 1.0), (13, 1.5), (5, -0.2)]:
        assert lr_at(tc, step, p) == pytest.approx(schedule_formula(schedule, step, p), rel=1e-12, abs=1e-15), \
            (schedule, step, p)
    if schedule != "constant":
        after = [lr_at(tc, 3, p / 10) for p in range(11)]
        assert after == sorted(after, reverse=True) and after[0] > after[-1]  # decays, never rises
        assert after[-1] == pytest.approx(1e-3)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_trainer_follows_the_schedule_step_by_step(ows, corpus_dir, schedule):
    """10 steps, 3 of warm-up: the lr of every step as the formula gives it, with the budget's
    progress p = (step - warmup) / (max_steps - warmup)."""
    _, summary, rows, _ = train(ows, corpus_dir, schedule=schedule, max_steps=10, warmup_steps=3, lr=1e-2, min_lr=1e-3,
                                decay_fraction=0.25)
    assert [r["step"] for r in rows] == list(range(1, 11))
    for r in rows:
        s = r["step"] - 1
        assert r["lr"] == pytest.approx(schedule_formula(schedule, s, (s - 3) / 7), rel=1e-9), (schedule, s)


def test_a_token_budget_decays_on_the_tokens_seen(ows, corpus_dir):
    """wsd on a token budget of 8 steps' tokens (no step budget): p = tokens seen / budget."""
    per_step = 2 * 2 * TINY["max_seq_len"]
    _, summary, rows, _ = train(ows, corpus_dir, schedule="wsd", max_steps=None, max_tokens=8 * per_step, grad_accum=2,
                                warmup_steps=2, lr=1e-2, min_lr=1e-3, decay_fraction=0.5)
    for r in rows:
        s = r["step"] - 1
        assert r["lr"] == pytest.approx(schedule_formula("wsd", s, s / 8, warmup=2, decay_fraction=0.5), rel=1e-9)


def test_a_time_budget_decays_on_the_clock(ows, corpus_dir):
    """Cosine over a 2.4-second budget (no step or token budget): each step's lr is the formula
    at p = training time so far / budget, the time read after the step before it."""
    clock = [0.0]
    _, summary, rows, _ = train(ows, corpus_dir, schedule="cosine", max_steps=None, max_minutes=0.04, lr=1e-2,
                                min_lr=1e-3, hooks=[lambda t: clock.append(t.elapsed)])
    assert len(rows) == summary["step"] >= 10 and clock[-1] >= 2.4
    for r in rows:
        p = clock[r["step"] - 1] / 2.4
        assert r["lr"] == pytest.approx(schedule_formula("cosine", r["step"] - 1, p, warmup=0), rel=1e-9)
    assert rows[-1]["lr"] < 0.5 * rows[0]["lr"]  # it did decay


# --- the token budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("accum,steps,extra", [(1, 5, 0), (2, 3, 0), (1, 4, -1)],
                         ids=["exact", "accumulated", "ends-at-the-step-that-reaches-it"])
def test_a_token_budget_ends_at_that_many_tokens(ows, corpus_dir, accum, steps, extra):
    per_step = 2 * accum * TINY["max_seq_len"]  # batch_size x grad_accum x max_seq_len targets
    budget = steps * per_step + extra
    counted = []
    _, summary, rows, _ = train(ows, corpus_dir, max_steps=None, max_tokens=budget, grad_accum=accum,
                                hooks=[lambda t: counted.append(t.step)])
    assert len(counted) == steps == summary["step"]
    assert summary["tokens"] == steps * per_step >= budget > (steps - 1) * per_step
    assert [r["tokens"] for r in rows] == [per_step * (i + 1) for i in range(steps)]


# --- weight decay and the optimizers' parameter groups --------------------------------------------

def decay_model(tie: bool):
    return build_model(ModelConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, norm="layernorm", bias=True,
                                   mlp="swiglu", tie_embeddings=tie, max_seq_len=8), seed=0)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_weight_decay_touches_exactly_the_matrices(tie):
    """A step with every gradient zero moves nothing but weight decay: each 2-D matrix shrinks
    by exactly (1 - lr * weight_decay); norms, biases and the rest do not move."""
    model = decay_model(tie)
    tc = TrainConfig(lr=0.1, weight_decay=0.5)
    opt = make_optimizer(model, tc, torch.device("cpu"))
    before = dict((n, p.detach().clone()) for n, p in model.named_parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    matrices = 0
    for n, p in model.named_parameters():
        want = before[n] * (1 - 0.1 * 0.5) if p.dim() == 2 else before[n]
        matrices += p.dim() == 2
        assert torch.allclose(p.detach(), want, rtol=1e-6, atol=0), n
    assert matrices == 2 * (2 + 3) + 1 + (not tie)  # wqkv, wo, w1-3 per layer; embedding; head


def test_muon_takes_exactly_the_hidden_matrices():
    model = decay_model(tie=False)
    opt = make_optimizer(model, TrainConfig(optimizer="muon", lr=0.02, weight_decay=0.1), torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [o for o in opt.optimizers if type(o).__name__ == "Muon"]
    assert len(muon) == 1
    hidden = {names[id(p)] for g in muon[0].param_groups for p in g["params"]}
    want = {f"layers.{i}.{m}.weight" for i in range(2) for m in ("attn.wqkv", "attn.wo", "mlp.w1", "mlp.w2", "mlp.w3")}
    assert hidden == want
    rest = {names[id(p)]: g["weight_decay"] for o in opt.optimizers if o is not muon[0]
            for g in o.param_groups for p in g["params"]}
    assert set(rest) == set(names.values()) - want
    assert {n for n, wd in rest.items() if wd > 0} == {"tok_emb.weight", "lm_head.weight"}


# --- evaluation: bits per byte, perplexity, the validation split ------------------------------------

class Unigram(torch.nn.Module):
    """A "model" whose next-token distribution is a fixed ``probs`` whatever the input."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logp", probs.log())

    def forward(self, idx):
        return self.logp.expand(*idx.shape, -1)


def test_bits_per_byte_on_hand_made_text_and_known_probabilities(ows, tmp_path):
    """bits per byte = (sum over the evaluated targets of -log2 q(target)) / targets, times the
    split's tokens per UTF-8 byte of its documents (counted here, accents and emoji included)."""
    docs = ["Ünïcödé café — naïve façade, 12 € each 🙂", "plain ascii words here", "日本語 and ελληνικά text"] * 3
    d = tmp_path / "bpb"
    d.mkdir()
    for name in ("train.txt", "valid.txt"):
        (d / name).write_text("".join(doc + "\n<|endoftext|>\n" for doc in docs), encoding="utf-8")
    data = ensure_prepared(ows, "tok", str(d))
    tok = load_tokenizer(ows, "tok")
    tokens = split_tokens(data, "val")
    assert len(tokens) == sum(len(tok.encode(doc, bos=True, eos=True)) for doc in docs)
    n_bytes = sum(len(doc.encode("utf-8")) for doc in docs)
    assert n_bytes > sum(len(doc) for doc in docs) + 20  # the text really has multi-byte characters
    V = tok.vocab_size
    q = torch.arange(1, V + 1, dtype=torch.float64) ** 0.5
    q = (q / q.sum()).float()
    T, B = 8, 3
    m = evaluate(Unigram(q), data.val, B, T, None, data.bytes_per_token("val"), torch.device("cpu"))
    n_windows = (len(tokens) - 1) // T
    targets = tokens[1:n_windows * T + 1]
    nats = -np.log(q.double().numpy())[targets]
    assert m["val_tokens"] == len(targets)
    assert m["val_loss"] == pytest.approx(nats.mean(), rel=1e-5)
    assert m["val_ppl"] == pytest.approx(math.exp(nats.mean()), rel=1e-5)
    assert m["bpb"] == pytest.approx(nats.mean() / math.log(2) * len(tokens) / n_bytes, rel=1e-5)
    # uniform: exactly log2(V) bits per token
    u = evaluate(Unigram(torch.full((V,), 1.0 / V)), data.val, B, T, 2, data.bytes_per_token("val"), torch.device("cpu"))
    assert u["val_tokens"] == 2 * B * T
    assert u["bpb"] == pytest.approx(math.log2(V) * len(tokens) / n_bytes, rel=1e-5)


def test_evaluation_reads_only_the_validation_tokens_with_dropout_off(ows, corpus_dir):
    """The eval row of a run (with dropout 0.1) is the plain loss of the trained weights in
    eval mode over the first eval_batches x batch_size windows of ``val.bin``; the train split
    (a different text) gives another number, so reading it would show."""
    t, _, _, evals = train(ows, corpus_dir, model={"dropout": 0.1}, max_steps=2, eval_batches=3, batch_size=2)
    model = t.raw_model.eval()
    T, B = t.cfg.model.max_seq_len, 2

    def loss_on(split):
        tokens = split_tokens(t.data, split)
        rows = torch.from_numpy(np.stack([tokens[r * T:r * T + T + 1] for r in range(3 * B)]))
        with torch.no_grad():
            return plain_loss(model, rows).item()

    val, on_train = loss_on("val"), loss_on("train")
    assert abs(val - on_train) > 1e-3  # the two splits are told apart
    (row,) = evals
    assert row["val_loss"] == pytest.approx(val, rel=1e-5)
    assert row["val_ppl"] == pytest.approx(math.exp(val), rel=1e-5)
    tokens = split_tokens(t.data, "val")
    text = (corpus_dir / "valid.txt").read_text(encoding="utf-8")
    n_bytes = sum(len(s.strip("\r\n").encode("utf-8")) for s in text.split("\n<|endoftext|>\n") if s.strip())
    assert row["bpb"] == pytest.approx(val / math.log(2) * len(tokens) / n_bytes, rel=1e-5)


# --- sampling ------------------------------------------------------------------------------------

def frequencies(logits, params, n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(len(logits))
    for _ in range(n):
        counts[choose(logits, params, g)] += 1
    return counts / n


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_temperature_samples_softmax_of_logits_over_t(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 20000
    f = frequencies(logits, SamplingParams(temperature=temperature), n)
    p = torch.softmax(logits.double() / temperature, dim=-1).float()
    bound = 5 * torch.sqrt(p * (1 - p) / n)  # five standard deviations of each frequency
    assert ((f - p).abs() <= bound).all(), (f.tolist(), p.tolist())


@pytest.mark.parametrize("p,kept", [(0.25, 1), (0.5, 2), (0.75, 3), (0.5000001, 3), (1.0, 4)])
def test_top_p_at_exactly_p(p, kept):
    """Four equal logits: probabilities exactly 1/4 each, so the first two reach 0.5 exactly
    and top-p 0.5 keeps two (not three); ties keep the lowest ids."""
    logits = torch.zeros(4)
    out = filter_top_k_top_p(logits, top_p=p)
    assert torch.isfinite(out).nonzero().flatten().tolist() == list(range(kept))
    if kept < 4:
        f = frequencies(logits, SamplingParams(temperature=1.0, top_p=p), n=2000)
        assert (f[:kept] > 0).all() and (f[kept:] == 0).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_keeps_exactly_k_and_renormalises(k):
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0])
    out = filter_top_k_top_p(logits, top_k=k)
    assert sorted(torch.isfinite(out).nonzero().flatten().tolist()) == sorted([1, 3, 2][:k])
    n = 8000
    f = frequencies(logits, SamplingParams(temperature=1.0, top_k=k), n)
    p = torch.zeros(5)
    p[[1, 3, 2][:k]] = torch.softmax(torch.tensor([3.0, 2.0, 1.0][:k]), dim=-1)
    assert ((f - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-9).all()


def test_repetition_penalty_makes_seen_tokens_less_likely():
    """CTRL: a seen token's positive logit is divided by the penalty, a negative one multiplied."""
    logits = torch.tensor([2.0, -2.0, 1.0, -1.0])
    seen = torch.tensor([True, True, False, False])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [1.0, -4.0, 1.0, -1.0]
    # greedy: the seen leader (2.0 -> 0.5) loses to the unseen 1.0
    assert choose(logits, SamplingParams(temperature=0.0, repetition_penalty=4.0), seen=seen) == 2


# --- the model against a reference written here ----------------------------------------------------

def ref_norm(x, sd, name, cfg):
    w = sd[f"{name}.weight"]
    if cfg.norm == "rmsnorm":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * w
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + cfg.norm_eps) * w
    return y + sd[f"{name}.bias"] if cfg.bias else y


def ref_linear(x, sd, name, cfg):
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if cfg.bias else y


def ref_rope(x, cfg):
    """Rotate each (i, i + D/2) pair of a head by angle pos * theta^(-2i/D); x (B, T, H, D)."""
    T, D = x.shape[1], x.shape[-1]
    inv = cfg.rope_theta ** (-torch.arange(0, D // 2, dtype=torch.float64) * 2 / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = x[..., :D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def reference_logits(sd, cfg, idx):
    """The same transformer, written out from the weights by name, in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    B, T = idx.shape
    H, Hkv, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    x = sd["tok_emb.weight"][idx]
    if cfg.pos == "learned":
        x = x + sd["pos.emb.weight"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg.n_layers):
        L = f"layers.{i}"
        h = ref_norm(x, sd, f"{L}.attn_norm", cfg)
        qkv = ref_linear(h, sd, f"{L}.attn.wqkv", cfg)
        q = qkv[..., :H * D].reshape(B, T, H, D)
        k = qkv[..., H * D:(H + Hkv) * D].reshape(B, T, Hkv, D)
        v = qkv[..., (H + Hkv) * D:].reshape(B, T, Hkv, D)
        if cfg.qk_norm:
            eps = torch.finfo(torch.float64).eps
            q = q / torch.sqrt((q * q).mean(-1, keepdim=True) + eps)
            k = k / torch.sqrt((k * k).mean(-1, keepdim=True) + eps)
        if cfg.pos == "rope":
            q, k = ref_rope(q, cfg), ref_rope(k, cfg)  # values are never rotated
        heads = []
        for hd in range(H):
            kv = hd // (H // Hkv)  # query heads share key/value heads in groups
            s = q[:, :, hd] @ k[:, :, kv].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
            s = s.masked_fill(~causal, float("-inf"))
            heads.append(torch.softmax(s, dim=-1) @ v[:, :, kv])
        x = x + ref_linear(torch.cat(heads, dim=-1), sd, f"{L}.attn.wo", cfg)
        h = ref_norm(x, sd, f"{L}.mlp_norm", cfg)
        if cfg.mlp == "swiglu":
            a, u = ref_linear(h, sd, f"{L}.mlp.w1", cfg), ref_linear(h, sd, f"{L}.mlp.w3", cfg)
            m = a * torch.sigmoid(a) * u
        elif cfg.mlp == "gelu":
            a = ref_linear(h, sd, f"{L}.mlp.w1", cfg)
            m = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
        else:
            m = torch.relu(ref_linear(h, sd, f"{L}.mlp.w1", cfg)) ** 2
        x = x + ref_linear(m, sd, f"{L}.mlp.w2", cfg)
    x = ref_norm(x, sd, "norm", cfg)
    head = sd["tok_emb.weight"] if cfg.tie_embeddings else sd["lm_head.weight"]
    logits = x @ head.T
    if cfg.logit_softcap:
        logits = cfg.logit_softcap * torch.tanh(logits / cfg.logit_softcap)
    return logits


REF_VARIANTS = {
    "llama-rope-gqa-tied": dict(),
    "gpt2-learned-bias-untied": dict(mlp="gelu", norm="layernorm", pos="learned", bias=True, tie_embeddings=False,
                                     n_kv_heads=None),
    "relu2-nope-mqa-qknorm-softcap": dict(mlp="relu2", pos="none", n_kv_heads=1, qk_norm=True, logit_softcap=5.0),
    "rope-qknorm-mha-untied": dict(pos="rope", qk_norm=True, n_kv_heads=None, tie_embeddings=False),
}


def spread(cfg, seed=0):
    model = build_model(cfg, seed=seed)
    model.init_weights(std=0.2)  # weights large enough that every mistake shows in the logits
    if cfg.norm == "layernorm" or cfg.bias:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("variant", list(REF_VARIANTS))
@pytest.mark.parametrize("kernel", ["sdpa", "explicit"])
def test_logits_equal_a_plain_reference_implementation(variant, kernel):
    cfg = ModelConfig(**{**dict(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24),
                         **REF_VARIANTS[variant]})
    model = spread(cfg).double()
    model.set_attention_kernel(kernel)
    idx = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(idx)
    want = reference_logits(model.state_dict(), cfg, idx)
    # float64 throughout, except the engine's RoPE tables, which are made in float32
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max().item()
    assert want.std() > 0.1  # not a degenerate model


@pytest.mark.parametrize("variant", ["llama-rope-gqa-tied", "gpt2-learned-bias-untied"])
def test_kv_cache_decoding_equals_the_reference(variant):
    """Prefill 7 tokens, then one token per forward through the cache: each step's logits are
    the reference's at that position (so cached positions are offset correctly)."""
    cfg = ModelConfig(**{**dict(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=24),
                         **REF_VARIANTS[variant]})
    model = spread(cfg).double()
    idx = torch.randint(0, cfg.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    want = reference_logits(model.state_dict(), cfg, idx)
    cache = KVCache.for_model(model, 1)
    with torch.no_grad():
        got = [model(idx[:, :7], kv_cache=cache)]
        for t in range(7, 20):
            got.append(model(idx[:, t:t + 1], kv_cache=cache))
    assert torch.allclose(torch.cat(got, dim=1), want, rtol=1e-5, atol=1e-5)


# --- generation stops at EOS ---------------------------------------------------------------------

class Successor(torch.nn.Module):
    """A "model" that always predicts ``nxt[last token]`` (logit 10, everything else 0)."""

    def __init__(self, cfg, nxt: dict):
        super().__init__()
        self.config = cfg
        self.nxt = nxt
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, kv_cache=None, logits_to_keep=0, targets=None):
        B, T = idx.shape
        out = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            for t in range(T):
                out[b, t, self.nxt.get(int(idx[b, t]), 0)] = 10.0
        if kv_cache is not None:
            kv_cache.advance(T)
        return out[:, -logits_to_keep:] if logits_to_keep else out


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_stops_at_eos(built, use_cache):
    tok = load_tokenizer(built, "tok")
    eos, a, b, c = tok.eos_id, 100, 101, 102
    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=8, n_layers=1, n_heads=2, max_seq_len=64)
    model = Successor(cfg, {a: b, b: c, c: eos, eos: a})
    greedy = dict(temperature=0.0, max_tokens=20, alternatives=0)
    steps = list(token_loop(model, [a], SamplingParams(**greedy), eos_id=eos, use_cache=use_cache))
    assert [s.id for s in steps] == [b, c]
    gen = Generation(model, tok, "", SamplingParams(**greedy), prompt_ids=[a], use_cache=use_cache)
    list(gen)
    assert gen.result.ids == [b, c] and gen.result.stop_reason == "eos"
    # with stop_at_eos off, EOS is just another token and the cycle goes on to max_tokens
    steps = list(token_loop(model, [a], SamplingParams(**greedy, stop_at_eos=False), eos_id=eos, use_cache=use_cache))
    assert [s.id for s in steps][:5] == [b, c, eos, a, b] and len(steps) == 20


# --- a model learns ------------------------------------------------------------------------------

def test_a_model_learns_a_tiny_synthetic_language(ows, pattern):
    """Documents are a six-word cycle from a random offset: after a few hundred steps the
    validation loss is a small fraction of the first step's (which is about ln(vocab))."""
    t, _, rows, evals = train(ows, pattern, model={"max_seq_len": 32}, max_steps=250, batch_size=8, lr=3e-3,
                              warmup_steps=20, schedule="cosine", min_lr=3e-4, grad_clip=1.0, log_interval=10,
                              eval_interval=250, eval_batches=4)
    assert rows[0]["loss"] == pytest.approx(math.log(400), rel=0.15)
    assert evals[-1]["val_loss"] < 0.35, evals[-1]
    assert evals[-1]["top1"] > 0.85

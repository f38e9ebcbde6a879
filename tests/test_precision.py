"""Precision and kernel choices: the measured probe decides `auto` both ways, an explicit choice
wins, the choice is recorded in the run and kept on resume, a bf16 run resumes step for step,
the fused head + loss and the explicit attention kernel compute what the plain ones do."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from helpers import inject_matmul
from helpers import losses, tiny_config
from workbench.machine import probe
from workbench.cli import main
from workbench.config.schema import ModelConfig
from workbench.machine.device import resolve_precision
from workbench.model import build_model, lm_loss
from workbench.runs.folder import get_run
from workbench.training.events import Started
from workbench.training.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def bf16_machine():
    """This test's machine does bf16 4x faster than fp32; the suite's default comes back after."""
    inject_matmul(4.0)
    yield
    inject_matmul(0.5)


def test_auto_follows_the_measurement_both_ways(bf16_machine):
    from workbench.machine.choices import precision_for

    name, why = precision_for("auto", CPU, measure=True)
    p = resolve_precision(name, CPU, why)
    assert p.name == "bf16" and p.autocast_dtype is torch.bfloat16
    assert "400 vs fp32 100 GFLOP/s, 4.00x" in p.reason
    inject_matmul(1.1)  # emulated bf16, or barely faster: not worth the casts
    name, why = precision_for("auto", CPU, measure=True)
    p = resolve_precision(name, CPU, why)
    assert p.name == "fp32" and p.autocast_dtype is None and "not faster" in p.reason
    # the estimate (no torch, the device by name) reads the same cached decision
    assert precision_for("auto", "cpu")[0] == "fp32"
    inject_matmul(4.0)
    assert precision_for("auto", "cpu")[0] == "bf16"


def test_explicit_precision_wins(bf16_machine):
    assert resolve_precision("fp32", CPU).name == "fp32"
    inject_matmul(0.5)
    assert resolve_precision("bf16", CPU).name == "bf16"  # asked for: given, even if slower


def test_unmeasured_machine_measures_once(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))
    assert probe.matmul_probe(measure=False) is None
    from workbench.machine.choices import precision_for

    assert precision_for("auto", CPU, measure=False)[0] == "fp32"
    first = probe.matmul_probe()
    assert first["cached"] is False and first["fp32_gflops"] > 0 and first["bf16_gflops"] > 0
    assert first["bf16_speedup"] == pytest.approx(first["bf16_gflops"] / first["fp32_gflops"], rel=0.01)
    again = probe.matmul_probe()
    assert again["cached"] is True and again["bf16_speedup"] == first["bf16_speedup"]
    on_disk = json.loads(probe.cache_file().read_text())
    assert on_disk["matmul"]["bf16_speedup"] == first["bf16_speedup"]


def test_a_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path))
    probe.cache_file().parent.mkdir(parents=True, exist_ok=True)
    probe.cache_file().write_text("{not json")
    assert probe.matmul_probe(measure=False) is None
    assert probe.matmul_probe()["cached"] is False


class _Clocked:
    """A matrix whose product costs ``cost`` seconds of a fake clock, counted."""

    def __init__(self, clock: list, cost: float):
        self.clock, self.cost, self.calls = clock, cost, 0

    def __matmul__(self, other):
        self.calls += 1
        self.clock[0] += self.cost
        return self


@pytest.mark.parametrize("cost,calls", [(2.0, 2), (1 / 256, 2 + 3 * 64)])  # 0.25 s windows
def test_matmul_timing_keeps_to_its_budget(monkeypatch, cost, calls):
    """A dtype whose single product outlasts a window (an emulated bf16: seconds per call) is
    timed once after its warm-up; a fast one fills three windows of the budget."""
    clock = [0.0]
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock[0])
    a = _Clocked(clock, cost)
    assert probe.best_matmul_seconds(a, a, seconds=0.75) == pytest.approx(cost)
    assert a.calls == calls


def test_the_bench_peak_uses_the_same_budgeted_timing(monkeypatch):
    from workbench.bench import measure

    seen = {}

    def fake(a, b, seconds, windows=3, max_reps=200):
        seen.update(shape=tuple(a.shape), seconds=seconds, windows=windows, max_reps=max_reps)
        return 0.5

    monkeypatch.setattr(probe, "best_matmul_seconds", fake)
    assert measure.matmul_peak_gflops("bfloat16", n=64, seconds=0.2) == pytest.approx(2 * 64**3 / 0.5 / 1e9)
    assert seen == {"shape": (64, 64), "seconds": 0.2, "windows": 5, "max_reps": 50}


def test_attention_choice_rules():
    fast_explicit = {"sdpa": 10.0, "explicit": 5.0}
    assert probe.attention_choice(fast_explicit, 16, 4, 256, 4, 2)[0] == "explicit"
    assert probe.attention_choice({"sdpa": 10.0, "explicit": 9.9}, 16, 4, 256, 4, 2)[0] == "sdpa"  # within noise
    # faster, but the probabilities it keeps would not fit the cap
    kernel, why = probe.attention_choice(fast_explicit, 64, 16, 2048, 12, 2)
    assert kernel == "sdpa" and "MiB" in why
    assert probe.attention_choice(None, 16, 4, 256, 4, 2)[0] == "sdpa"


def _stop_at(trainer, step):
    trainer.step_hooks.append(lambda t: t.stop() if t.step == step else None)


def test_auto_is_recorded_and_a_bf16_run_resumes_step_for_step(built, corpus_dir, bf16_machine):
    def cfg():  # dropout and accumulation: the RNG and data position must come back exactly too
        c = tiny_config(max_steps=12, grad_accum=2)
        c.model = c.model.replace(dropout=0.1)
        return c

    ev1 = []
    straight = Trainer.new(built, cfg(), "tok", str(corpus_dir), name="bf-straight", on_event=ev1.append)
    assert straight.run()["state"] == "finished"
    start = dataclasses.asdict(next(e for e in ev1 if isinstance(e, Started)))
    assert start["precision"] == "bf16" and "4.00x" in start["precision_reason"]
    run = get_run(built, "bf-straight")
    st = run.status()
    assert st["precision"] == "bf16" and st["attention"] in ("sdpa", "explicit")
    state = torch.load(run.path / "checkpoints/step_000012/state.pt", weights_only=True)
    assert state["precision"] == "bf16" and state["attention"] == st["attention"]
    evals = [r for r in run.metrics() if r["kind"] == "eval"]
    assert evals and all(r["precision"] == "bf16" for r in evals)
    # the weights are fp32 master weights: they load where a fp32 run's do
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(run.path / "checkpoints/step_000012/model.safetensors")).values()} == {torch.float32}

    ev2 = []
    half = Trainer.new(built, cfg(), "tok", str(corpus_dir), name="bf-half", on_event=ev2.append)
    half.setup()
    _stop_at(half, 6)
    assert half.run()["state"] == "stopped"
    inject_matmul(0.5)  # the machine's measurement changed: the resumed run still trains as it did
    ev3 = []
    resumed = Trainer.resume(built, "bf-half", on_event=ev3.append)
    assert resumed.run()["state"] == "finished"
    assert next(e for e in ev3 if isinstance(e, Started)).precision == "bf16"
    assert losses(ev1) == losses(ev2) + losses(ev3)  # bit for bit


def test_explicit_precision_is_recorded_and_kept(built, corpus_dir, bf16_machine):
    t = Trainer.new(built, tiny_config(max_steps=2, precision="fp32"), "tok", str(corpus_dir), name="fp-explicit")
    assert t.run()["state"] == "finished"
    st = get_run(built, "fp-explicit").status()
    assert st["precision"] == "fp32" and "set in the config" in st["precision_reason"]


def test_fused_adamw_is_used_on_cpu(built, corpus_dir):
    t = Trainer.new(built, tiny_config(max_steps=1), "tok", str(corpus_dir), name="fused-adamw")
    t.setup()
    assert t.optimizer.defaults["fused"] is True
    assert t.run()["state"] == "finished"


def test_cli_train_and_eval_say_which_precision(built, corpus_dir, capsys, bf16_machine):
    args = ["--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
            "--name", "cli-prec", "--set", "model.vocab_size=400", "--set", "model.max_seq_len=32",
            "--set", "train.batch_size=4", "--set", "train.max_steps=3", "--set", "train.num_threads=1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "precision bf16 (auto; bf16 matmul 400 vs fp32 100 GFLOP/s, 4.00x on this CPU: bf16 autocast" in err
    assert "attention sdpa (measured fwd+bwd: sdpa" in err or "attention explicit (measured" in err
    assert main(["--workspace", str(built.root), "eval", "cli-prec", "--batches", "1"]) == 0
    assert "bf16)" in capsys.readouterr().out
    assert main(["--workspace", str(built.root), "eval", "cli-prec", "--batches", "1", "--precision", "fp32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"


# ---------------------------------------------------------------- kernels compute the same thing

def _grads(model, x, fused: bool, dtype=None):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
        if fused:
            loss = model(x[:, :-1], targets=x[:, 1:])
        else:
            logits = model(x[:, :-1])
            loss = lm_loss(logits.float() if dtype is torch.bfloat16 else logits, x[:, 1:])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kv,tie", [(4, True), (2, False), (1, True)])
def test_fused_loss_and_explicit_attention_match_the_plain_path(kv, tie):
    cfg = ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=kv, max_seq_len=32,
                      tie_embeddings=tie)
    model = build_model(cfg, seed=0, dtype=torch.float64)
    x = torch.randint(0, 300, (3, 33), generator=torch.Generator().manual_seed(1))
    ref_loss, ref = _grads(model, x, fused=False)
    for kernel in ("sdpa", "explicit"):
        model.set_attention_kernel(kernel)
        loss, got = _grads(model, x, fused=True)
        assert loss.dtype == torch.float64 and abs(loss.item() - ref_loss.item()) < 1e-12
        assert max((got[n] - ref[n]).abs().max().item() for n in ref) < 1e-10
    with torch.no_grad():
        assert abs(model(x[:, :-1], targets=x[:, 1:]).item() - ref_loss.item()) < 1e-12


def test_fused_loss_under_bf16_autocast_is_close_and_ignores_padding():
    cfg = ModelConfig(vocab_size=500, dim=64, n_layers=2, n_heads=4, max_seq_len=32)
    model = build_model(cfg, seed=0)
    x = torch.randint(0, 500, (4, 33), generator=torch.Generator().manual_seed(2))
    for kernel in ("sdpa", "explicit"):
        model.set_attention_kernel(kernel)
        plain, gp = _grads(model, x, fused=False, dtype=torch.bfloat16)
        fused, gf = _grads(model, x, fused=True, dtype=torch.bfloat16)
        assert abs(plain.item() - fused.item()) < 2e-2 * plain.item()
        for n in gp:
            assert torch.nn.functional.cosine_similarity(gp[n].flatten(), gf[n].flatten(), dim=0) > 0.99, n
    y = x[:, 1:].clone()
    y[:, ::3] = -1  # ignored targets count for nothing
    model.set_attention_kernel("sdpa")
    with torch.no_grad():
        fused = model(x[:, :-1], targets=y)
        plain = lm_loss(model(x[:, :-1]), y)
    assert abs(fused.item() - plain.item()) < 1e-5
    with pytest.raises(ValueError, match="attention kernel"):
        model.set_attention_kernel("flash")


def test_attention_probe_measures_both_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path))
    d = probe.attention_probe(4, 2, 32, 16, "float32")
    assert d["cached"] is False and d["sdpa"] > 0 and d["explicit"] > 0
    assert probe.attention_probe(4, 2, 32, 16, "float32", measure=False)["cached"] is True


# ---------------------------------------------------------------- decoding precision

def test_decode_precision_is_measured_per_shape(bf16_machine):
    from workbench.errors import WorkbenchError
    from workbench.generation.generate import decode_precision

    small = ModelConfig(vocab_size=300, dim=32, n_layers=2, n_heads=4, max_seq_len=32)
    big = ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, max_seq_len=32)
    key = lambda c: (f"decode d{c.dim} L{c.n_layers} H{c.n_heads}/{c.kv_heads} F{c.ffn_dim} V{c.vocab_size} "
                     f"T{c.max_seq_len}")
    probe.write_cached({key(small): {"fp32": 900.0, "bf16": 450.0, "tokens": 24},
                        key(big): {"fp32": 190.0, "bf16": 280.0, "tokens": 24}})
    assert decode_precision(small) == ("fp32", "auto; measured decode bf16 450 vs fp32 900 tok/s")
    assert decode_precision(big)[0] == "bf16"
    assert decode_precision(big, "fp32") == ("fp32", "asked for")
    inject_matmul(0.5)  # no fast bf16: never bf16, nothing measured
    assert decode_precision(big)[0] == "fp32"
    with pytest.raises(WorkbenchError, match="expected one of auto, fp32, bf16"):
        decode_precision(big, "int8")


def test_generation_in_bf16_says_so(built, corpus_dir, capsys):
    from workbench.generation.generate import generate, load_for_generation
    from workbench.generation.sampling import SamplingParams

    Trainer.new(built, tiny_config(max_steps=2), "tok", str(corpus_dir), name="gen-bf16").run()
    model, tok, _, _ = load_for_generation(built, "gen-bf16", precision="bf16")
    assert next(model.parameters()).dtype is torch.bfloat16 and model.precision_reason == "asked for"
    out = generate(model, tok, "Once", SamplingParams(max_tokens=5, temperature=0, stop_at_eos=False))
    assert out.precision == "bf16" and len(out.ids) == 5
    assert main(["--workspace", str(built.root), "generate", "gen-bf16", "--max-tokens", "3", "--temperature", "0"]) == 0
    assert "decoding in fp32 (auto; bf16 is not faster on this CPU)" in capsys.readouterr().err
    assert main(["--workspace", str(built.root), "generate", "gen-bf16", "--max-tokens", "3", "--json",
                 "--precision", "bf16"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["precision"] == "bf16" and d["samples"][0]["precision"] == "bf16"


# ---------------------------------------------------------------- optimizers and schedules

def test_muon_trains_hidden_matrices_and_adamw_the_rest(built, corpus_dir):
    t = Trainer.new(built, tiny_config(max_steps=6, optimizer="muon", checkpoint_interval=3), "tok", str(corpus_dir),
                    name="muon-run")
    t.setup()
    muon, adamw = t.optimizer.optimizers
    assert type(muon).__name__ == "Muon" and type(adamw).__name__ == "AdamW"
    hidden = {id(p) for g in muon.param_groups for p in g["params"]}
    for name, p in t.raw_model.named_parameters():
        is_hidden = p.dim() == 2 and "tok_emb" not in name and "lm_head" not in name
        assert (id(p) in hidden) == is_hidden, name
    from workbench.config.sizes import hidden_matrix_params

    assert sum(p.numel() for g in muon.param_groups for p in g["params"]) == hidden_matrix_params(t.cfg.model)
    assert t.run()["state"] == "finished"
    # resumes exactly: both optimizers' states come back
    half = Trainer.new(built, tiny_config(max_steps=6, optimizer="muon", checkpoint_interval=3), "tok", str(corpus_dir),
                       name="muon-half")
    half.setup()
    _stop_at(half, 3)
    ev = []
    half.on_event = ev.append
    half.run()
    ev2 = []
    Trainer.resume(built, "muon-half", on_event=ev2.append).run()
    straight = [r["loss"] for r in get_run(built, "muon-run").metrics() if r["kind"] == "train"]
    resumed = [r["loss"] for r in get_run(built, "muon-half").metrics() if r["kind"] == "train"]
    assert straight == resumed


def test_wsd_holds_the_peak_then_decays_over_the_last_fraction():
    from workbench.config.schema import TrainConfig
    from workbench.training.optim import lr_at

    tc = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, schedule="wsd", decay_fraction=0.25, max_steps=110)
    assert lr_at(tc, 0, 0.0) == pytest.approx(1e-4)  # warm-up
    assert lr_at(tc, 50, 0.5) == lr_at(tc, 80, 0.75) == 1e-3  # stable
    assert lr_at(tc, 90, 0.875) == pytest.approx(5.5e-4)  # half-way down
    assert lr_at(tc, 110, 1.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("bf16", [True, False])
def test_estimate_and_training_agree_on_cuda(monkeypatch, bf16):
    """One rule for `auto`: the estimate of a CUDA run names what training would pick, a GPU
    without bf16 included (fp16 with a scaler)."""
    from workbench.machine.device import auto_precision
    from workbench.machine.choices import precision_for

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_precision(torch.device("cuda"), measure=False)[0] == precision_for("auto", "cuda")[0] \
        == ("bf16" if bf16 else "fp16")

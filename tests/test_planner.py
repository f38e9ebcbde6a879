"""The planner and the sweep: the planner measures speed (injected here), applies the fitted
rule, and its pick follows both; `train --minutes` trains the plan and records it; `sweep` trains
a grid in parallel processes, skips what does not fit and ranks by bits per byte."""

from __future__ import annotations

import json

import pytest

from workbench.planning import planner
from workbench.machine import probe
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.runs.folder import get_run

LAW = {"E": 0.6, "A": 40.0, "alpha": 0.4, "B": 60.0, "beta": 0.3, "source": "a test law",
       "recipe": {"model": {}, "train": {"lr": 0.002, "min_lr": 0.0002, "schedule": "wsd", "decay_fraction": 0.3,
                                         "optimizer": "adamw", "warmup_steps": 100}}}


@pytest.fixture
def law(tmp_path, monkeypatch):
    path = tmp_path / "law.json"
    path.write_text(json.dumps(LAW))
    monkeypatch.setattr(planner, "LAW_FILE", path)
    return LAW


def inject_speed(vocab: int, tok_s_of) -> None:
    from helpers import inject_speed as inject

    inject(LAW, vocab, tok_s_of)


def test_the_plan_follows_speed_and_the_rule(built, law):
    # speed falling with size as on a CPU: the budget decides where the balance lies
    inject_speed(400, lambda dim, layers: 2.0e9 / (dim * dim * layers))
    short = planner.plan(built, planner.PlanRequest("tok", 2))
    long = planner.plan(built, planner.PlanRequest("tok", 600))
    assert short.config.model.vocab_size == 400  # the tokenizer's vocab, always
    assert long.config.model.dim > short.config.model.dim  # more minutes buy a bigger model
    best = min(short.candidates, key=lambda r: r["predicted_bpb"])
    assert (short.config.model.dim, short.config.model.n_layers) == (best["dim"], best["n_layers"])
    assert short.predicted_bpb == pytest.approx(planner.predicted_bpb(law, best["body_params"], best["tokens"]), abs=1e-4)
    assert short.tokens == int(best["tok_s"] * 2 * 60 * planner.STEP_SHARE)
    t = short.config.train
    assert (t.max_minutes, t.max_steps, t.schedule, t.lr, t.decay_fraction) == (2.0, None, "wsd", 0.002, 0.3)
    assert "picked dim" in short.reasons[1] and "a test law" in short.reasons[2]
    # a machine ten times faster at the biggest shapes picks one of them for the same budget
    inject_speed(400, lambda dim, layers: 2.0e10 / (dim * layers) if dim >= 320 else 1.0e3)
    assert planner.plan(built, planner.PlanRequest("tok", 2)).config.model.dim >= 320


def test_the_planner_measures_what_it_has_not(built, law, tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))
    from helpers import inject_matmul

    inject_matmul(0.5)
    monkeypatch.setattr(planner, "SHAPES", ((32, 1), (64, 2)))
    monkeypatch.setattr(planner, "SEQ_LEN", 32)
    said = []
    pl = planner.plan(built, planner.PlanRequest("tok", 1), say=said.append)
    assert len(said) == 2 and "measuring training speed" in said[0]
    assert all(r["tok_s"] > 0 for r in pl.candidates)
    said.clear()
    planner.plan(built, planner.PlanRequest("tok", 1), say=said.append)
    assert said == []  # cached


@pytest.mark.parametrize("minutes", [0, -1, 10**7 + 1, float("inf")])  # train.max_minutes allows up to 1e7
def test_bad_budgets_are_refused(built, law, minutes):
    with pytest.raises(WorkbenchError, match="minutes = .* is not allowed"):
        planner.plan(built, planner.PlanRequest("tok", minutes))


def test_train_minutes_trains_the_plan_and_records_it(built, corpus_dir, law, capsys, monkeypatch):
    monkeypatch.setattr(planner, "SHAPES", ((32, 1), (64, 2)))
    monkeypatch.setattr(planner, "SEQ_LEN", 32)
    inject_speed(400, lambda dim, layers: 5e4 / dim)
    args = ["--workspace", str(built.root), "train", "--tokenizer", "tok", "--data", str(corpus_dir), "--minutes", "0.05",
            "--name", "planned"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "plan: 2 shapes measured on this machine" in err and "picked dim" in err
    run = get_run(built, "planned")
    raw = run.raw_config()
    assert raw["plan"]["predicted_bpb"] > 0 and raw["plan"]["tokens"] > 0 and raw["plan"]["reasons"]
    assert run.config().train.max_minutes == 0.05 and run.status()["state"] == "finished"
    # --minutes with --config is the budget alone
    assert main(["--workspace", str(built.root), "train", "--tokenizer", "tok", "--data", str(corpus_dir), "--config",
                 "debug", "--set", "model.vocab_size=400", "--set", "model.max_seq_len=32", "--minutes", "0.02",
                 "--name", "budgeted"]) == 0
    cfg = get_run(built, "budgeted").config()
    assert (cfg.train.max_minutes, cfg.train.max_steps, cfg.model.dim) == (0.02, None, 32)
    assert "plan" not in get_run(built, "budgeted").raw_config()
    capsys.readouterr()
    assert main(["--workspace", str(built.root), "plan", "--tokenizer", "tok", "--minutes", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["model"]["vocab_size"] == 400 and len(out["candidates"]) == 2


@pytest.mark.parametrize("budget", ["minutes", "tokens", "steps"])
@pytest.mark.parametrize("amount", ["inf", "1e400", "nan"])
def test_a_sweep_budget_must_be_finite(built, corpus_dir, budget, amount):
    """An infinite budget is refused in words, not an OverflowError out of int(): typed into the
    sweep dialog, or given to the engine (``sweep --tokens inf``)."""
    from workbench.planning.sweep import SweepRequest, request_from_text

    answers = {"tokenizer": "tok", "data": str(corpus_dir), "name": "inf-sweep", "budget": budget,
               "amount": amount, "grid": "model.dim=16,32", "parallel": "1"}
    with pytest.raises(WorkbenchError, match=f"{budget} '{amount}' is not allowed: expected a finite number > 0"):
        request_from_text(built, answers, "debug")
    req = SweepRequest(base="debug", tokenizer="tok", data=str(corpus_dir), name="inf-sweep", budget=budget,
                       amount=float(amount), grid={"model.dim": [16, 32]})
    with pytest.raises(WorkbenchError, match=f"the sweep's {budget} budget must be a finite number > 0"):
        req.validate(built)


def test_sweep_trains_a_grid_in_parallel_and_ranks_it(built, corpus_dir, capsys):
    args = ["--workspace", str(built.root), "sweep", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
            "--name", "sw", "--steps", "8", "--grid", "model.dim=16,32", "--grid", "train.lr=0.003,0.01",
            "--set", "model.vocab_size=400", "--set", "model.max_seq_len=32", "--parallel", "2", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows)
    assert [r["bpb"] for r in rows] == sorted(r["bpb"] for r in rows)
    assert {(r["config"]["dim"], r["config"]["lr"]) for r in rows} == {(16, 0.003), (16, 0.01), (32, 0.003), (32, 0.01)}
    for i in range(1, 5):
        cfg = get_run(built, f"sw-{i}").config()
        assert cfg.train.max_steps == 8 and cfg.train.num_threads == 1  # two at once share the two cores
    # a config that cannot fit is skipped, with the reason; the others still run
    assert main(["--workspace", str(built.root), "sweep", "--config", "debug", "--tokenizer", "tok", "--data",
                 str(corpus_dir), "--name", "sw-big", "--steps", "2", "--grid", "model.dim=32,65536",
                 "--set", "model.vocab_size=400", "--set", "model.max_seq_len=32", "--set", "model.n_heads=4",
                 "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["sw-big-1"]["status"] == "finished"
    assert rows["sw-big-2"]["status"] == "skipped" and "needs about" in rows["sw-big-2"]["message"]
    assert not built.run_path("sw-big-2").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--grid", "model.dim=16", "--name", "bad/name"], "sweep name 'bad/name' is not allowed"),
    (["--grid", "model.dmi=16", "--name", "s1"], "unknown model field 'dmi'; valid fields: vocab_size"),
    (["--grid", "model.dim=16,x", "--name", "s5"], "model.dim = 'x' is not allowed: expected an integer"),
    (["--grid", "model.vocab_size=512", "--name", "s6"], "does not match tokenizer 'tok', which has 400 pieces"),
    (["--grid", "model.dim=16", "--name", "s2", "--parallel", "64"], "--parallel 64 is not allowed"),
    (["--name", "s3"], "the sweep has no runs"),
    (["--grid", "dim=16", "--name", "s4"], "is not SECTION.FIELD=VALUES"),
])
def test_bad_sweeps_are_refused_before_anything_trains(built, corpus_dir, capsys, argv, needle):
    before = sorted(p.name for p in built.runs_dir().iterdir()) if built.runs_dir().exists() else []
    code = main(["--workspace", str(built.root), "sweep", "--config", "debug", "--tokenizer", "tok", "--data",
                 str(corpus_dir), "--steps", "2", *argv])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert (sorted(p.name for p in built.runs_dir().iterdir()) if built.runs_dir().exists() else []) == before


def test_the_recipe_factor_scales_the_prediction_and_the_shipped_law_carries_the_recipe():
    base = planner.predicted_bpb(LAW, 1e6, 4e6)
    assert base == pytest.approx(0.6 + 40.0 / 1e6 ** 0.4 + 60.0 / 4e6 ** 0.3)
    assert planner.predicted_bpb({**LAW, "recipe_factor": 0.9}, 1e6, 4e6) == pytest.approx(0.9 * base)
    shipped = planner.load_law()
    # what the 10-minute ablations made the recipe (benchmarks/PLANNER.md)
    assert shipped["recipe"]["train"]["optimizer"] == "muon" and shipped["recipe"]["model"]["mlp"] == "relu2"
    assert 0.8 < shipped["recipe_factor"] < 1.0
    assert planner.shape_config(128, 4, 4096, shipped["recipe"]).mlp == "relu2"


def test_cached_measurements_are_shown_and_measured_again_on_request(built, law, tmp_path, monkeypatch, capsys):
    """`workbench probe` shows what is cached; --remeasure drops one kind (matmul is measured
    again at once); `plan --remeasure` measures the candidates' speeds again instead of trusting
    figures taken on a busy machine."""
    from helpers import inject_matmul, inject_speed

    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))  # this test's own cache
    monkeypatch.setattr(planner, "SHAPES", ((32, 1), (64, 2)))
    monkeypatch.setattr(planner, "SEQ_LEN", 32)
    inject_matmul(0.5)
    inject_speed(law, 400, lambda dim, layers: 123.0)
    probe.write_cached({probe.attention_key(4, 2, 32, 8, "fp32"): {"kernel": "sdpa"}})
    ws = ["--workspace", str(built.root)]
    assert main([*ws, "probe", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    speeds = [k for k in entries if k.startswith("throughput ")]
    assert entries["matmul"]["measured"] == "injected by the tests" and speeds
    assert main([*ws, "probe", "--remeasure", "speed", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["dropped"]) == sorted(speeds)
    assert not [k for k in out["entries"] if k.startswith("throughput ")] and "matmul" in out["entries"]
    assert any(k.startswith("attention ") for k in out["entries"])
    assert main([*ws, "probe", "--remeasure", "matmul", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["entries"]["matmul"]
    assert m["measured"] != "injected by the tests" and m["fp32_gflops"] > 0  # measured now, for real
    # plan --remeasure: the injected speeds go, the planner measures (here a stand-in, 777 tok/s)
    inject_speed(law, 400, lambda dim, layers: 123.0)
    monkeypatch.setattr(planner, "measure_throughput", lambda cfg, *a, **k: {"tok_s": 777.0, "precision": "fp32",
                                                                            "attention": "sdpa", "threads": 1})
    assert main([*ws, "plan", "--tokenizer", "tok", "--minutes", "1", "--remeasure", "--json"]) == 0
    assert {r["tok_s"] for r in json.loads(capsys.readouterr().out)["candidates"]} == {777.0}

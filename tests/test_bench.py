"""The benchmark suite (`workbench bench`): rows and table, missing peers, failures, bad input,
cancel, and a small end-to-end run of the engine tasks on a synthetic corpus.

The figures themselves are not checked against thresholds (timings are not tested); what is
checked is that every figure is there, is the median of its repetitions with min and max, that
ratios are taken pair by pair and oriented, and that the output files are written.
"""

from __future__ import annotations

import json
import sys
import threading

import pytest

from workbench.bench import build_rows, render_markdown
from workbench.bench.measure import PhasePeak, percentile, stat
from workbench.bench.runner import run_task
from workbench.cli import main
from workbench.errors import Cancelled

from helpers import make_stories, write_txt

ENGINE = "workbench.bench.tasks"


@pytest.fixture(scope="module")
def bench_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench-corpus")
    write_txt(d / "train.txt", make_stories(2500, seed=3))
    write_txt(d / "valid.txt", make_stories(250, seed=4))
    return d


def _raw(**tasks) -> dict:
    return {"mode": "quick", "options": {"reps": 3}, "machine": {"cpu": "test cpu", "cores": 2}, "tasks": tasks}


def test_stat_and_percentile():
    assert stat([3, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3}
    assert percentile([float(i) for i in range(101)], 95) == 95
    assert percentile([1.0, 2.0], 50) == 1.5 and percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        stat([])


def test_rows_take_ratios_pair_by_pair_and_orient_them():
    raw = _raw(tokenizer={
        "vocab": 512, "text_MB": 1.0, "valid_MB": 0.2, "threads": 2, "peer_missing": None,
        "build_s": {"ours": [1.0, 2.0, 4.0], "peer": [2.0, 2.0, 2.0]},  # times: peer/ours
        "encode_MBps": {"ours": [10.0, 10.0, 10.0], "peer": [5.0, 20.0, 10.0]},  # rates: ours/peer
        "bytes_per_token": {"ours": 3.0, "peer": 4.0},
        "rss_mb": {"ours": 100.0, "peer": 150.0},
    })
    rows = build_rows(raw)
    build, encode, bpt = rows
    assert build["better"] == "lower" and build["ratio"] == {"median": 1.0, "min": 0.5, "max": 2.0, "n": 3}
    # pair by pair: 10/5, 10/20, 10/10 -> median 1.0, not median(ours)/median(peer)
    assert encode["ratio"] == {"median": 1.0, "min": 0.5, "max": 2.0, "n": 3}
    assert bpt["ratio"]["median"] == 0.75
    assert build["rss_mb"] == {"ours": 100.0, "peer": 150.0}
    md = render_markdown(raw, rows, "workbench bench --quick")
    assert "| tokenizer | build, vocab 512, 1.0 MB | s | 2.00 (1.00–4.00) | HF tokenizers | 2.00 | 1.00× (0.50–2.00) |" in md
    assert "**0.75× behind**" in md and "Behind a peer: tokenizer bytes per token" in md
    assert "Command: `workbench bench --quick`" in md


def test_missing_peer_and_failed_task_rows():
    raw = _raw(**{
        "generate debug": {
            "preset": "debug", "params": 40000, "prompt_len": 32, "new_tokens": 16, "same_tokens": None,
            "ttft_ms": {"ours": [1.0, 1.1, 0.9], "peer": []}, "decode_tok_s": {"ours": [900.0, 1000.0, 1100.0],
                                                                           "peer": []},
            "rss_mb": {"ours": 200.0, "peer": None},
            "peer_missing": "transformers is not installed (No module named 'transformers'); pip install -e '.[bench]'",
        },
        "train stories15M": {"error": "the val data holds 10 tokens, fewer than one window"},
    })
    rows = build_rows(raw)
    assert [r["status"] for r in rows] == ["missing", "missing", "failed"]
    assert rows[0]["ours"]["median"] == 1000.0 and "peer" not in rows[0]
    md = render_markdown(raw, rows)
    assert "**missing**: transformers is not installed" in md
    assert "Missing peers: transformers is not installed" in md
    assert "| train stories15M | **failed** |" in md and "fewer than one window" in md


def test_app_rows_hold_both_halves_and_key_latency():
    lat = [float(i) for i in range(1, 21)]
    raw = _raw(app={"preset": "debug", "steps": 240, "vocab": 512,
                    "tok_s": {"headless": [10.0, 10.0, 10.0], "app": [9.0, 9.5, 10.0],
                              "headless_2nd_half": [10.0] * 3, "app_keys": [8.0] * 3},
                    "keys": {"120x40": {"latency_ms": lat, "painted_ms": [x * 2 for x in lat]},
                             "80x24": {"latency_ms": [3 * x for x in lat], "painted_ms": [4 * x for x in lat]}},
                    "rss_mb": {"headless": 300.0, "app": 400.0}})
    watched, busy, action, painted, action_small, painted_small = build_rows(raw)
    assert watched["ratio"]["median"] == 0.95 and busy["ratio"]["median"] == 0.8
    assert action["ours"] == {"p50": 10.5, "p95": pytest.approx(19.05)} and "at 120x40" in action["measure"]
    assert painted["ours"]["p95"] == pytest.approx(38.1)
    assert "at 80x24" in action_small["measure"] and action_small["ours"]["p50"] == pytest.approx(31.5)
    assert painted_small["ours"]["p95"] == pytest.approx(4 * 19.05)
    # a size where no key was measured is a failed row that says so, not a silent gap
    raw["tasks"]["app"]["keys"]["80x24"] = {"latency_ms": [], "painted_ms": []}
    assert build_rows(raw)[-1]["status"] != "ok" and "80x24" in str(build_rows(raw)[-1])


def test_phase_peak_sees_an_allocation():
    if sys.platform != "linux":
        pytest.skip("per-phase peaks need /proc/self/clear_refs")
    with PhasePeak() as base:
        pass
    with PhasePeak() as p:
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    assert p.mb is not None and p.mb - base.mb > 150


@pytest.mark.parametrize("argv, needle", [
    (["--tasks", "train,nope"], "unknown task nope; allowed: matmul, tokenizer"),
    (["--presets", "huge"], "unknown preset huge; allowed:"),
    (["--reps", "2"], "--reps 2 is out of range: allowed 3 to 100"),
    (["--text-mb", "0"], "--text-mb 0.0 is out of range"),
    (["--vocab", "2"], "--vocab: vocab_size 2 is out of range"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, argv, needle):
    assert main(["--workspace", str(tmp_path), "bench", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_a_missing_data_source_is_named(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path), "bench", "--tasks", "tokenizer", "--data", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_failing_task_says_why(tmp_path, bench_corpus):
    child = run_task(ENGINE, "prepare", {"workspace": str(tmp_path / "ws"), "tokenizer": "absent", "rep": 0,
                                         "text_dir": str(bench_corpus)}, tmp_path / "ipc")
    assert child.returncode == 1
    assert "absent" in child.result["error"]
    assert list((tmp_path / "ipc").iterdir()) == []


def test_cancel_kills_the_task_and_leaves_nothing(tmp_path):
    cancel = threading.Event()
    lines: list[str] = []
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(Cancelled):
        # a thousand repetitions of five seconds: only the cancel ends it (the raise says it did)
        run_task(ENGINE, "matmul", {"reps": 1000, "seconds": 5.0}, tmp_path / "ipc", echo=lines.append,
                 cancel_event=cancel)
    assert list((tmp_path / "ipc").iterdir()) == []


def test_engine_tasks_end_to_end(tmp_path, bench_corpus, capsys):
    out = tmp_path / "out" / "bench.json"
    md = tmp_path / "out" / "bench.md"
    code = main(["--workspace", str(tmp_path / "ws"), "bench", "--quick", "--data", str(bench_corpus),
                 "--tasks", "matmul,tokenizer,prepare,train,generate", "--presets", "debug", "--vocab", "400",
                 "--text-mb", "0.3", "--json", str(out), "--markdown", str(md)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "quick" and res["command"].startswith("workbench bench --quick --data ")
    assert res["text"]["train.txt"]["documents"] > 100
    for key in ("matmul", "tokenizer", "train debug", "generate debug"):
        assert res["tasks"][key].get("error") is None, res["tasks"][key]
        assert res["tasks"][key]["process_peak_rss_mb"] > 10
    assert len(res["tasks"]["prepare"]["runs"]) == 3
    rows = {(r["task"], r["measure"].split(",")[0].split(" (")[0]): r for r in res["rows"]}
    assert all(r["status"] == "ok" for r in res["rows"]), [r for r in res["rows"] if r["status"] != "ok"]
    # every timed figure is a median of at least three repetitions, with its range
    for r in res["rows"]:
        if isinstance(r["ours"], dict) and "n" in r["ours"] and "bytes per token" not in r["measure"]:
            assert r["ours"]["n"] >= 3 and r["ours"]["min"] <= r["ours"]["median"] <= r["ours"]["max"], r
    assert rows[("tokenizer", "build")]["peer_name"] == "HF tokenizers"
    assert rows[("tokenizer", "build")]["ratio"]["n"] == 3
    train = rows[("train fp32", "debug")]
    assert train["peer"]["n"] == 3 and train["ratio"]["n"] == 3 and train["rss_mb"]["ours"] > 50
    assert 0 < rows[("train fp32", "debug MFU of the fp32 matmul peak")]["ours"]["median"] < 100
    decode = rows[("decode", "debug")]
    assert decode["ratio"]["n"] == 3 and "note" not in decode  # the same tokens on both sides
    assert rows[("data prepare", "0.3 MB of text")]["rss_mb"]["ours"] > 10
    assert rows[("machine", "matmul peak float32")]["ours"]["median"] > 0
    text = md.read_text()
    assert text in captured.out  # the table is printed too
    assert "| train fp32 | debug (" in text and "| decode | debug time to first token | ms |" in text
    assert "no peer to compare" not in captured.err


def test_missing_peers_are_reported_not_skipped(tmp_path, bench_corpus, capsys, monkeypatch):
    shadow = tmp_path / "shadow"
    for mod in ("transformers", "tokenizers"):
        (shadow / mod).mkdir(parents=True)
        (shadow / mod / "__init__.py").write_text(f"raise ImportError('{mod} hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    argv = ["--workspace", str(tmp_path / "ws"), "bench", "--quick", "--data", str(bench_corpus),
            "--tasks", "tokenizer,generate", "--presets", "debug", "--vocab", "400", "--text-mb", "0.2",
            "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: 5 figure(s) have no peer to compare with" in err
    res = json.loads((tmp_path / "b.json").read_text())
    missing = [r for r in res["rows"] if r["status"] == "missing"]
    assert {r["peer_name"] for r in missing} == {"HF tokenizers", "transformers Llama generate"}
    assert all("hidden by the test" in r["message"] and "pip install" in r["message"] for r in missing)
    assert all(r["ours"] for r in missing)  # our side is still measured
    assert "**missing**" in (tmp_path / "b.md").read_text()
    assert main([*argv, "--strict"]) == 1


TINY = dict(dim=32, n_layers=2, n_heads=4, vocab=400, batch=4, seq_len=32)


def _peer_args(built, corpus_dir, **kw):
    return {"workspace": str(built.root), "tokenizer": "tok", "vocab": 400, "text_dir": str(corpus_dir),
            "train_txt": str(corpus_dir / "train.txt"), "sample_mb": 5, "reps": 3, "shape": dict(TINY), **kw}


def test_reference_trainers_beside_the_engine(tmp_path, built, corpus_dir):
    """nanoGPT's and llama2.c's model.py from shared/peers train beside ours, alternating, and the
    whole-process memory of `workbench train` is measured beside a nanoGPT process."""
    from workbench.bench.peers import peers_dir

    if not (peers_dir() / "nanoGPT" / "model.py").is_file():
        pytest.skip(f"the reference trainers are not at {peers_dir()}")
    child = run_task("workbench.bench.peers", "peers",
                     _peer_args(built, corpus_dir, steps=3, warmup=1, memory=True, memory_steps=2), tmp_path / "ipc")
    assert child.returncode == 0, child.result
    t = child.result
    assert set(t["tok_s"]) == {"ours", "nanoGPT", "llama2.c"} and all(len(v) == 3 for v in t["tok_s"].values())
    assert t["peer_missing"] == {} and t["ours_facts"]["precision"] == "fp32"  # the suite's injected machine
    assert t["memory"]["ours_mb"] > 50 and t["memory"]["peer_mb"] > 50
    rows = build_rows(_raw(**{"matmul": {"float32": [100.0] * 3, "bfloat16": [50.0] * 3, "n": 256, "threads": 1},
                              "peers d32": t}))
    names = [r.get("peer_name") for r in rows if r["task"] == "train default" and "ratio" in r]
    assert names == ["nanoGPT model.py (fp32)", "llama2.c model.py (fp32)"]
    assert all(r["ratio"]["n"] == 3 for r in rows if r["task"] == "train default" and "ratio" in r)
    mem = next(r for r in rows if r["task"] == "memory")
    assert mem["better"] == "lower" and mem["ours"]["median"] == t["memory"]["ours_mb"]
    md = render_markdown({**_raw(), "machine": {"cpu": "test cpu", "cores": 2, "native_bf16_flag": False}}, rows)
    assert "test cpu (native bf16: no by its CPU flags)" in md and "| train default | dim 32" in md


def test_missing_reference_trainers_are_reported(tmp_path, built, corpus_dir, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PEERS", str(tmp_path / "nowhere"))
    child = run_task("workbench.bench.peers", "peers", _peer_args(built, corpus_dir, steps=2, warmup=1), tmp_path / "ipc")
    assert child.returncode == 0, child.result
    assert set(child.result["peer_missing"]) == {"nanoGPT", "llama2.c"}
    assert "WORKBENCH_PEERS" in child.result["peer_missing"]["nanoGPT"]
    rows = build_rows(_raw(**{"peers d32": child.result}))
    assert [r["status"] for r in rows] == ["missing", "missing"] and all(r["ours"] for r in rows)


def test_parity_trains_fp32_and_auto_alike(tmp_path, built, corpus_dir):
    child = run_task("workbench.bench.peers", "parity", _peer_args(built, corpus_dir, steps=4, eval_batches=2),
                     tmp_path / "ipc")
    assert child.returncode == 0, child.result
    t = child.result
    # on the suite's injected machine auto means fp32: the two runs are the same computation
    assert t["fp32"]["val_loss_fp32_eval"] == t["auto"]["val_loss_fp32_eval"] and t["relative_difference"] == 0
    (r,) = build_rows(_raw(parity=t))
    assert r["peer_name"] == "ours in fp32" and "within 1%" in r["note"]


def test_the_anchor_pair_trains_both_and_scores_them(tmp_path, built, corpus_dir):
    """The budget figure's task, for seconds: nanoGPT's model as the anchor beside `workbench
    train --minutes`, at once, both scored on the whole validation split."""
    from workbench.planning import planner
    from workbench.bench.peers import peers_dir

    if not (peers_dir() / "nanoGPT" / "model.py").is_file():
        pytest.skip(f"the reference trainers are not at {peers_dir()}")
    from helpers import inject_speed

    # the shipped rule; the speeds are injected (1 thread, as the pair runs)
    inject_speed(planner.load_law(), 400, lambda dim, layers: 3000.0 - 5 * dim, threads=1)
    child = run_task("workbench.bench.anchor", "anchor",
                     {"workspace": str(built.root), "tokenizer": "tok", "vocab": 400, "text_dir": str(corpus_dir),
                      "minutes": [0.03], "seeds": 1}, tmp_path / "ipc")
    assert child.returncode == 0, child.result
    (pair,) = child.result["pairs"]
    assert pair["anchor"]["steps"] > 0 and pair["ours"]["steps"] > 0
    assert pair["ours"]["predicted_bpb"] > 0 and pair["ours"]["planned_tokens"] > 0  # the planner's recipe
    assert pair["ratio"] == pytest.approx(pair["ours"]["bpb"] / pair["anchor"]["bpb"])
    assert pair["anchor"]["val_tokens"] > 0
    (row,) = [r for r in build_rows(_raw(anchor=child.result)) if r["task"] == "budget"]
    assert row["ours"]["median"] == pytest.approx(pair["ours"]["bpb"]) and row["better"] == "lower"


def test_the_real_app_task_measures_key_latency(built, corpus_dir, tmp_path):
    """The app benchmark itself, in its smallest form: a headless `workbench train` process and
    the same config trained in the app while keys are pressed; every figure comes back measured
    (finite, positive), none is checked against a bound (that is the benchmark's job)."""
    import math
    import shutil

    from workbench.bench.app_task import task_app

    root = tmp_path / "ws"
    shutil.copytree(built.root, root)
    # one key at each size in turn, over 320 steps: a quiet fast machine finished 160 steps
    # before its keys had reached the second size (80x24 came back empty)
    out = task_app({"workspace": str(root), "preset": "debug", "steps": 320, "vocab": 400, "reps": 1,
                    "tokenizer": "tok", "text_dir": str(corpus_dir), "key_every": 0.02, "keys_per_size": 1})
    assert out["steps"] == 320 and out["rss_mb"]["headless"] > 0 and out["rss_mb"]["app"] > 0
    for key in ("headless", "app", "headless_2nd_half", "app_keys"):
        assert len(out["tok_s"][key]) == 1 and out["tok_s"][key][0] > 0
    for size in ("120x40", "80x24"):  # keys timed at both sizes
        keys = out["keys"][size]
        assert keys["latency_ms"] and len(keys["painted_ms"]) == len(keys["latency_ms"]), (size, out["keys"])
        assert all(math.isfinite(x) and 0 < a <= p for a, p in zip(keys["latency_ms"], keys["painted_ms"])
                   for x in (a, p))
    rows = build_rows(_raw(app=out))
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 6
    assert all(r["ours"]["p95"] >= r["ours"]["p50"] > 0 for r in rows[2:])


# --- the checks across sizes (workbench/bench/sizes.py), each at its smallest ------------------


def test_the_vocab_sweep_measures_bytes_per_token_beside_the_peer(tmp_path, corpus_dir):
    """Two sizes the text fills and one it cannot: bytes per token, ours and HF tokenizers', real
    and growing with the vocab; the size too big is left out, saying why, not failed."""
    import math

    ws = tmp_path / "ws"
    child = run_task("workbench.bench.sizes", "vocab-sweep",
                     {"workspace": str(ws), "tokenizer": "tok", "vocabs": [330, 400, 20000], "sample_mb": 5,
                      "train_txt": str(corpus_dir / "train.txt"), "valid_txt": str(corpus_dir / "valid.txt")},
                     tmp_path / "ipc")
    assert child.returncode == 0, child.result
    t = child.result
    assert t["vocabs"] == [330, 400] and "too large" in t["skipped"]["20000"] and t["peer_missing"] is None
    for side in ("ours", "peer"):
        bpt = t["bytes_per_token"][side]
        assert len(bpt) == 2 and all(math.isfinite(x) and x > 1 for x in bpt)
        assert bpt[1] >= bpt[0]  # more merges never make more tokens
    assert not any((ws / "tokenizers").iterdir())  # the sweep's tokenizers are not left behind
    rows = build_rows(_raw(**{"vocab-sweep": t}))
    assert [r["measure"].split(",")[0] for r in rows] == ["bytes per token at vocab 330", "bytes per token at vocab 400"]
    assert all(r["peer_name"] == "HF tokenizers" and r["ratio"]["n"] == 1 for r in rows)
    assert "vocab 20000 left out" in rows[0]["note"]


def test_prepare_rss_measures_a_whole_prepare_on_the_text_and_on_it_repeated(tmp_path, built, corpus_dir):
    import math
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(built.root, root)
    (root / "data").mkdir(exist_ok=True)
    before = set((root / "data").iterdir())  # what other tests prepared in the shared workspace
    child = run_task("workbench.bench.sizes", "prepare-rss",
                     {"workspace": str(root), "tokenizer": "tok", "train_txt": str(corpus_dir / "train.txt"), "scale": 2,
                      "reps": 1}, tmp_path / "ipc")
    assert child.returncode == 0, child.result
    t = child.result
    assert t["MB"]["big"] == pytest.approx(2 * t["MB"]["small"])
    for side in ("small", "big"):
        assert len(t["rss_mb"][side]) == 1 and t["rss_mb"][side][0] > 10
        assert all(math.isfinite(x) and x > 0 for x in t["MBps"][side])
    assert not (root / "prepare-rss").exists() and set((root / "data").iterdir()) == before  # nothing left
    (r,) = build_rows(_raw(**{"prepare-rss": t}))
    assert r["better"] == "lower" and r["peer_name"].startswith("ours on ")
    assert r["ratio"]["median"] == pytest.approx(t["rss_mb"]["small"][0] / t["rss_mb"]["big"][0])


def test_the_memory_estimate_stands_beside_a_measured_peak(tmp_path):
    import math

    from workbench.bench.suite import BenchOptions, plan_tasks

    child = run_task("workbench.bench.sizes", "memory-estimate", {"presets": ["debug"], "reps": 1}, tmp_path / "ipc")
    assert child.returncode == 0, child.result
    e = child.result["presets"]["debug"]
    assert e["batch"] > 0 and e["seq_len"] > 0 and e["params"] > 0 and e["attention"]
    (peak,), (est,) = e["peak_mb"], e["estimate_mb"]
    assert math.isfinite(peak) and peak > 50  # a process that imported torch and trained
    assert est == pytest.approx(sum(e["parts_mb"].values()))  # the total is its parts
    (r,) = build_rows(_raw(**{"memory-estimate": child.result}))
    assert r["ratio"]["median"] == pytest.approx(est / peak) and r["unit"] == "MB"
    # --quick checks the smallest of the presets asked for (each measurement is a fresh process)
    (step,) = plan_tasks(BenchOptions(quick=True, tasks=["memory-estimate"], presets=["stories15M", "debug"]))
    assert step[3] == {"presets": ["debug"]}


def test_the_recorded_command_reproduces_the_run():
    """What the report says ran is what ran: every option that changes the figures, anchor
    budgets and seeds included, and none left at its default."""
    from workbench.cli import build_parser
    from workbench.cli.bench_cmd import recorded_command

    argv = ["bench", "--tasks", "anchor", "--anchor-minutes", "10,30", "--anchor-seeds", "2", "--reps", "5"]
    cmd = recorded_command(build_parser().parse_args(argv))
    assert cmd == "workbench bench --tasks anchor --reps 5 --anchor-minutes 10,30 --anchor-seeds 2"
    assert recorded_command(build_parser().parse_args(["bench", "--quick"])) == "workbench bench --quick"


def _train_result(tok_s: float) -> dict:
    return {"preset": "debug", "params": 100_000, "batch": 8, "seq_len": 64, "vocab": 512,
            "tok_s": {"ours": [tok_s] * 3, "peer": [tok_s * 0.9] * 3}, "rss_mb": {"ours": 1.0, "peer": 1.0},
            "train_flops_per_token": 1e6}


@pytest.mark.parametrize("peak,mfu", [(100.0, 1.0), (0.5, None)])
def test_an_mfu_above_100_percent_is_reported_as_inconsistent_not_printed(peak, mfu):
    """1,000 tok/s at 1 MFLOP a token is 1 GFLOP/s: 1% of a 100 GFLOP/s peak, and an impossible
    200% of a peak measured at 0.5 (on a busy machine)."""
    rows = build_rows(_raw(**{"matmul": {"float32": [peak] * 3, "bfloat16": [peak] * 3, "n": 256, "threads": 1},
                              "train debug": _train_result(1000.0)}))
    (r,) = [r for r in rows if "MFU" in r["measure"]]
    md = render_markdown(_raw(), rows)
    if mfu is not None:
        assert r["status"] == "ok" and r["ours"]["median"] == pytest.approx(mfu)
    else:
        assert r["status"] == "inconsistent" and "an MFU of 200% is impossible" in r["message"]
        assert "**inconsistent**: an MFU of 200% is impossible" in md and "| 200" not in md


def test_a_busy_machine_is_flagged_in_the_report():
    quiet = render_markdown({**_raw(), "machine": {"cpu": "c", "cores": 2, "load": [0.3, 1.9, 2.0]}}, [])
    busy = render_markdown({**_raw(), "machine": {"cpu": "c", "cores": 2, "load": [0.3, 3.5, 2.1]}}, [])
    assert "Busy machine" not in quiet
    assert "**Busy machine**: the 1-minute load average reached 3.50 on 2 cores while it ran" in busy

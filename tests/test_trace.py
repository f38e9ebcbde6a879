"""Shape tracing: exact paths and shapes, FLOPs, NaN origin, meta-device tracing, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from workbench.cli import main
from workbench.config.schema import ModelConfig
from workbench.config.sizes import flops_per_token, param_count
from workbench.model import build_model, lm_loss
from workbench.model.base import LoggingModule
from workbench.tracing.tracer import register_cpu_sdpa_flops, trace_model
from workbench.tracing.render import render_text

B, T, H, HKV, D = 2, 5, 4, 2, 8
CFG = ModelConfig(vocab_size=50, dim=H * D, n_layers=2, n_heads=H, n_kv_heads=HKV, max_seq_len=16)

LAYER_PATHS = ["attn_norm", "attn", "attn.wqkv", "attn.wo", "mlp_norm", "mlp", "mlp.w1", "mlp.w3", "mlp.w2"]
EXPECTED_PATHS = (["", "tok_emb", "pos"]
                  + [p for i in range(2) for p in [f"layers.{i}"] + [f"layers.{i}.{q}" for q in LAYER_PATHS]]
                  + ["norm", "lm_head"])


@pytest.fixture
def model_and_idx():
    model = build_model(CFG, seed=0).eval()
    idx = torch.randint(0, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    return model, idx


def test_trace_has_exact_paths_and_shapes(model_and_idx):
    model, idx = model_and_idx
    tr = trace_model(model, idx)
    assert [c.path for c in tr.calls()] == EXPECTED_PATHS
    assert tr.root.cls == "Transformer" and tr.root.inputs["idx"]["shape"] == [B, T]
    assert tr.root.outputs["out"]["shape"] == [B, T, CFG.vocab_size]
    assert tr.find("layers.1.attn.wqkv").outputs["out"]["shape"] == [B, T, (H + 2 * HKV) * D]
    assert tr.find("layers.0.mlp").inputs["x"]["shape"] == [B, T, H * D]
    for i in range(2):
        logs = tr.find(f"layers.{i}.attn").logs
        assert list(logs) == ["q", "k", "v", "scores", "probs"]
        assert logs["q"]["shape"] == [B, H, T, D]
        assert logs["k"]["shape"] == [B, HKV, T, D]
        assert logs["v"]["shape"] == [B, HKV, T, D]
        assert logs["scores"]["shape"] == [B, H, T, T]
        assert logs["probs"]["shape"] == [B, H, T, T]
        assert logs["probs"]["max"] <= 1.0 and logs["probs"]["nonfinite"] == 0
    rec = tr.find("norm").outputs["out"]
    assert set(rec) == {"shape", "dtype", "device", "nonfinite", "min", "max", "mean", "std"}
    assert rec["dtype"] == "float32" and rec["device"] == "cpu"
    assert tr.find("layers.0").params == sum(p.numel() for p in model.layers[0].parameters())
    assert tr.root.params == param_count(CFG)


def test_record_stats_are_the_tensor_stats(model_and_idx):
    model, idx = model_and_idx
    tr = trace_model(model, idx)
    with torch.no_grad():
        expected = model(idx)
    rec = tr.root.outputs["out"]
    assert rec["mean"] == pytest.approx(expected.mean().item(), abs=1e-6)
    assert rec["std"] == pytest.approx(expected.std().item(), rel=1e-5)
    assert rec["max"] == pytest.approx(expected.max().item())
    # the explicit (traced) attention computes what SDPA computes
    traced_again = trace_model(model, idx)
    assert traced_again.root.outputs["out"]["mean"] == pytest.approx(rec["mean"], abs=1e-7)


def test_flops_sum_to_total_and_match_estimate(model_and_idx):
    model, idx = model_and_idx
    tr = trace_model(model, idx)
    calls = list(tr.calls())
    assert sum(c.self_flops for c in calls) == tr.total_flops == tr.root.flops
    for c in calls:
        assert c.self_flops >= 0 and c.flops == c.self_flops + sum(k.flops for k in c.children)
    assert tr.find("layers.0.attn.wqkv").flops == 2 * B * T * H * D * (H + 2 * HKV) * D
    assert tr.find("layers.0.attn").self_flops == 4 * B * H * T * T * D  # QK^T and AV
    estimate = flops_per_token(CFG, T)["forward"] * B * T
    assert tr.total_flops == pytest.approx(estimate, rel=0.05)


def test_cpu_sdpa_flops_counted_for_forward_and_backward(model_and_idx):
    from torch.utils.flop_counter import FlopCounterMode

    model, idx = model_and_idx
    register_cpu_sdpa_flops()
    model.train()
    with FlopCounterMode(display=False) as fwd_mode:
        logits = model(idx)  # the fast SDPA path
    assert fwd_mode.get_total_flops() == flops_per_token(CFG, T)["forward"] * B * T
    with FlopCounterMode(display=False) as mode:
        lm_loss(model(idx), idx).backward()
    assert mode.get_total_flops() == pytest.approx(flops_per_token(CFG, T)["train"] * B * T, rel=0.05)
    del logits


def test_injected_nan_is_flagged_where_it_appears(model_and_idx):
    model, idx = model_and_idx
    with torch.no_grad():
        model.layers[1].mlp.w2.weight[3, 5] = float("nan")
    tr = trace_model(model, idx)
    assert tr.first_nonfinite() == ("layers.1.mlp.w2", "out")
    origins = [c.path for c in tr.calls() if c.nan_origin]
    assert origins == ["layers.1.mlp.w2"]
    assert tr.find("layers.1.mlp.w2").outputs["out"]["nonfinite"] == B * T
    assert tr.find("layers.1.mlp").inputs["x"]["nonfinite"] == 0
    assert tr.find("lm_head").outputs["out"]["nonfinite"] == B * T * CFG.vocab_size
    text = render_text(tr)
    assert "first non-finite value: out at layers.1.mlp.w2" in text
    assert "non-finite appears here" in text


def test_nan_inside_attention_is_flagged_at_attention(model_and_idx):
    model, idx = model_and_idx
    with torch.no_grad():
        model.layers[0].attn.wqkv.weight[0, 0] = float("inf")  # q of head 0 becomes infinite
    tr = trace_model(model, idx)
    assert tr.first_nonfinite() == ("layers.0.attn.wqkv", "out")
    assert [c.path for c in tr.calls() if c.nan_origin] == ["layers.0.attn.wqkv"]


def test_trace_is_json_and_renders_to_depth(model_and_idx):
    model, idx = model_and_idx
    tr = trace_model(model, idx)
    d = json.loads(json.dumps(tr.to_dict()))
    assert d["root"]["children"][2]["path"] == "layers.0"
    assert d["root"]["children"][2]["children"][1]["logs"]["scores"]["shape"] == [B, H, T, T]
    full = render_text(d)
    assert "layers.1.attn.wqkv" in full and "· scores (2, 4, 5, 5)" in full
    shallow = render_text(tr, depth=1)
    assert "layers.1 [Block]" in shallow and "layers.1.attn" not in shallow
    assert "tok_emb" not in render_text(tr, depth=0)


def test_logging_is_inactive_outside_a_trace(model_and_idx, monkeypatch):
    model, idx = model_and_idx
    trace_model(model, idx)
    assert all("_tracer" not in m.__dict__ for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    def boom(*a, **k):
        raise AssertionError("the explicit attention path ran outside a trace")

    import workbench.model.attention as attention

    assert model.layers[0].attn.kernel == "sdpa"
    monkeypatch.setattr(attention, "explicit_attention", boom)
    monkeypatch.setattr(LoggingModule, "log", boom)
    with torch.no_grad():
        model(idx)  # neither log() nor the math path is touched


def test_meta_trace_of_1b_config_stays_under_1gb(tmp_path):
    script = textwrap.dedent("""
        import json, resource, torch
        from workbench.config.schema import ModelConfig
        from workbench.config.sizes import param_count
        from workbench.model import build_model
        from workbench.tracing.tracer import trace_model
        cfg = ModelConfig(vocab_size=32000, dim=2048, n_layers=22, n_heads=16, n_kv_heads=8,
                          max_seq_len=2048)
        model = build_model(cfg, device="meta")
        idx = torch.zeros(1, 256, dtype=torch.long, device="meta")
        tr = trace_model(model, idx)
        print(json.dumps({"params": param_count(cfg), "root_params": tr.root.params,
                          "flops": tr.total_flops,
                          "q": tr.find("layers.19.attn").logs["q"]["shape"],
                          "stats": "mean" in tr.root.outputs["out"],
                          "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["params"] > 1_000_000_000 and r["root_params"] == r["params"]
    assert r["q"] == [1, 16, 256, 128] and r["stats"] is False
    assert r["flops"] > 2 * r["params"] * 256 * 0.9
    assert r["maxrss_kb"] * 1024 < 1024**3


# ---------------------------------------------------------------- CLI

def test_cli_trace_config_debug(tmp_path, capsys):
    out_json = tmp_path / "trace.json"
    rc = main(["--workspace", str(tmp_path), "trace", "--config", "debug", "--depth", "2",
               "--json", str(out_json)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "config debug: 41,120 parameters, input (1, 8) on cpu (random token ids)" in text
    assert "layers.1.attn [Attention]" in text and "layers.1.attn.wqkv" not in text
    assert "· probs (1, 4, 8, 8)" in text
    d = json.loads(out_json.read_text())
    assert d["root"]["outputs"]["out"]["shape"] == [1, 8, 512]
    assert d["total_flops"] == d["estimated_flops"]


def test_a_saved_trace_holds_what_the_cli_prints_and_loads_back(tmp_path, capsys):
    """The Trace pane saves traces/NAME.json and NAME.txt (``tracing.files``); the .txt is what
    `workbench trace` prints, and the .json is a baseline to diff against."""
    from workbench.errors import WorkbenchError
    from workbench.tracing.run import run_trace
    from workbench.tracing.files import load_trace, save_trace, saved_traces, trace_text
    from workbench.tracing.request import TraceRequest
    from workbench.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    assert main(["--workspace", str(ws.root), "trace", "--config", "debug", "--tokens", "4"]) == 0
    printed = capsys.readouterr().out
    result, _ = run_trace(ws, TraceRequest(config="debug", tokens=4))
    folder = save_trace(ws, "debug-init", result)
    assert (folder / "debug-init.txt").read_text() == printed == trace_text(result) + "\n"
    assert saved_traces(ws) == [folder / "debug-init.json"]
    assert load_trace(folder / "debug-init.json")["root"]["path"] == ""
    with pytest.raises(WorkbenchError, match="trace name '../x' is not allowed"):
        save_trace(ws, "../x", result)
    (folder / "bad.json").write_text("[1, 2]")
    with pytest.raises(WorkbenchError, match=r"cannot read .*bad.json: no 'root' call"):
        load_trace(folder / "bad.json")


def test_cli_trace_meta_and_errors(tmp_path, capsys):
    ws = ["--workspace", str(tmp_path)]
    assert main([*ws, "trace", "--config", "stories15M", "--meta", "--tokens", "4", "--depth", "0"]) == 0
    assert "15,191,712 parameters, input (1, 4) on meta" in capsys.readouterr().out
    assert main([*ws, "trace", "--config", "nope"]) == 2
    assert "no config or preset named 'nope'" in capsys.readouterr().err
    assert main([*ws, "trace", "--config", "debug", "--text", "hi"]) == 2
    assert "text needs a tokenizer to encode it" in capsys.readouterr().err
    assert main([*ws, "trace", "--config", "debug", "--tokens", "65"]) == 2
    assert "max_seq_len is 64" in capsys.readouterr().err
    assert main([*ws, "trace", "--run", "missing"]) == 2
    assert "run 'missing' not found" in capsys.readouterr().err


def test_cli_trace_text_with_workspace_tokenizer(built, capsys, tmp_path):
    """--text is encoded with the named tokenizer (not random ids): the trace's input is exactly
    the tokenizer's ids for the text."""
    from workbench.tokenizer.tokenizer import load_tokenizer

    ids = load_tokenizer(built, "tok").encode("the cat sat")
    out_json = tmp_path / "t.json"
    rc = main(["--workspace", str(built.root), "trace", "--config", "debug",
               "--text", "the cat sat", "--tokenizer", "tok", "--depth", "0", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0 and "random token ids" not in out
    d = json.loads(out_json.read_text())
    assert d["tokens"] == ids and d["root"]["inputs"]["idx"]["shape"] == [1, len(ids)]


def test_cli_trace_run_traces_the_latest_checkpoint_of_a_real_run(trained, capsys, tmp_path):
    """`trace --run` on what `workbench train` wrote: the latest checkpoint's weights, its
    tokenizer for --text, and the embedding output is the checkpoint's rows for those ids."""
    from safetensors.torch import load_file

    from helpers import TRAINED_RUN as RUN
    from workbench.runs.folder import get_run

    run = get_run(trained, RUN)
    ws = ["--workspace", str(trained.root)]
    out_json = tmp_path / "t.json"
    assert main([*ws, "trace", "--run", RUN, "--text", "the dog", "--json", str(out_json)]) == 0
    assert "checkpoint step_000012" in capsys.readouterr().out
    d = json.loads(out_json.read_text())
    assert d["checkpoint"] == "step_000012" and d["source"] == f"run {RUN}"
    ids = run.load_tokenizer().encode("the dog")
    assert d["tokens"] == ids
    emb = d["root"]["children"][0]
    assert emb["path"] == "tok_emb"
    rows = load_file(str(run.path / "checkpoints" / "step_000012" / "model.safetensors"))["tok_emb.weight"][ids]
    assert emb["outputs"]["out"]["mean"] == pytest.approx(rows.mean().item(), abs=1e-6)
    assert emb["outputs"]["out"]["std"] == pytest.approx(rows.std().item(), rel=1e-5)
    assert emb["outputs"]["out"]["max"] == pytest.approx(rows.max().item())
    # an older checkpoint by name
    assert main([*ws, "trace", "--run", RUN, "--checkpoint", "step_000006", "--depth", "0"]) == 0
    assert "checkpoint step_000006" in capsys.readouterr().out


def test_cli_trace_run_with_damaged_checkpoints_says_what_is_wrong(trained, capsys):
    import shutil

    from helpers import TRAINED_RUN as RUN
    from workbench.runs.folder import get_run

    run = get_run(trained, RUN)
    ws = ["--workspace", str(trained.root)]
    cfg = run.raw_config()["model"]
    from safetensors.torch import save_model

    wrong = build_model(ModelConfig(**{**cfg, "dim": 64, "n_heads": 4, "n_kv_heads": None}), seed=0)
    save_model(wrong, str(run.path / "checkpoints" / "step_000012" / "model.safetensors"))
    assert main([*ws, "trace", "--run", RUN]) == 2
    assert "does not match the model config" in capsys.readouterr().err
    shutil.rmtree(run.path / "checkpoints" / "step_000012")
    (run.path / "latest").write_text("step_000012\n")
    assert main([*ws, "trace", "--run", RUN, "--checkpoint", "step_000012"]) == 2
    assert "checkpoint 'step_000012' of run 'real' is missing" in capsys.readouterr().err
    # the pointer is a cache: with no checkpoint named, the newest one there is traced, and said
    assert main([*ws, "trace", "--run", RUN]) == 0
    assert ("the 'latest' pointer names 'step_000012', which is not a complete checkpoint; using step_000006"
            in capsys.readouterr().err)
    shutil.rmtree(run.path / "checkpoints")
    (run.path / "latest").unlink()
    assert main([*ws, "trace", "--run", RUN]) == 2
    assert "has no checkpoint yet" in capsys.readouterr().err


def test_trace_set_changes_the_config_before_tracing(ws, capsys):
    from workbench.config.schema import load_config
    from workbench.config.sizes import param_count

    want = param_count(load_config("debug").model.replace(n_layers=1, dim=16))
    assert main(["--workspace", str(ws.root), "trace", "--config", "debug", "--set", "model.n_layers=1",
                 "--set", "model.dim=16", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config debug: {want:,} parameters")
    assert "layers.1" not in out and "(1, 8, 16)" in out
    for args, said in ((["--config", "debug", "--set", "train.lr=1"], "--set train.lr does not change a trace"),
                       (["--run", "x", "--set", "model.dim=8"], "--set changes a config's model"),
                       (["--config", "debug", "--set", "model.dim=7"], "model.n_heads = 4 is not allowed")):
        assert main(["--workspace", str(ws.root), "trace", *args]) == 2
        assert said in capsys.readouterr().err

"""Training throughput (issue 4), side by side in one run.

  .venv/bin/python benchmarks/bench_train.py [--data DIR] [--steps 20] [--reps 3] [--json OUT]

For stories260K and stories15M shapes (vocab set to the benchmark tokenizer's 4096 on both sides,
so the real-data run and the peer have the same shape):
- ours: the real engine (``Trainer`` on TinyStories token files: data loading, AdamW, clipping,
  logging), tokens/s as the median of its logged windows, fp32 and bf16 autocast (CPU);
- peer: transformers ``LlamaForCausalLM`` with the same shape, batch and AdamW, fp32;
- the machine's matmul peak (fp32 and bf16) measured in the same run, for MFU;
plus the validation loss each precision reaches after the same number of steps (bf16 must not
cost loss per token).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from workbench.bench.measure import matmul_peak_gflops  # noqa: E402
from workbench.config import load_config  # noqa: E402
from workbench.estimate import flops_per_token  # noqa: E402
from workbench.tokenizer import TokenizerSettings  # noqa: E402
from workbench.tokenizer_build import build_tokenizer  # noqa: E402
from workbench.train import Trainer  # noqa: E402
from workbench.workspace import Workspace  # noqa: E402

VOCAB = 4096


def matmul_peak(dtype) -> float:
    return matmul_peak_gflops(str(dtype).removeprefix("torch."), seconds=1.0) * 1e9


def ours(ws, data, preset, precision, steps, name):
    cfg = load_config(preset)
    cfg.model = cfg.model.replace(vocab_size=VOCAB)
    cfg.train = cfg.train.replace(max_steps=steps, warmup_steps=2, log_interval=1, eval_interval=steps,
                                  eval_batches=4, checkpoint_interval=10**6, precision=precision, num_threads=2,
                                  grad_accum=1)
    t = Trainer.new(ws, cfg, "bench", str(data), name=name)
    s = t.run()
    rows = [r for r in t.run_folder.metrics() if r["kind"] == "train"][2:]  # drop warm-up steps
    ev = [r for r in t.run_folder.metrics() if r["kind"] == "eval"]
    return statistics.median(r["tok_s"] for r in rows), ev[-1]["val_loss"], cfg, s


def hf(cfg, steps):
    from transformers import LlamaConfig, LlamaForCausalLM

    m = cfg.model
    hc = LlamaConfig(vocab_size=m.vocab_size, hidden_size=m.dim, intermediate_size=m.ffn_dim,
                     num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads, num_key_value_heads=m.kv_heads,
                     max_position_embeddings=m.max_seq_len, rms_norm_eps=m.norm_eps, rope_theta=m.rope_theta,
                     tie_word_embeddings=m.tie_embeddings, attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM._from_config(hc, attn_implementation="sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    B, T = cfg.train.batch_size, m.max_seq_len
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps):
        x = torch.randint(0, m.vocab_size, (B, T + 1), generator=g)
        t = time.perf_counter()
        out = model(input_ids=x[:, :-1], labels=None)
        loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, m.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(B * T / s for s in times[2:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("WORKBENCH_TINYSTORIES", str(REPO.parent / "shared/data/tinystories")))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--presets", default="stories260K,stories15M")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ws = Workspace.at(tempfile.mkdtemp(prefix="wb-bench-train-"))
    build_tokenizer(ws, "bench", TokenizerSettings(vocab_size=VOCAB, data=str(Path(args.data) / "train.txt")))
    res = {"peak_fp32_gflops": matmul_peak(torch.float32) / 1e9, "peak_bf16_gflops": matmul_peak(torch.bfloat16) / 1e9}
    print(json.dumps(res), flush=True)
    for preset in args.presets.split(","):
        rows = {"ours_fp32": [], "ours_bf16": [], "hf_fp32": [], "ratio_fp32": [], "ratio_bf16": [],
                "val_fp32": [], "val_bf16": []}
        for r in range(args.reps):
            a, va, cfg, _ = ours(ws, args.data, preset, "fp32", args.steps, f"{preset}-fp32-{r}")
            b, vb, _, _ = ours(ws, args.data, preset, "bf16", args.steps, f"{preset}-bf16-{r}")
            h = hf(cfg, args.steps)
            rows["ours_fp32"].append(a)
            rows["ours_bf16"].append(b)
            rows["hf_fp32"].append(h)
            rows["ratio_fp32"].append(a / h)
            rows["ratio_bf16"].append(b / h)
            rows["val_fp32"].append(va)
            rows["val_bf16"].append(vb)
        fpt = flops_per_token(cfg.model)["train"]
        out = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in rows.items()}
        out["train_flops_per_token"] = fpt
        out["mfu_fp32"] = out["ours_fp32"]["median"] * fpt / (res["peak_fp32_gflops"] * 1e9)
        out["mfu_bf16_vs_bf16_peak"] = out["ours_bf16"]["median"] * fpt / (res["peak_bf16_gflops"] * 1e9)
        out["hf_mfu_fp32"] = out["hf_fp32"]["median"] * fpt / (res["peak_fp32_gflops"] * 1e9)
        out["batch"] = [cfg.train.batch_size, cfg.model.max_seq_len]
        res[preset] = out
        print(preset, json.dumps(out), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

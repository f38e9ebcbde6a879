"""Model benchmarks: training throughput vs Hugging Face, memory estimate vs RSS, trace overhead.

    .venv/bin/python benchmarks/bench_model.py            # everything, CPU, 2 threads
    .venv/bin/python benchmarks/bench_model.py --quick    # fewer repetitions

1. Training-step throughput (forward, backward, AdamW; fp32; tokens/s, median of several
   repetitions, ours and transformers' LlamaForCausalLM alternated so drift hits both alike)
   for stories260K and stories15M at the same shape and batch.
2. The training-memory estimate beside the measured peak RSS of a training step, each size
   in a fresh subprocess (ru_maxrss is a high-water mark, so processes cannot be shared).
3. Forward time of our model with no trace active beside a plain ``nn.Module`` build of the
   same architecture (no LoggingModule, no trace checks) holding the same weights.

Not a test: numbers depend on the machine. Results are printed and, with --json, saved.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.config import ModelConfig, load_config  # noqa: E402
from workbench.estimate import fmt_bytes, training_memory  # noqa: E402
from workbench.model import build_model, lm_loss  # noqa: E402

THREADS = 2


def make_optimizer(params):
    # the same optimizer for both models: AdamW, foreach (torch's default multi-tensor path)
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)


# ---------------------------------------------------------------- 1. throughput vs transformers

def hf_llama(cfg: ModelConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    hc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim,
                     intermediate_size=cfg.ffn_dim, num_hidden_layers=cfg.n_layers,
                     num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
                     max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                     rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
                     attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                     attn_implementation="sdpa")
    model = LlamaForCausalLM(hc)
    model.config.use_cache = False
    return model


def step_fn(model, opt, x, y, hf: bool):
    def step():
        out = model(input_ids=x, use_cache=False).logits if hf else model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)) if hf else lm_loss(out, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def throughput(name: str, batch: int, seq: int, reps: int) -> dict:
    cfg = load_config(name).model
    torch.manual_seed(0)
    ours = build_model(cfg, seed=0).train()
    theirs = hf_llama(cfg).train()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs, (n_ours, n_theirs)
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    y = torch.randint(0, cfg.vocab_size, (batch, seq))
    steps = {"ours": step_fn(ours, make_optimizer(ours.parameters()), x, y, False),
             "transformers": step_fn(theirs, make_optimizer(theirs.parameters()), x, y, True)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for k, s in steps.items():  # warm-up: allocator, AdamW state, oneDNN primitives
        s(), s()
    for _ in range(reps):
        for k, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t0)
    tokens = batch * seq
    res = {"model": name, "params": n_ours, "batch": batch, "seq": seq, "reps": reps}
    for k, ts in times.items():
        med = statistics.median(ts)
        res[k] = {"median_s": med, "tokens_per_s": tokens / med,
                  "min_s": min(ts), "max_s": max(ts)}
    res["ratio_ours_over_hf"] = res["ours"]["tokens_per_s"] / res["transformers"]["tokens_per_s"]
    return res


# ---------------------------------------------------------------- 2. memory estimate vs RSS

MEMORY_CASES = [
    ("stories260K", {}, 16, 512),
    ("stories15M", {}, 8, 256),
    ("gpt2-small-ish 85M", {"vocab_size": 8192, "dim": 768, "n_layers": 12, "n_heads": 12,
                            "n_kv_heads": 12, "max_seq_len": 256}, 4, 256),
]


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started by a
    large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(preset: str, overrides: dict, batch: int, seq: int) -> dict:
    torch.set_num_threads(THREADS)
    cfg = load_config(preset).model.replace(**overrides)
    base = peak_rss()
    model = build_model(cfg, seed=0).train()
    opt = make_optimizer(model.parameters())
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    step = step_fn(model, opt, x, x, False)
    t0 = time.perf_counter()
    for _ in range(2):  # the second step is the steady state: AdamW moments exist
        step()
    peak = peak_rss()
    est = training_memory(cfg, batch, seq, "fp32", "cpu")
    return {"config": cfg.to_dict(), "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "seq": seq, "peak_rss": peak, "rss_after_import": base,
            "estimate": est.to_dict(), "seconds": time.perf_counter() - t0}


def _presets():
    from workbench.config import preset_names

    return preset_names()


def memory(label: str, overrides: dict, batch: int, seq: int) -> dict:
    preset = label if label in _presets() else "stories15M"
    arg = json.dumps({"preset": preset, "overrides": overrides, "batch": batch, "seq": seq})
    out = subprocess.run([sys.executable, __file__, "--memory-child", arg], capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["label"] = label
    r["ratio_estimate_over_peak"] = r["estimate"]["total"] / r["peak_rss"]
    return r


# ---------------------------------------------------------------- 3. tracing overhead

class PlainTransformer(nn.Module):
    """The same llama-style architecture as plain nn.Modules: no LoggingModule, no trace checks.

    Parameter names match ours, so our weights load strictly and both compute the same thing.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(PlainBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = PlainRMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        D = cfg.head_dim
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2).float() / D))
        ang = torch.outer(torch.arange(cfg.max_seq_len).float(), inv)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok_emb(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


class PlainRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class PlainAttn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.H, self.Hkv, self.D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.sizes = (self.H * self.D, self.Hkv * self.D, self.Hkv * self.D)
        self.wqkv = nn.Linear(cfg.dim, sum(self.sizes), bias=False)
        self.wo = nn.Linear(self.H * self.D, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split(self.sizes, dim=-1)
        q = q.view(B, T, self.H, self.D).transpose(1, 2)
        k = k.view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = v.view(B, T, self.Hkv, self.D).transpose(1, 2)
        q, k = rot(q, cos, sin), rot(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.H != self.Hkv)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


def rot(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class PlainMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class PlainBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = PlainRMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = PlainAttn(cfg)
        self.mlp_norm = PlainRMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = PlainMLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


def trace_overhead(name: str, batch: int, seq: int, reps: int) -> dict:
    cfg = load_config(name).model
    ours = build_model(cfg, seed=0).eval()
    plain = PlainTransformer(cfg).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    with torch.no_grad():
        assert torch.allclose(ours(x), plain(x), atol=1e-5), "plain build must match ours"
        times = {"ours_no_trace": [], "plain_nn_module": []}
        fns = {"ours_no_trace": lambda: ours(x), "plain_nn_module": lambda: plain(x)}
        for f in fns.values():
            f(), f()
        for _ in range(reps):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    res = {"model": name, "batch": batch, "seq": seq, "reps": reps}
    for k, ts in times.items():
        res[k] = {"median_ms": 1000 * statistics.median(ts), "min_ms": 1000 * min(ts)}
    res["overhead_pct"] = 100 * (res["ours_no_trace"]["median_ms"] / res["plain_nn_module"]["median_ms"] - 1)
    return res


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        a = json.loads(args.memory_child)
        print(json.dumps(memory_child(a["preset"], a["overrides"], a["batch"], a["seq"])))
        return 0

    torch.set_num_threads(THREADS)
    reps = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    results: dict = {"torch": torch.__version__, "threads": THREADS}

    print("\n1. training step (fwd + bwd + AdamW), tokens/s, median of", reps)
    results["throughput"] = []
    for name, batch, seq in (("stories260K", 16, 512), ("stories15M", 8, 256)):
        r = throughput(name, batch, seq, reps)
        results["throughput"].append(r)
        print(f"  {name:12s} B={batch} T={seq}: ours {r['ours']['tokens_per_s']:8.0f} tok/s "
              f"({r['ours']['median_s'] * 1000:.0f} ms)   transformers "
              f"{r['transformers']['tokens_per_s']:8.0f} tok/s ({r['transformers']['median_s'] * 1000:.0f} ms)"
              f"   ours/hf = {r['ratio_ours_over_hf']:.2f}x")

    print("\n2. training memory: estimate vs measured peak RSS (fresh process each)")
    results["memory"] = []
    for label, overrides, batch, seq in MEMORY_CASES:
        r = memory(label, overrides, batch, seq)
        results["memory"].append(r)
        e = r["estimate"]
        print(f"  {label:20s} {r['params'] / 1e6:6.2f}M B={batch} T={seq}: estimate "
              f"{fmt_bytes(e['total'])} (weights {fmt_bytes(e['weights'])}, grads {fmt_bytes(e['grads'])}, "
              f"AdamW {fmt_bytes(e['optimizer'])}, activations {fmt_bytes(e['activations'])}, runtime "
              f"{fmt_bytes(e['runtime'])})  peak RSS {fmt_bytes(r['peak_rss'])}  "
              f"estimate/peak = {r['ratio_estimate_over_peak']:.2f}")

    print("\n3. forward (no_grad) with no trace active vs a plain nn.Module build, median of", 3 * reps)
    results["trace_overhead"] = []
    for name, batch, seq in (("stories260K", 8, 256), ("stories15M", 4, 256)):
        r = trace_overhead(name, batch, seq, 3 * reps)
        results["trace_overhead"].append(r)
        print(f"  {name:12s} B={batch} T={seq}: ours {r['ours_no_trace']['median_ms']:.2f} ms   plain "
              f"{r['plain_nn_module']['median_ms']:.2f} ms   difference {r['overhead_pct']:+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["ratio_ours_over_hf"] >= 1.0 for r in results["throughput"])
    ok &= all(abs(math.log(r["ratio_estimate_over_peak"])) <= math.log(1.25) for r in results["memory"])
    print("\nall targets met" if ok else "\nsome targets NOT met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generation benchmark: our KV-cache decode loop beside transformers ``generate``.

    .venv/bin/python benchmarks/bench_generate.py            # stories260K and stories15M
    .venv/bin/python benchmarks/bench_generate.py --reps 5 --json out.json

For each preset shape (random init; vocab per preset; no tokenizer needed — both sides work on
token ids): batch 1, fp32, CPU, ``torch.set_num_threads(2)``, greedy, the same prompt length
and the same number of new tokens, EOS ignored so both produce exactly that many. Ours runs
``token_loop`` (the decode loop behind ``generate``/``chat``, per-token probabilities and top-5
included); theirs is ``LlamaForCausalLM.generate(use_cache=True)`` on our weights exported with
``workbench.export.hf_state_dict``. Both are checked to produce the same tokens.

Measured: time to first token (prefill + first sample) and decode tokens/s (the tokens after
the first, over the time after the first). Ours and theirs alternate within each repetition
so machine drift hits both alike; the median of the repetitions is reported, with ratios
ours / theirs pair by pair (tokens/s: higher is better for us; TTFT: lower is).

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.config import load_config  # noqa: E402
from workbench.export import hf_config, hf_state_dict  # noqa: E402
from workbench.generate import token_loop  # noqa: E402
from workbench.model import build_model  # noqa: E402
from workbench.sampling import SamplingParams  # noqa: E402

THREADS = 2


class _Ids:
    """The few tokenizer fields hf_config reads."""
    bos_id, eos_id, pad_id = 1, 2, 3


def hf_model(ours):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = hf_config(ours.config, _Ids())
    for k in ("architectures", "model_type", "torch_dtype"):
        d.pop(k)
    model = LlamaForCausalLM(LlamaConfig(**d, attn_implementation="sdpa"))
    missing, unexpected = model.load_state_dict(hf_state_dict(ours), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if ours.config.tie_embeddings:
        model.tie_weights()
    return model.eval()


def run_ours(model, prompt, n_new):
    params = SamplingParams(max_tokens=n_new, temperature=0.0, stop_at_eos=False)
    t0 = time.perf_counter()
    ids, t_first = [], None
    for step in token_loop(model, prompt, params):
        if t_first is None:
            t_first = time.perf_counter()
        ids.append(step.id)
    t_end = time.perf_counter()
    return ids, t_first - t0, (n_new - 1) / (t_end - t_first)


class _FirstTokenTimer:
    """A transformers streamer: notes when the prompt and then each new token arrive."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def run_hf(model, prompt, n_new):
    x = torch.tensor([prompt])
    timer = _FirstTokenTimer()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                             use_cache=True, streamer=timer, pad_token_id=0, eos_token_id=None)
    t_end = time.perf_counter()
    t_first = timer.times[1]  # times[0] is the prompt being put, times[1] the first new token
    return out[0, len(prompt):].tolist(), t_first - t0, (n_new - 1) / (t_end - t_first)


def bench(preset: str, prompt_len: int, n_new: int, reps: int) -> dict:
    cfg = load_config(preset).model
    ours = build_model(cfg, seed=0).eval()
    theirs = hf_model(ours)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, cfg.vocab_size, (prompt_len,), generator=g).tolist()
    a, *_ = run_ours(ours, prompt, n_new)  # warm-up, and the two must agree
    b, *_ = run_hf(theirs, prompt, n_new)
    same = a == b
    rows = {"ours": [], "transformers": []}
    for _ in range(reps):
        rows["ours"].append(run_ours(ours, prompt, n_new)[1:])
        rows["transformers"].append(run_hf(theirs, prompt, n_new)[1:])
    res = {"preset": preset, "params": sum(p.numel() for p in ours.parameters()),
           "prompt_len": prompt_len, "new_tokens": n_new, "reps": reps, "same_tokens": same}
    for k, r in rows.items():
        res[k] = {"ttft_ms": 1000 * statistics.median(t for t, _ in r),
                  "decode_tok_s": statistics.median(s for _, s in r)}
    ratios_tps = [o[1] / t[1] for o, t in zip(rows["ours"], rows["transformers"])]
    ratios_ttft = [o[0] / t[0] for o, t in zip(rows["ours"], rows["transformers"])]
    res["decode_tok_s_ratio_ours_over_hf"] = statistics.median(ratios_tps)
    res["ttft_ratio_ours_over_hf"] = statistics.median(ratios_ttft)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--presets", nargs="*", default=["stories260K", "stories15M"])
    ap.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    ap.add_argument("--json", metavar="FILE", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"batch 1, fp32, greedy, prompt {args.prompt_len}, new {args.new_tokens}, "
          f"median of {args.reps}")
    out = []
    for preset in args.presets:
        r = bench(preset, args.prompt_len, args.new_tokens, args.reps)
        out.append(r)
        o, t = r["ours"], r["transformers"]
        print(f"{preset:12s} ({r['params'] / 1e6:.2f}M params, same tokens: {r['same_tokens']})")
        print(f"  decode tok/s   ours {o['decode_tok_s']:8.1f}   transformers {t['decode_tok_s']:8.1f}"
              f"   ratio {r['decode_tok_s_ratio_ours_over_hf']:.2f}x")
        print(f"  TTFT ms        ours {o['ttft_ms']:8.2f}   transformers {t['ttft_ms']:8.2f}"
              f"   ratio {r['ttft_ratio_ours_over_hf']:.2f} (lower is better)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

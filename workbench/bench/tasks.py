"""The benchmark tasks, each run in a fresh child process by ``workbench bench``.

    python -m workbench.bench.tasks TASK ARGS.json OUT.json

A task reads its arguments from ARGS.json, prints progress lines to stderr and writes its raw
measurements to OUT.json (atomically). Within a task, ours and the peer alternate repetition by
repetition, so a drifting machine hits both alike and ratios can be taken pair by pair. Peak
memory per side is the high-water mark of that side's phase (see ``measure.PhasePeak``); the
parent also records the whole process's peak.

The other tasks live beside this module: ``peers.py`` and ``anchor.py`` (the reference trainers),
``sizes.py`` (bytes per token across vocab sizes, prepare's memory as the input grows, the memory
estimate beside a measured peak) and ``app_task.py`` (the app, driven through ``workbench.tui``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from workbench import fileio
from workbench.errors import WorkbenchError
from workbench.bench.measure import PeerMissing, PhasePeak, load_peer, matmul_peak_gflops, timed


def say(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def _peer(module: str) -> tuple[Any, str | None]:
    try:
        return load_peer(module), None
    except PeerMissing as e:
        return None, str(e)


def _versions(*modules: str) -> dict[str, str]:
    out = {}
    for m in modules:
        mod = sys.modules.get(m)
        if mod is not None:
            out[m] = getattr(mod, "__version__", "?")
    return out


# --- matmul peak --------------------------------------------------------------------------------


def task_matmul(a: dict) -> dict:
    """The machine's fp32 and bf16 matmul peak (GFLOP/s), the ceiling MFU is measured against."""
    import torch

    out: dict[str, Any] = {"threads": torch.get_num_threads(), "n": a.get("n", 1024)}
    for dtype in ("float32", "bfloat16"):
        xs = []
        for _ in range(a["reps"]):
            xs.append(matmul_peak_gflops(dtype, n=out["n"], seconds=a.get("seconds", 0.4)))
        out[dtype] = xs
        say(f"matmul {dtype}: {max(xs):.0f} GFLOP/s best of {len(xs)}")
    out["versions"] = _versions("torch")
    return out


# --- tokenizer: build and encode, beside HF tokenizers ------------------------------------------


def _hf_train(tk, docs, vocab: int):
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace()
    tok.decoder = tk.decoders.Metaspace()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                     show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return tok


def task_tokenizer(a: dict) -> dict:
    """Build time at the same vocab on the same text, encode MB/s and bytes per token."""
    from workbench.data.sources import resolve_source
    from workbench.tokenizer.tokenizer import TokenizerSettings, load_tokenizer
    from workbench.tokenizer.build import build_tokenizer
    from workbench.workspace import Workspace

    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # HF encodes on every core, as we do
    ws = Workspace.at(a["workspace"])
    train = a["train_txt"]
    vocab = a["vocab"]
    settings = TokenizerSettings(vocab_size=vocab, data=train, sample_mb=a["sample_mb"])
    tk, missing = _peer("tokenizers")
    out: dict[str, Any] = {"vocab": vocab, "peer_missing": missing,
                           "build_s": {"ours": [], "peer": []}, "encode_MBps": {"ours": [], "peer": []},
                           "rss_mb": {"ours": None, "peer": None}}
    hf_tok = None
    for r in range(a["reps"]):
        with PhasePeak(include_children=True) as pp:  # the build runs in a child process
            s, _ = timed(lambda: build_tokenizer(ws, a["name"], settings, overwrite=True))
        out["build_s"]["ours"].append(s)
        out["rss_mb"]["ours"] = _max(out["rss_mb"]["ours"], pp.mb)
        if tk is not None:
            src = resolve_source(train)
            with PhasePeak() as pp:
                s, hf_tok = timed(lambda: _hf_train(tk, src.documents("train"), vocab))
            out["build_s"]["peer"].append(s)
            out["rss_mb"]["peer"] = _max(out["rss_mb"]["peer"], pp.mb)
        say(f"tokenizer build {r + 1}/{a['reps']}: ours {out['build_s']['ours'][-1]:.2f}s"
            + (f", tokenizers {out['build_s']['peer'][-1]:.2f}s" if tk is not None else ""))

    tok = load_tokenizer(ws, a["name"])
    docs = list(resolve_source(train).documents("train"))
    mb = sum(len(d.encode()) for d in docs) / 1e6
    threads = os.cpu_count() or 1
    for _ in range(a["reps"]):
        s, _ = timed(lambda: tok.encode_batch(docs, True, True, num_threads=threads))
        out["encode_MBps"]["ours"].append(mb / s)
        if hf_tok is not None:
            s, _ = timed(lambda: hf_tok.encode_batch(docs))
            out["encode_MBps"]["peer"].append(mb / s)
    say(f"encode {mb:.1f} MB: ours {max(out['encode_MBps']['ours']):.1f} MB/s best"
        + (f", tokenizers {max(out['encode_MBps']['peer']):.1f} MB/s" if hf_tok is not None else ""))

    valid = list(resolve_source(a["valid_txt"]).documents("train"))
    vbytes = sum(len(d.encode()) for d in valid)
    out["bytes_per_token"] = {"ours": vbytes / sum(map(len, tok.encode_batch(valid, num_threads=threads)))}
    if hf_tok is not None:
        out["bytes_per_token"]["peer"] = vbytes / sum(len(e.ids) for e in hf_tok.encode_batch(valid))
    out.update(text_MB=mb, valid_MB=vbytes / 1e6, threads=threads, versions=_versions("sentencepiece", "tokenizers"))
    return out


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


# --- data prepare -------------------------------------------------------------------------------


def task_prepare(a: dict) -> dict:
    """One ``data prepare`` of the bench text (the parent runs one child per repetition, so each
    child's peak RSS is that of a whole ``workbench data prepare``)."""
    from workbench.data.prepare import prepare_data
    from workbench.workspace import Workspace

    ws = Workspace.at(a["workspace"])
    name = f"bench-prepare-{a['rep']}"
    t = time.perf_counter()
    info = prepare_data(ws, a["tokenizer"], a["text_dir"], name=name)
    secs = time.perf_counter() - t
    mb = sum(s["bytes"] for s in info.meta["splits"].values()) / 1e6
    tokens = sum(s["tokens"] for s in info.meta["splits"].values())
    shutil.rmtree(info.path, ignore_errors=True)
    say(f"prepare {mb:.1f} MB in {secs:.2f}s ({mb / secs:.1f} MB/s)")
    return {"seconds": secs, "MB": mb, "MBps": mb / secs, "tokens": tokens, "threads": info.meta["threads"]}


# --- training, beside transformers ------------------------------------------------------------


class _Ids:
    """The token ids ``export.hf_config`` reads; the benchmarks work on ids, not text."""

    bos_id, eos_id, pad_id = 1, 2, 3


def hf_llama(model_cfg, tf):
    """A transformers LlamaForCausalLM of exactly our model's shape (the export's mapping)."""
    from workbench.export import hf_config

    d = hf_config(model_cfg, _Ids())
    for k in ("architectures", "model_type", "torch_dtype"):
        d.pop(k)
    return tf.LlamaForCausalLM(tf.LlamaConfig(**d, attn_implementation="sdpa"))


def _train_cfg(preset: str, vocab: int, steps: int, precision: str):
    from workbench.config.schema import load_config

    cfg = load_config(preset)
    cfg.model = cfg.model.replace(vocab_size=vocab)
    cfg.train = cfg.train.replace(max_steps=steps, warmup_steps=1, log_interval=1, eval_interval=10**9,
                                  eval_batches=1, checkpoint_interval=10**9, keep_last=1, precision=precision,
                                  grad_accum=1, device="cpu", max_tokens=None, max_minutes=None)
    return cfg


def _ours_train(ws, a: dict, precision: str, rep: int) -> float:
    """Tokens/s of the real engine (data loading, AdamW, clipping and logging included): the
    median of its per-step records after the warm-up steps."""
    from workbench.training.trainer import Trainer

    cfg = _train_cfg(a["preset"], a["vocab"], a["steps"], precision)
    t = Trainer.new(ws, cfg, a["tokenizer"], a["text_dir"], name=f"bench-{a['preset']}-{precision}-{rep}")
    summary = t.run()
    if summary.get("state") != "finished":
        raise WorkbenchError(f"the {a['preset']} training run ended {summary.get('state')!r}: {summary}")
    rows = [r["tok_s"] for r in t.run_folder.metrics() if r.get("kind") == "train" and r.get("tok_s")]
    shutil.rmtree(t.run_folder.path, ignore_errors=True)
    return _median(rows[a["warmup"]:] or rows)


def _peer_train(model, cfg, steps: int, warmup: int) -> float:
    """Tokens/s of transformers at the same shape and batch: forward, loss, backward, clipping
    and AdamW, on random ids (the shape, not the text, sets the cost)."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    B, T, V = cfg.train.batch_size, cfg.model.max_seq_len, cfg.model.vocab_size
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(steps):
        x = torch.randint(0, V, (B, T + 1), generator=g)
        t = time.perf_counter()
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rates.append(B * T / (time.perf_counter() - t))
    return _median(rates[warmup:] or rates)


def _median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def task_train(a: dict) -> dict:
    from workbench.config.sizes import flops_per_token, param_count
    from workbench.workspace import Workspace

    ws = Workspace.at(a["workspace"])
    cfg = _train_cfg(a["preset"], a["vocab"], a["steps"], "fp32")
    out: dict[str, Any] = {
        "preset": a["preset"], "batch": cfg.train.batch_size, "seq_len": cfg.model.max_seq_len,
        "vocab": a["vocab"], "params": param_count(cfg.model), "steps": a["steps"], "warmup": a["warmup"],
        "train_flops_per_token": flops_per_token(cfg.model)["train"],
        "tok_s": {"ours": [], "peer": [], "ours_bf16": []}, "rss_mb": {"ours": None, "peer": None},
    }
    tf, missing = None, None
    for r in range(a["reps"]):
        with PhasePeak() as pp:
            out["tok_s"]["ours"].append(_ours_train(ws, a, "fp32", r))
        if r == 0:  # later repetitions also hold the peer's modules
            out["rss_mb"]["ours"] = pp.mb
        if a.get("bf16"):
            out["tok_s"]["ours_bf16"].append(_ours_train(ws, a, "bf16", r))
        if r == 0:
            tf, missing = _peer("transformers")
        if tf is not None:
            import torch

            torch.manual_seed(0)
            with PhasePeak() as pp:
                model = hf_llama(cfg.model, tf).train()
                out["tok_s"]["peer"].append(_peer_train(model, cfg, a["steps"], a["warmup"]))
                del model
            out["rss_mb"]["peer"] = _max(out["rss_mb"]["peer"], pp.mb)
        say(f"train {a['preset']} {r + 1}/{a['reps']}: ours {out['tok_s']['ours'][-1]:,.0f} tok/s"
            + (f", transformers {out['tok_s']['peer'][-1]:,.0f} tok/s" if tf is not None else ""))
    out["peer_missing"] = missing
    out["versions"] = _versions("torch", "transformers")
    return out


# --- decoding, beside transformers generate ----------------------------------------------------


def _ours_decode(model, prompt: list[int], n_new: int) -> tuple[list[int], float, float]:
    from workbench.generation.generate import token_loop
    from workbench.generation.sampling import SamplingParams

    params = SamplingParams(max_tokens=n_new, temperature=0.0, stop_at_eos=False)
    t0 = time.perf_counter()
    ids, t_first = [], None
    for step in token_loop(model, prompt, params):
        if t_first is None:
            t_first = time.perf_counter()
        ids.append(step.id)
    t_end = time.perf_counter()
    return ids, t_first - t0, (n_new - 1) / (t_end - t_first)


class _Arrivals:
    """A transformers streamer that notes when the prompt and then each new token arrive."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _peer_decode(model, prompt: list[int], n_new: int) -> tuple[list[int], float, float]:
    import torch

    x = torch.tensor([prompt])
    arrivals = _Arrivals()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True,
                             streamer=arrivals, pad_token_id=0, eos_token_id=None)
    t_end = time.perf_counter()
    t_first = arrivals.times[1]  # times[0]: the prompt being put; times[1]: the first new token
    return out[0, len(prompt):].tolist(), t_first - t0, (n_new - 1) / (t_end - t_first)


def task_generate(a: dict) -> dict:
    """Batch 1, fp32, greedy, the same prompt and the same number of new tokens (EOS ignored):
    time to first token and decode tokens/s of our KV-cache loop and of transformers generate
    on the same weights, checked to produce the same tokens."""
    import torch

    from workbench.config.schema import load_config
    from workbench.export import hf_state_dict
    from workbench.model import build_model

    cfg = load_config(a["preset"]).model
    # stay within the context, where both sides are defined to agree
    a = {**a, "prompt_len": min(a["prompt_len"], cfg.max_seq_len // 2)}
    a["new_tokens"] = min(a["new_tokens"], cfg.max_seq_len - a["prompt_len"])
    out: dict[str, Any] = {"preset": a["preset"], "prompt_len": a["prompt_len"], "new_tokens": a["new_tokens"],
                           "ttft_ms": {"ours": [], "peer": []}, "decode_tok_s": {"ours": [], "peer": []},
                           "rss_mb": {"ours": None, "peer": None}, "same_tokens": None}
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, cfg.vocab_size, (a["prompt_len"],), generator=g).tolist()
    with PhasePeak() as pp:
        ours = build_model(cfg, seed=0).eval()
        ours_ids, *_ = _ours_decode(ours, prompt, a["new_tokens"])  # warm-up
        ours_runs = [_ours_decode(ours, prompt, a["new_tokens"])]
    out["rss_mb"]["ours"] = pp.mb
    out["params"] = sum(p.numel() for p in ours.parameters())
    tf, missing = _peer("transformers")
    theirs = None
    if tf is not None:
        with PhasePeak() as pp:
            theirs = hf_llama(cfg, tf)
            missing_keys, unexpected = theirs.load_state_dict(hf_state_dict(ours), strict=False)
            if unexpected or any(k != "lm_head.weight" for k in missing_keys):
                raise WorkbenchError(f"weights did not map onto transformers: {missing_keys} {unexpected}")
            if cfg.tie_embeddings:
                theirs.tie_weights()
            theirs.eval()
            peer_ids, *_ = _peer_decode(theirs, prompt, a["new_tokens"])
            peer_runs = [_peer_decode(theirs, prompt, a["new_tokens"])]
        out["rss_mb"]["peer"] = pp.mb
        out["same_tokens"] = peer_ids == ours_ids
    # our decoding in bf16 weights beside fp32 (generation picks the faster per shape)
    ours16 = build_model(cfg, seed=0).eval().to(torch.bfloat16)
    ids16, *_ = _ours_decode(ours16, prompt, a["new_tokens"])  # warm-up
    out["bf16_same_tokens"] = sum(x == y for x, y in zip(ids16, ours_ids))
    out["bf16_first_difference"] = next((i for i, (x, y) in enumerate(zip(ids16, ours_ids)) if x != y), None)
    bf16_runs = []
    for r in range(a["reps"]):
        if r > 0:
            ours_runs.append(_ours_decode(ours, prompt, a["new_tokens"]))
            if theirs is not None:
                peer_runs.append(_peer_decode(theirs, prompt, a["new_tokens"]))
        bf16_runs.append(_ours_decode(ours16, prompt, a["new_tokens"]))
    out["decode_tok_s"]["ours_bf16"] = [s for *_, s in bf16_runs]
    for side, runs in (("ours", ours_runs), ("peer", peer_runs if theirs is not None else [])):
        out["ttft_ms"][side] = [1000 * t for _, t, _ in runs]
        out["decode_tok_s"][side] = [s for *_, s in runs]
    say(f"generate {a['preset']}: ours {_median(out['decode_tok_s']['ours']):,.0f} tok/s"
        + (f", transformers {_median(out['decode_tok_s']['peer']):,.0f} tok/s" if theirs is not None else ""))
    out["peer_missing"] = missing
    out["versions"] = _versions("torch", "transformers")
    return out


TASKS: dict[str, Callable[[dict], dict]] = {
    "matmul": task_matmul,
    "tokenizer": task_tokenizer,
    "prepare": task_prepare,
    "train": task_train,
    "generate": task_generate,
}


def child_main(tasks: dict[str, Callable[[dict], dict]], argv: list[str]) -> int:
    """Run one task: ``TASK ARGS.json OUT.json``. Errors become ``{"error": ...}`` and exit 1."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    name, args_path, out_path = argv
    args = json.loads(Path(args_path).read_text())
    try:
        result = tasks[name](args)
        code = 0
    except WorkbenchError as e:
        result, code = {"error": str(e)}, 1
    except Exception as e:  # a bug: keep the traceback for the report
        traceback.print_exc()
        result, code = {"error": f"{type(e).__name__}: {e}"}, 1
    fileio.write_json(out_path, result)
    return code


if __name__ == "__main__":
    sys.exit(child_main(TASKS, sys.argv[1:]))

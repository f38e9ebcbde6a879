"""The reference trainers as peers: nanoGPT's and llama2.c's ``model.py``, beside our engine.

The peers' files are other projects' code, kept unmodified in ``shared/peers/`` beside the
repository (or ``$WORKBENCH_PEERS``) and imported from there, never copied. Each is trained as
its users run it on a CPU: its own model class at the shape given (MHA), its own
``configure_optimizers`` (AdamW, lr 1e-3, weight decay 0.1, betas 0.9/0.95), fp32, gradient
clipping at 1.0, batches of random windows read from the same token file as ours. Ours is the
real engine (``Trainer``) at its default precision (``auto``). Rounds alternate ours, nanoGPT,
llama2.c, so a drifting machine hits all three alike.

Tasks (run by ``workbench bench`` in their own processes):

* ``peers``: tokens/s of the three at one shape; and, at the dim-128 shape, the peak RSS of a
  whole ``workbench train`` process beside a whole process training nanoGPT's model the way its
  ``train.py`` does, one thread each.
* ``parity``: the same seed and steps trained in fp32 and in ``auto``; both validation losses,
  each evaluated in fp32 (and the auto run also in its own precision).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.bench.measure import PeerMissing, run_measured

PEERS_ENV = "WORKBENCH_PEERS"
# The three shapes of the speed issue: stories260K's width, tiny-1m, stories15M's width.
SHAPES = {
    "d64": dict(dim=64, n_layers=5, n_heads=8, vocab=512, batch=16, seq_len=512),
    "d128": dict(dim=128, n_layers=4, n_heads=4, vocab=4096, batch=16, seq_len=256),
    "d288": dict(dim=288, n_layers=6, n_heads=6, vocab=4096, batch=8, seq_len=256),
}
PEER_FILES = {"nanoGPT": "nanoGPT/model.py", "llama2.c": "llama2.c/model.py"}
LR, WEIGHT_DECAY, BETAS = 1e-3, 0.1, (0.9, 0.95)


def say(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def peers_dir() -> Path:
    if os.environ.get(PEERS_ENV):
        return Path(os.environ[PEERS_ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "peers"


def load_peer_file(name: str):
    """Import a peer's ``model.py`` from the peers folder, or raise PeerMissing saying where it
    was looked for."""
    path = peers_dir() / PEER_FILES[name]
    if not path.is_file():
        raise PeerMissing(f"{name}'s model.py is not at {path} (set ${PEERS_ENV} to the folder holding "
                          f"{', '.join(PEER_FILES.values())})")
    spec = importlib.util.spec_from_file_location(f"peer_{name.replace('.', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a peer that cannot import here is missing, with the reason
        raise PeerMissing(f"{name}'s model.py at {path} does not import: {type(e).__name__}: {e}") from None
    return mod


def build_peer(name: str, mod, shape: dict):
    """The peer's model and its own optimizer (their prints silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "nanoGPT":
            # nanoGPT's train.py defaults: no bias, no dropout
            model = mod.GPT(mod.GPTConfig(block_size=shape["seq_len"], vocab_size=shape["vocab"],
                                          n_layer=shape["n_layers"], n_head=shape["n_heads"], n_embd=shape["dim"],
                                          dropout=0.0, bias=False))
        else:
            model = mod.Transformer(mod.ModelArgs(dim=shape["dim"], n_layers=shape["n_layers"],
                                                  n_heads=shape["n_heads"], n_kv_heads=shape["n_heads"],
                                                  vocab_size=shape["vocab"], multiple_of=32,
                                                  max_seq_len=shape["seq_len"], dropout=0.0))
        opt = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")
    return model.train(), opt


def peer_step(name: str, model, opt, x, y) -> float:
    """One training step as the peers' train.py runs it on a CPU (fp32, no autocast)."""
    import torch

    if name == "nanoGPT":
        _, loss = model(x, y)
    else:
        model(x, y)
        loss = model.last_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def peer_flops_per_token(name: str, shape: dict) -> int:
    """Training FLOPs per token of the peer's architecture, by our estimate's formulas."""
    from workbench.config.schema import ModelConfig
    from workbench.config.sizes import flops_per_token

    kw = dict(vocab_size=shape["vocab"], dim=shape["dim"], n_layers=shape["n_layers"], n_heads=shape["n_heads"],
              max_seq_len=shape["seq_len"])
    if name == "nanoGPT":
        kw.update(mlp="gelu", norm="layernorm", pos="learned")
    return flops_per_token(ModelConfig(**kw))["train"]


def _shape(a: dict) -> dict:
    """The named shape, or one given whole (the tests train a tiny one)."""
    if isinstance(a["shape"], dict):
        shape, a["shape"] = a["shape"], f"d{a['shape']['dim']}"
        return shape
    return SHAPES[a["shape"]]


def ensure_tokenizer(a: dict, vocab: int) -> str:
    """The bench tokenizer at ``vocab`` pieces (built here, untimed, when the suite has none)."""
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer
    from workbench.workspace import Workspace

    if vocab == a["vocab"]:
        return a["tokenizer"]
    name = f"{a['tokenizer']}-{vocab}"
    ws = Workspace.at(a["workspace"])
    if not (ws.tokenizer_path(name) / "tokenizer.model").is_file():
        say(f"building a {vocab}-piece tokenizer for this shape (not timed)")
        build_tokenizer(ws, name, TokenizerSettings(vocab_size=vocab, data=a["train_txt"], sample_mb=a["sample_mb"]),
                        overwrite=True)
    return name


def _engine_cfg(shape: dict, steps: int, threads: int, precision: str = "auto", seed: int = 1337):
    from workbench.config.schema import Config, ModelConfig, TrainConfig

    model = ModelConfig(vocab_size=shape["vocab"], dim=shape["dim"], n_layers=shape["n_layers"],
                        n_heads=shape["n_heads"], max_seq_len=shape["seq_len"])
    train = TrainConfig(batch_size=shape["batch"], max_steps=steps, warmup_steps=1, lr=LR, min_lr=LR / 10,
                        weight_decay=WEIGHT_DECAY, log_interval=1, eval_interval=10**9, eval_batches=1,
                        checkpoint_interval=10**9, keep_last=1, precision=precision, device="cpu",
                        num_threads=threads, seed=seed)
    return Config(model, train, name=f"peers-{shape['dim']}")


def _ours(ws, a: dict, tok: str, shape: dict, rep: int) -> tuple[float, dict]:
    from workbench.training.trainer import Trainer

    t = Trainer.new(ws, _engine_cfg(shape, a["steps"], a["threads"]), tok, a["text_dir"],
                    name=f"peers-{shape['dim']}-{rep}-{time.monotonic_ns()}")
    summary = t.run()
    if summary.get("state") != "finished":
        raise WorkbenchError(f"our training run ended {summary.get('state')!r}: {summary.get('message', summary)}")
    rows = [r["tok_s"] for r in t.run_folder.metrics() if r.get("kind") == "train" and r.get("tok_s")]
    facts = dict(t.facts)
    shutil.rmtree(t.run_folder.path, ignore_errors=True)
    return statistics.median(rows[a["warmup"]:] or rows), facts


def _peer(name: str, mod, shape: dict, data, a: dict) -> float:
    import numpy as np
    import torch

    torch.manual_seed(0)
    model, opt = build_peer(name, mod, shape)
    rng = np.random.default_rng(0)
    B, T = shape["batch"], shape["seq_len"]
    rates = []
    for _ in range(a["steps"]):
        t = time.perf_counter()
        batch = torch.from_numpy(data.sample_batch(B, T, rng))
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        peer_step(name, model, opt, x, y)
        rates.append(B * T / (time.perf_counter() - t))
    return statistics.median(rates[a["warmup"]:] or rates)


def _threads(a: dict) -> None:
    import torch

    a["threads"] = a.get("threads") or torch.get_num_threads()
    torch.set_num_threads(a["threads"])


def task_peers(a: dict) -> dict:
    import torch

    from workbench.config.sizes import flops_per_token
    from workbench.machine.probe import cpu_has_native_bf16, cpu_name
    from workbench.data.prepare import ensure_prepared
    from workbench.workspace import Workspace

    _threads(a)
    shape = _shape(a)
    ws = Workspace.at(a["workspace"])
    tok = ensure_tokenizer(a, shape["vocab"])
    data = ensure_prepared(ws, tok, a["text_dir"]).train
    out: dict[str, Any] = {"shape": a["shape"], **shape, "steps": a["steps"], "warmup": a["warmup"],
                           "threads": a["threads"], "cpu": cpu_name(), "native_bf16_flag": cpu_has_native_bf16(),
                           "tok_s": {"ours": []}, "peer_missing": {}, "flops_per_token": {}}
    cfg = _engine_cfg(shape, 1, a["threads"])
    out["flops_per_token"]["ours"] = flops_per_token(cfg.model)["train"]
    peers = {}
    for name in PEER_FILES:
        try:
            peers[name] = load_peer_file(name)
            out["tok_s"][name] = []
            out["flops_per_token"][name] = peer_flops_per_token(name, shape)
        except PeerMissing as e:
            out["peer_missing"][name] = str(e)
    for r in range(a["reps"]):
        rate, facts = _ours(ws, a, tok, shape, r)
        out["tok_s"]["ours"].append(rate)
        out["ours_facts"] = facts
        for name, mod in peers.items():
            out["tok_s"][name].append(_peer(name, mod, shape, data, a))
        say(f"{a['shape']} {r + 1}/{a['reps']}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in out["tok_s"].items())
            + f" tok/s (ours in {facts['precision']}, attention {facts['attention']})")
    if a.get("memory"):
        out["memory"] = _memory(a, tok, shape)
    out["versions"] = {"torch": torch.__version__}
    return out


# --- whole-process memory: `workbench train` beside a nanoGPT training process ----------------


def _memory(a: dict, tok: str, shape: dict) -> dict:
    """Peak RSS of a whole ``workbench train`` and of a whole nanoGPT training process (as its
    train.py: model, configure_optimizers, memmap batches), one thread each, same steps."""
    from workbench import fileio
    from workbench.config.schema import save_config

    steps = a["memory_steps"]
    root = Path(a["workspace"])
    cfg_path = root / f"peers-mem-{shape['dim']}.yaml"
    cfg = _engine_cfg(shape, steps, 1)
    save_config(cfg_path, cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    name = f"peers-mem-{time.monotonic_ns()}"
    ours_cmd = [sys.executable, "-m", "workbench", "--workspace", str(root), "train", "--config", str(cfg_path),
                "--tokenizer", tok, "--data", a["text_dir"], "--name", name]
    out: dict[str, Any] = {"steps": steps, "threads": 1}
    rc, secs, mb, tail = run_measured(ours_cmd, env)
    if rc != 0:
        raise WorkbenchError(f"`workbench train` for the memory figure failed: {tail[-300:]}")
    out["ours_mb"] = mb
    shutil.rmtree(root / "trained_models" / name, ignore_errors=True)
    from workbench.data.prepare import ensure_prepared
    from workbench.workspace import Workspace

    info = ensure_prepared(Workspace.at(root), tok, a["text_dir"])  # prepared already: found, not redone
    args = root / f"{name}.json"
    fileio.write_json(args, {"shape": shape, "steps": steps, "train_bin": str(info.train.path),
                             "n_tokens": len(info.train), "dtype": str(info.dtype)})
    try:
        load_peer_file("nanoGPT")
    except PeerMissing as e:
        out["peer_missing"] = str(e)
        return out
    rc, secs, mb, tail = run_measured([sys.executable, "-m", "workbench.bench.peers", "nanogpt-process", str(args)], env)
    if rc != 0:
        raise WorkbenchError(f"the nanoGPT training process failed: {tail[-300:]}")
    out["peer_mb"] = mb
    say(f"peak RSS training d{shape['dim']}, 1 thread: workbench train {out['ours_mb']:.0f} MB, "
        f"nanoGPT {out['peer_mb']:.0f} MB")
    return out


def nanogpt_process(args_path: str) -> int:
    """A training process the way nanoGPT's train.py runs on a CPU (its get_batch re-opens the
    memmap each batch), for the memory comparison."""
    import numpy as np
    import torch

    a = json.loads(Path(args_path).read_text())
    shape, B, T = a["shape"], a["shape"]["batch"], a["shape"]["seq_len"]
    mod = load_peer_file("nanoGPT")
    torch.manual_seed(1337)
    model, opt = build_peer("nanoGPT", mod, shape)
    for _ in range(a["steps"]):
        mm = np.memmap(a["train_bin"], dtype=np.dtype(a["dtype"]), mode="r")
        ix = torch.randint(len(mm) - T - 1, (B,))
        x = torch.stack([torch.from_numpy(mm[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(mm[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        peer_step("nanoGPT", model, opt, x, y)
    return 0


# --- loss parity: fp32 against auto, same seed and steps --------------------------------------


def task_parity(a: dict) -> dict:
    import torch

    from workbench.machine.device import resolve_precision
    from workbench.training.evaluate import evaluate
    from workbench.training.trainer import Trainer
    from workbench.workspace import Workspace

    _threads(a)
    shape = _shape(a)
    ws = Workspace.at(a["workspace"])
    tok = ensure_tokenizer(a, shape["vocab"])
    out: dict[str, Any] = {"shape": a["shape"], **shape, "steps": a["steps"], "threads": a["threads"],
                           "eval_batches": a["eval_batches"]}
    cpu = torch.device("cpu")
    fp32 = resolve_precision("fp32", cpu)
    for prec in ("fp32", "auto"):
        cfg = _engine_cfg(shape, a["steps"], a["threads"], precision=prec, seed=a.get("seed", 1337))
        cfg.train = cfg.train.replace(warmup_steps=min(100, a["steps"] // 10 + 1), log_interval=max(1, a["steps"] // 20))
        t0 = time.perf_counter()
        t = Trainer.new(ws, cfg, tok, a["text_dir"], name=f"parity-{prec}-{time.monotonic_ns()}")
        summary = t.run()
        if summary.get("state") != "finished":
            raise WorkbenchError(f"the {prec} parity run ended {summary.get('state')!r}: {summary.get('message')}")
        secs = time.perf_counter() - t0
        bpt = t.data.bytes_per_token("val")
        m32 = evaluate(t.raw_model, t.data.val, shape["batch"], shape["seq_len"], a["eval_batches"], bpt, cpu, fp32)
        own = evaluate(t.raw_model, t.data.val, shape["batch"], shape["seq_len"], a["eval_batches"], bpt, cpu,
                       t.precision)
        out[prec] = {"precision": t.precision.name, "attention": t.facts.get("attention"),
                     "val_loss_fp32_eval": m32["val_loss"], "val_loss_own_eval": own["val_loss"],
                     "bpb_fp32_eval": m32["bpb"], "seconds": secs, "val_tokens": m32["val_tokens"]}
        say(f"parity {prec} ({t.precision.name}): {a['steps']} steps in {secs:.0f}s, val loss {m32['val_loss']:.4f} "
            f"(fp32 eval), {own['val_loss']:.4f} ({t.precision.name} eval)")
        shutil.rmtree(t.run_folder.path, ignore_errors=True)
    a32, au = out["fp32"]["val_loss_fp32_eval"], out["auto"]["val_loss_fp32_eval"]
    out["relative_difference"] = (au - a32) / a32
    out["versions"] = {"torch": torch.__version__}
    return out


# --- torch.compile: compile time (cold and cached) and step speed, through the engine ----------


def task_compile(a: dict) -> dict:
    """At one shape: tokens/s eager and compiled (``train.compile``), with the compile time of a
    cold start (an empty inductor cache) and of a second start that finds its cache."""
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=a["workspace"])
    import torch

    from workbench.training.trainer import Trainer
    from workbench.workspace import Workspace

    _threads(a)
    shape = _shape(a)
    ws = Workspace.at(a["workspace"])
    tok = ensure_tokenizer(a, shape["vocab"])
    out: dict[str, Any] = {"shape": a["shape"], **shape, "steps": a["steps"], "threads": a["threads"],
                           "tok_s": {"eager": [], "compiled": []}, "compile_s": {}}
    for label in ("eager", "cold", "eager", "cached"):
        cfg = _engine_cfg(shape, a["steps"], a["threads"])
        cfg.train = cfg.train.replace(compile=label != "eager")
        torch._dynamo.reset()  # a new process would start with nothing compiled in memory
        t = Trainer.new(ws, cfg, tok, a["text_dir"], name=f"compile-{label}-{time.monotonic_ns()}")
        summary = t.run()
        if summary.get("state") != "finished":
            raise WorkbenchError(f"the {label} run ended {summary.get('state')!r}: {summary.get('message')}")
        rows = [r["tok_s"] for r in t.run_folder.metrics() if r.get("kind") == "train" and r.get("tok_s")]
        out["tok_s"]["eager" if label == "eager" else "compiled"].append(statistics.median(rows[a["warmup"]:]))
        if label != "eager":
            if "compile_seconds" not in t.facts:
                raise WorkbenchError(f"torch.compile did not run at {a['shape']}: see the messages above")
            out["compile_s"][label] = t.facts["compile_seconds"]
        out["precision"], out["attention"] = t.precision.name, t.facts.get("attention")
        shutil.rmtree(t.run_folder.path, ignore_errors=True)
    say(f"compile {a['shape']}: eager {out['tok_s']['eager']}, compiled {out['tok_s']['compiled']} tok/s; "
        f"compile {out['compile_s']} s")
    out["versions"] = {"torch": torch.__version__}
    return out


TASKS = {"peers": task_peers, "parity": task_parity, "compile": task_compile}

if __name__ == "__main__":
    if sys.argv[1:2] == ["nanogpt-process"]:
        sys.exit(nanogpt_process(sys.argv[2]))
    from workbench.bench.tasks import child_main

    sys.exit(child_main(TASKS, sys.argv[1:]))

"""The tests' helpers, in one module: the text tests write (corpora), the one tiny model config,
machine measurements injected into the probe cache, runs trained by the real engine, recorded
training streams with fixed numbers, and Pilot helpers for the app tests. Fixtures live in the
``conftest.py`` files and are built from these; tests import helpers from here only.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

from workbench.training.events import CheckpointSaved, Evaluated, Logged, Sampled, Started, Stepped, TrainEvent
from workbench.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


# --- machine measurements (the probe cache) ------------------------------------------------


def inject_matmul(bf16_speedup: float) -> None:
    """Pretend this machine measured bf16 matmuls at ``bf16_speedup`` x fp32."""
    from workbench.machine.probe import write_cached

    write_cached({"matmul": {"fp32_gflops": 100.0, "bf16_gflops": 100.0 * bf16_speedup,
                             "bf16_speedup": bf16_speedup, "shape": [2048, 256, 1024], "threads": 1,
                             "native_bf16_flag": None, "measured": "injected by the tests"}})


def inject_speed(law: dict, vocab: int, tok_s_of, threads: int | None = None) -> None:
    """Pretend this machine measured ``tok_s_of(dim, n_layers)`` training tokens/s for every
    planner candidate (precision auto, the law's optimizer) at ``threads``, or at every thread
    count the planner may run with: torch's thread count is per thread (OpenMP), so a worker
    thread can see another than the test's own after an earlier test set it."""
    import torch

    from workbench.planning import planner
    from workbench.machine.probe import write_cached

    opt = law["recipe"].get("train", {}).get("optimizer", "adamw")
    counts = [threads] if threads else sorted({torch.get_num_threads(), *range(1, (os.cpu_count() or 1) + 1)})
    write_cached({planner.throughput_key(planner.shape_config(dim, layers, vocab, law["recipe"]), planner.BATCH,
                                         "auto", t, opt):
                  {"tok_s": tok_s_of(dim, layers), "precision": "fp32", "attention": "sdpa", "threads": t}
                  for dim, layers in planner.SHAPES for t in counts})


# --- text the tests write ---------------------------------------------------------------

WORDS = (
    "once upon a time there was little girl boy named Lily Ben Tom Sue who liked to play with "
    "her his big red ball dog cat park tree sun happy sad friends mom dad said \"Let's go!\" "
    "they ran jumped laughed and the end. It was fun, very kind smiled found box toy"
).split()


def tinystories_dir() -> Path | None:
    env = os.environ.get("WORKBENCH_TINYSTORIES")
    p = Path(env) if env else REPO.parent / "shared" / "data" / "tinystories"
    return p if (p / "train.txt").is_file() and (p / "valid.txt").is_file() else None


def make_stories(n: int, seed: int = 0) -> list[str]:
    """Short synthetic stories with paragraphs, punctuation and a few digits."""
    rng = random.Random(seed)
    stories = []
    for i in range(n):
        paras = []
        for _ in range(rng.randint(1, 3)):
            sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25)))
            paras.append(sent[0].upper() + sent[1:] + f". {rng.randint(0, 99)} days.")
        stories.append("\n".join(paras))
    return stories


def write_txt(path: Path, stories: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


NAMES = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam"]
ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "duck"]
PLACES = ["park", "garden", "forest", "house", "beach", "school"]
THINGS = ["ball", "kite", "box", "cake", "book", "hat", "toy"]
FEELINGS = ["happy", "sad", "excited", "scared", "sleepy", "proud"]


def story(rng: random.Random) -> str:
    n, m = rng.sample(NAMES, 2)
    a, p, t, f = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(THINGS), rng.choice(FEELINGS)
    k = rng.randint(2, 9)
    return (f"Once upon a time, there was a little {a} named {n}. {n} liked to play in the {p}.\n"
            f"One day, {n} found a big {t} with {k} red dots. {n} felt {f}.\n"
            f"\"Can I play with your {t}?\" asked {m}. \"Yes!\" said {n}. They played all day.")


def write_story_file(path: Path, n_stories: int = 300, seed: int = 0) -> Path:
    """One .txt of TinyStories-like templated stories (names, animals, places, dialogue)."""
    rng = random.Random(seed)
    path.write_text("\n<|endoftext|>\n".join(story(rng) for _ in range(n_stories)) + "\n",
                    encoding="utf-8")
    return path


def write_big_corpus(path: Path, mbytes: float = 16.0, seed: int = 1) -> Path:
    """Many made-up words, so a large vocab is learnable and the build takes seconds
    (2 MB of distinct text, repeated: quick to write, slow enough to read and train on)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(50_000)]
    docs, size = [], 0
    while size < 2e6:
        doc = " ".join(rng.choice(words) for _ in range(200)) + "."
        docs.append(doc)
        size += len(doc) + 16
    block = ("\n<|endoftext|>\n".join(docs) + "\n<|endoftext|>\n").encode("utf-8")
    path.write_bytes(block * max(1, round(mbytes * 1e6 / len(block))))
    return path


# --- experiment files ---------------------------------------------------------------------

# an MLP variant: GELU's shape with a ReLU, logging its hidden activations; importing it writes
# a marker file when $EXPERIMENT_MARKER names one (to see whether a run's code was executed)
MINE = '''
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.experiments import register
from workbench.model.base import Linear, LoggingModule

if os.environ.get("EXPERIMENT_MARKER"):
    Path(os.environ["EXPERIMENT_MARKER"]).write_text("ran")


@register("mlp", "mine", "relu MLP that logs its hidden layer")
class Mine(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = Linear(cfg.dim, 4 * cfg.dim, bias=False)
        self.w2 = Linear(4 * cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.w1(x))
        self.log("mine_hidden", h)
        return self.w2(h)
'''


# an MLP whose hidden width is an option of its own (``model.wide``): `wide` x dim hidden units,
# and a string option with choices
WIDE = '''
import torch
import torch.nn.functional as F

from workbench.experiments import option, register
from workbench.model.base import Linear, LoggingModule


@register("mlp", "wide", "relu MLP of wide x dim hidden units",
          options={"wide": option(2, "hidden units per model dimension", min=1, max=16),
                   "wide_note": option("a", "a string option", choices=("a", "b"))})
class Wide(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.wide * cfg.dim, bias=False)
        self.w2 = Linear(cfg.wide * cfg.dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.w2(F.relu(self.w1(x)))
'''


# a whole-model variant (``model.arch``) with a field of its own: the embeddings scaled before
# the blocks, logged
WHOLE = '''
import math

from workbench.experiments import option, register
from workbench.model import Transformer


@register("model", "scaled_emb", "token embeddings times emb_scale * sqrt(dim)",
          options={"emb_scale": option(1.0, "the embeddings' scale over sqrt(dim)", min=0.0, max=100.0)})
class ScaledEmb(Transformer):
    def blocks(self, x, idx, rope, mask, kv_cache):
        x = x * (self.config.emb_scale * math.sqrt(self.config.dim))
        self.log("scaled_emb", x)
        return super().blocks(x, idx, rope, mask, kv_cache)
'''


# --- the one tiny model config ------------------------------------------------------------

# the debug preset shrunk to the tests' tokenizers (vocab 400) and a short window
TINY_MODEL = dict(vocab_size=400, max_seq_len=32, dim=32, n_layers=2)
TINY_TRAIN = dict(batch_size=4, max_steps=12, warmup_steps=2, eval_interval=6, eval_batches=2,
                  log_interval=1, checkpoint_interval=6, keep_last=2, num_threads=1)
# the same shrink as `--set` arguments, for the CLI tests
SETS = ["--set", "model.vocab_size=400", "--set", "model.max_seq_len=32", "--set", "train.batch_size=4"]


def tiny_config(model: dict | None = None, **train):
    """The tiny config every test trains: ``TINY_MODEL`` and ``TINY_TRAIN`` on the debug preset,
    with a test's own ``model`` and ``train`` changes."""
    from workbench.config.schema import load_config

    cfg = load_config("debug")
    cfg.model = cfg.model.replace(**{**TINY_MODEL, **(model or {})})
    cfg.train = cfg.train.replace(**{**TINY_TRAIN, **train})
    return cfg


def losses(events) -> list[float]:
    """The loss of every step of a run's events."""
    return [e.loss for e in events if isinstance(e, Stepped)]


# --- runs trained by the real engine -------------------------------------------------------


def make_run(ws, name: str, seed: int = 0, **model):
    """Train run ``name`` in ``ws`` (tokenizer ``tok``, the ``built`` fixture) for one step of
    the tiny config with a 64-token window and ``model`` changes; returns (run, its model loaded
    from the checkpoint, in eval mode): what `workbench train` writes, in well under a second."""
    from workbench.runs.folder import get_run
    from workbench.runs.load import load_run_model
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer

    cfg = tiny_config({"max_seq_len": 64, **model}, batch_size=2, max_steps=1, warmup_steps=0, eval_interval=1,
                      eval_batches=1, log_interval=1, checkpoint_interval=1, seed=seed, lr=1e-3, min_lr=1e-4)
    source = tokenizer_info(ws, "tok").settings["data"]
    state = Trainer.new(ws, cfg, "tok", source, name=name).run()
    assert state["state"] == "finished", state
    run = get_run(ws, name)
    return run, load_run_model(run)[0]


TRAINED_RUN = "real"  # the session run of tests/conftest.py (the ``trained`` fixtures)
TINY_RUN = "tiny"  # the app tests' run (``tiny_run_root``)
_TINY_ROOTS: dict = {}


def tiny_run_config():
    """Run ``tiny``'s config: 20 steps, checkpoints at 10 and 20."""
    return tiny_config(max_steps=20, eval_interval=10, log_interval=5, checkpoint_interval=10, keep_last=2, seed=0)


def tiny_run_root(tmp_path_factory, built_root: Path, story_file: Path) -> Path:
    """Session-wide: a copy of the app tests' built workspace with run ``tiny`` trained in it."""
    if built_root not in _TINY_ROOTS:
        from workbench.training.trainer import Trainer

        root = tmp_path_factory.mktemp("trained")
        shutil.rmtree(root)
        shutil.copytree(built_root, root)
        state = Trainer.new(Workspace.at(root), tiny_run_config(), "stories-400", str(story_file), name=TINY_RUN).run()
        assert state["state"] == "finished", state
        _TINY_ROOTS[built_root] = root
    return _TINY_ROOTS[built_root]


def copy_ws(root: Path, tmp_path: Path) -> Workspace:
    """A test's own copy of a workspace folder."""
    dest = tmp_path / "ws"
    shutil.copytree(root, dest)
    return Workspace.at(dest)


# --- recorded training streams (fixed numbers, so snapshots match on every machine) ---------


def log_row(step: int, seed: float = 0.0, scale: float = 1.0) -> dict:
    loss = scale * (1.0 + 5.0 * math.exp(-step / 40)) + 0.15 * math.sin(step * 1.7 + seed)
    lr = 0.003 * min(1.0, step / 10) * (0.55 + 0.45 * math.cos(math.pi * step / 200))
    return {"kind": "train", "step": step, "tokens": step * 512, "loss": loss, "lr": lr,
            "grad_norm": 0.5 + 0.1 * math.cos(step), "tok_s": 9000 + 400 * math.sin(step / 7),
            "elapsed": step * 0.06, "mem": 300 * 2**20, "progress": step / 200}


def eval_row(step: int, scale: float = 1.0) -> dict:
    v = scale * (1.1 + 5.0 * math.exp(-step / 45))
    return {"kind": "eval", "step": step, "tokens": step * 512, "elapsed": step * 0.06, "val_loss": v,
            "val_ppl": math.exp(v), "bpb": v / math.log(2) / 2.5, "top1": 0.3, "top5": 0.6}


def train_events(upto: int = 120) -> list[TrainEvent]:
    evs = [Started(run="debug-recorded", params=30_000, device="cpu", precision="fp32", world=1, resumed_from=None,
                   precision_reason="auto; bf16 is not faster on this CPU (bf16 matmul 50 vs fp32 100 GFLOP/s, 0.50x)",
                   attention="sdpa", attention_reason="measured fwd+bwd: sdpa 1.00 ms, explicit 2.00 ms",
                   tokens_per_step=512, data="stories")]
    for step in range(1, upto + 1):
        r = log_row(step)
        evs.append(Stepped(step=step, loss=r["loss"], lr=r["lr"], tokens=r["tokens"], grad_norm=r["grad_norm"],
                           elapsed=r["elapsed"]))
        if step % 5 == 0:
            evs.append(Logged(step=step, row=r))
        if step % 50 == 0:
            evs.append(Evaluated(step=step, row=eval_row(step)))
            evs.append(Sampled(step=step, texts=["Once upon a time, there was a little cat named Tom.",
                                                 "Lily liked to play in the park with her ball."]))
        if step % 100 == 0:
            evs.append(CheckpointSaved(step=step, name=f"step_{step:06d}"))
    return evs


def train_run(ws, name: str, lr: float, steps: int = 20) -> None:
    """Run ``name`` trained by the real engine on the tokenizer's corpus (``tiny_run_config``,
    learning rate ``lr``): what `workbench train` writes, checkpoints included."""
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer

    cfg = tiny_run_config()
    cfg.train = cfg.train.replace(lr=lr, min_lr=lr / 10, max_steps=steps)
    state = Trainer.new(ws, cfg, "stories-400", tokenizer_info(ws, "stories-400").settings["data"], name=name).run()
    assert state["state"] == "finished", state


def train_debug_run(ws, name: str, stories, eval_batches: int = 2, **model) -> None:
    """Run ``name``: the debug preset with vocab 400 and ``model``'s changes, trained by the real
    engine for 200 steps on ``stories`` with tokenizer ``tok`` (varied greedy text: what the
    export and import tests compare across formats)."""
    from workbench.config.schema import load_config
    from workbench.training.trainer import Trainer

    cfg = load_config("debug")
    cfg.model = cfg.model.replace(vocab_size=400, **model)
    cfg.train = cfg.train.replace(max_steps=200, warmup_steps=5, eval_interval=200, eval_batches=eval_batches,
                                  log_interval=50, checkpoint_interval=200, num_threads=1, seed=0)
    state = Trainer.new(ws, cfg, "tok", str(stories), name=name).run()
    assert state["state"] == "finished", state


def write_run(ws, name: str, scale: float, steps: int = 200, created: str = "2024-01-02T03:04:05") -> None:
    """For snapshots only: a run the real engine trained (``train_run``), whose metrics, status
    and date are then replaced by fixed numbers, so the picture is the same on every machine
    (real tokens/s, dates and float rounding are not)."""
    import yaml

    train_run(ws, name, lr=3e-3, steps=2)
    path = ws.run_path(name)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["created"] = created
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = []
    for step in range(5, steps + 1, 5):
        rows.append({**log_row(step, seed=scale, scale=scale), "progress": step / steps})
        if step % 25 == 0:
            rows.append(eval_row(step, scale))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = json.loads((path / "status.json").read_text())
    (path / "status.json").write_text(json.dumps({**status, "state": "finished", "pid": 0, "step": steps}))


# --- Pilot helpers for the app tests --------------------------------------------------------


async def wait_for(pilot, cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def type_into(pilot, text: str):
    await pilot.press("ctrl+u")  # clear an Input (delete everything left of the cursor)
    await pilot.press(*[{" ": "space"}.get(c, c) for c in text])


async def focus(pilot, app, widget_id: str, limit: int = 60):
    """Press tab (or shift+tab, whichever is shorter) until the widget has focus: keyboard
    only, like a user who can see the screen."""
    for _ in range(limit):
        if app.focused is not None and app.focused.id == widget_id:
            return
        chain = app.screen.focus_chain
        ids = [w.id for w in chain]
        here = chain.index(app.focused) if app.focused in chain else 0
        there = ids.index(widget_id) if widget_id in ids else here + 1
        forward = (there - here) % len(chain)
        await pilot.press("tab" if forward <= len(chain) - forward else "shift+tab")
    raise AssertionError(f"could not reach #{widget_id} with tab")


async def open_config_pane(pilot, app):
    """Show the Config pane and wait until its form holds the preset; the pane."""
    await pilot.press("2")
    pane = app.query_one("#config-pane")
    await wait_for(pilot, lambda: pane.base is not None, what="the preset")
    return pane


# --- training over two "nodes" on this machine ----------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_nodes(ws, corpus_dir, name: str, *train_args: str, env: dict | None = None, stderr_dir: Path):
    """Two ``torchrun --nnodes 2`` launchers of one process each, meeting over loopback through a
    c10d rendezvous, training run ``name`` (tokenizer ``tok``, the tiny ``SETS``): what two real
    machines sharing the workspace folder run. Each launcher is a session of its own, so a test
    can end one "node" (launcher and worker) with ``os.killpg``. Returns their Popen objects; each
    one's stderr goes to ``stderr_dir/node<i>.log``."""
    import subprocess
    import sys

    port = free_port()
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"wb-{name}",
               "-m", "workbench", "--workspace", str(ws.root), "train", "--config", "debug", "--tokenizer", "tok",
               "--data", str(corpus_dir), "--name", name, *SETS, "--set", "train.num_threads=1", *train_args]
        log = open(stderr_dir / f"node{i}.log", "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}))
        log.close()
    return procs

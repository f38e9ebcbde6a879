"""Shared test fixtures: hermetic corpora made by the tests, the real TinyStories sample when
present (``WORKBENCH_TINYSTORIES``, default ``../shared/data/tinystories``), workspaces."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest

from workbench.workspace import Workspace

# The suite must not depend on the machine it runs on: the probe cache (workbench.machine.probe) lives
# in a folder of this session's, holding an injected "bf16 is not faster here" measurement, so
# `precision: auto` means fp32 everywhere (subprocesses inherit the variable). Tests of the
# choice itself inject their own measurements with ``inject_matmul``.
os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-test-cache-")


def inject_matmul(bf16_speedup: float) -> None:
    """Pretend this machine measured bf16 matmuls at ``bf16_speedup`` x fp32."""
    from workbench.machine.probe import write_cached

    write_cached({"matmul": {"fp32_gflops": 100.0, "bf16_gflops": 100.0 * bf16_speedup,
                             "bf16_speedup": bf16_speedup, "shape": [2048, 256, 1024], "threads": 1,
                             "native_bf16_flag": None, "measured": "injected by the tests"}})


def inject_speed(law: dict, vocab: int, tok_s_of, threads: int | None = None) -> None:
    """Pretend this machine measured ``tok_s_of(dim, n_layers)`` training tokens/s for every
    planner candidate (precision auto, the law's optimizer, ``threads`` or torch's own)."""
    import torch

    from workbench.planning import planner
    from workbench.machine.probe import write_cached

    opt = law["recipe"].get("train", {}).get("optimizer", "adamw")
    threads = threads or torch.get_num_threads()
    write_cached({planner._throughput_key(planner.shape_config(dim, layers, vocab, law["recipe"]), planner.BATCH,
                                          "auto", threads, opt):
                  {"tok_s": tok_s_of(dim, layers), "precision": "fp32", "attention": "sdpa", "threads": threads}
                  for dim, layers in planner.SHAPES})


inject_matmul(0.5)

REPO = Path(__file__).resolve().parent.parent
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


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.at(tmp_path / "ws")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder with train.txt and valid.txt of synthetic stories."""
    d = tmp_path_factory.mktemp("corpus")
    write_txt(d / "train.txt", make_stories(600, seed=1))
    write_txt(d / "valid.txt", make_stories(60, seed=2))
    return d


@pytest.fixture(scope="session")
def built(tmp_path_factory, corpus):
    """A workspace holding tokenizer ``tok`` (vocab 400, byte fallback) built on ``corpus``."""
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    w = Workspace.at(tmp_path_factory.mktemp("ws"))
    build_tokenizer(w, "tok", TokenizerSettings(vocab_size=400, data=str(corpus), sample_mb=5))
    return w


@pytest.fixture(scope="session")
def ts_dir() -> Path:
    d = tinystories_dir()
    if d is None:
        pytest.skip("the TinyStories sample is not present (set WORKBENCH_TINYSTORIES)")
    return d


TRAINED_RUN = "real"


def trained_cfg():
    """The session run's config: the debug preset shrunk to the test tokenizer, with dropout so
    that evaluation must switch it off, checkpoints at steps 6 and 12, evaluations at 6 and 12."""
    from workbench.config.schema import load_config

    cfg = load_config("debug")
    cfg.model = cfg.model.replace(vocab_size=400, max_seq_len=32, dim=32, n_layers=2, dropout=0.1)
    cfg.train = cfg.train.replace(batch_size=4, max_steps=12, warmup_steps=2, eval_interval=6, eval_batches=2,
                                  log_interval=2, checkpoint_interval=6, keep_last=3, num_threads=1, seed=3)
    return cfg


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory, built, corpus) -> Path:
    """A workspace (tokenizer ``tok``) where the real engine trained run ``real`` for 12 steps:
    what `workbench train` writes — config, tokenizer copy, data folder, metrics, samples,
    status, checkpoints ``step_000006`` and ``step_000012``. Read-only: use ``trained``."""
    import shutil

    from workbench.training.trainer import Trainer

    root = tmp_path_factory.mktemp("trained") / "ws"
    shutil.copytree(built.root, root)
    state = Trainer.new(Workspace.at(root), trained_cfg(), "tok", str(corpus), name=TRAINED_RUN).run()
    assert state["state"] == "finished" and state["checkpoint"] == "step_000012", state
    return root


@pytest.fixture
def trained(trained_root, tmp_path) -> Workspace:
    """A copy of ``trained_root`` of this test's own, to change or damage freely."""
    import shutil

    shutil.copytree(trained_root, tmp_path / "trained")
    return Workspace.at(tmp_path / "trained")

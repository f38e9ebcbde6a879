"""Shared test fixtures: hermetic corpora made by the tests, the real TinyStories sample when
present (``WORKBENCH_TINYSTORIES``, default ``../shared/data/tinystories``), workspaces, and the
session run ``real``. The helpers they are made from are in ``helpers.py``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from helpers import TRAINED_RUN, inject_matmul, make_stories, tinystories_dir, tiny_config, write_txt
from workbench.workspace import Workspace

# The suite must not depend on the machine it runs on: the probe cache (workbench.machine.probe) lives
# in a folder of this session's, holding an injected "bf16 is not faster here" measurement, so
# `precision: auto` means fp32 everywhere (subprocesses inherit the variable). Tests of the
# choice itself inject their own measurements with ``inject_matmul``.
os.environ["WORKBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="workbench-test-cache-")
# The commands' plain progress lines (stderr is no terminal here) would sit between the lines
# tests read; tests/test_cli_foundations.py turns them on to test them.
os.environ["WORKBENCH_QUIET"] = "1"

inject_matmul(0.5)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.at(tmp_path / "ws")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A folder with train.txt and valid.txt of random-word stories (``make_stories``)."""
    d = tmp_path_factory.mktemp("corpus")
    write_txt(d / "train.txt", make_stories(600, seed=1))
    write_txt(d / "valid.txt", make_stories(60, seed=2))
    return d


@pytest.fixture(scope="session")
def built(tmp_path_factory, corpus_dir):
    """A workspace holding tokenizer ``tok`` (vocab 400, byte fallback) built on ``corpus``."""
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    w = Workspace.at(tmp_path_factory.mktemp("ws"))
    build_tokenizer(w, "tok", TokenizerSettings(vocab_size=400, data=str(corpus_dir), sample_mb=5))
    return w


@pytest.fixture(scope="session")
def ts_dir() -> Path:
    d = tinystories_dir()
    if d is None:
        pytest.skip("the TinyStories sample is not present (set WORKBENCH_TINYSTORIES)")
    return d



def trained_cfg():
    """The session run's config: the debug preset shrunk to the test tokenizer, with dropout so
    that evaluation must switch it off, checkpoints at steps 6 and 12, evaluations at 6 and 12."""
    return tiny_config({"dropout": 0.1}, log_interval=2, keep_last=3, seed=3)


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory, built, corpus_dir) -> Path:
    """A workspace (tokenizer ``tok``) where the real engine trained run ``real`` for 12 steps:
    what `workbench train` writes — config, tokenizer copy, data folder, metrics, samples,
    status, checkpoints ``step_000006`` and ``step_000012``. Read-only: use ``trained``."""
    import shutil

    from workbench.training.trainer import Trainer

    root = tmp_path_factory.mktemp("trained") / "ws"
    shutil.copytree(built.root, root)
    state = Trainer.new(Workspace.at(root), trained_cfg(), "tok", str(corpus_dir), name=TRAINED_RUN).run()
    assert state["state"] == "finished" and state["checkpoint"] == "step_000012", state
    return root


@pytest.fixture
def trained(trained_root, tmp_path) -> Workspace:
    """A copy of ``trained_root`` of this test's own, to change or damage freely."""
    import shutil

    shutil.copytree(trained_root, tmp_path / "trained")
    return Workspace.at(tmp_path / "trained")


@pytest.fixture
def clean_registry():
    """The registry of variants as it was before the test: a test's experiment files register
    variants that must not outlive it."""
    from workbench.experiments import registry

    state = registry.saved()
    yield
    registry.restore(state)

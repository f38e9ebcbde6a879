"""What the panes write, as plain functions of what they know (no app here): the Train pane's
device line, resume hint, preparation header and samples; the Chat pane's copied transcript; the
Tokenizer pane's table row; and the machine the Config pane probes, even with a broken driver."""

from __future__ import annotations

from types import SimpleNamespace

from workbench.config.schema import TrainConfig
from workbench.machine.sysinfo import FixedProbe, machine
from workbench.tui.widgets.chat_views import transcript
from workbench.tui.widgets.tokenizer_views import stats_cells
from workbench.tui.widgets.train_views import devices_text, prepare_text, resume_hint, samples_text

CPU = {"device": "cpu", "cores": 8, "memory_bytes": 16 * 1024**3, "precision": "bf16", "bf16_speedup": 2.04}
GPU = {"device": "cuda:0", "name": "H100", "memory_bytes": 80 * 1024**3}


def test_devices_in_one_line_with_fewer_words_when_short():
    assert devices_text([CPU, GPU], short=False) == ("cpu: 8 cores, 16.00 GiB RAM, auto bf16 (bf16 matmul 2.0× fp32)"
                                                     " · cuda:0: H100, 80.00 GiB")
    assert devices_text([CPU], short=True) == "cpu: 8 cores, 16.00 GiB, auto bf16 (2.0× fp32)"
    unmeasured = {**CPU, "bf16_speedup": None, "memory_bytes": None}
    assert devices_text([unmeasured], short=False) == "cpu: 8 cores, ? RAM, auto bf16 (not measured)"


def test_resume_hint_and_preparation_say_where_things_stand():
    info = {"name": "first", "train": TrainConfig(max_steps=200), "done": {"steps": 200, "tokens": 1000,
                                                                           "minutes": 1.25}}
    assert resume_hint(info, "steps") == ("resume first from 200 steps: set the budget (in all) to train on, "
                                          "then ctrl+r")
    assert resume_hint(info, "minutes").startswith("resume first from 1.2 minutes: ")
    assert prepare_text("train", 1, 4, "tokenizing") == "preparing data: train 25% tokenizing"
    assert prepare_text("val", 3, None, "reading") == "preparing data: val reading"


def test_samples_are_cut_and_escaped():
    text = samples_text(50, ["  [b]bold?[/b] " + "x" * 500, "two"])
    assert text.startswith("[b]samples at step 50[/b]\n› \\[b]bold?\\[/b] ")
    assert text.count("x") == 400 - len("[b]bold?[/b] ") and text.endswith("\n› two")


def test_a_transcript_labels_replies_only_when_there_are_two():
    a = SimpleNamespace(prompt="Once", stream=SimpleNamespace(label="r1 · step_1", text=" upon"))
    b = SimpleNamespace(prompt="Once", stream=SimpleNamespace(label="r2 · step_2", text=" there"))
    assert transcript([a]) == "Once upon"
    assert transcript([a, b]) == "[r1 · step_1]\nOnce upon\n\n[r2 · step_2]\nOnce there"


def test_a_tokenizers_row_marks_what_it_lacks():
    assert stats_cells({"vocab_size": 512, "alphabet_size": 60, "bytes_per_token": 2.345, "build_seconds": 1.5}) == [
        "512", "60", "2.35", "1.50"]
    assert stats_cells({}) == ["—", "—", "—", "—"]


def test_a_broken_driver_gives_unknown_memory_not_an_error():
    class Broken(FixedProbe):
        def available(self, device):
            raise RuntimeError("driver gone")

    assert machine(FixedProbe(), "auto") == ("cpu", FixedProbe().available("cpu"))
    assert machine(Broken(), "cuda") == ("cuda", {"available": 0, "total": 0, "note": "unknown: driver gone"})

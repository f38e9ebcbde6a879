"""What the Train pane lists and `workbench train` prints about a run (``train_notices``), and
how many processes the pane may start (``train_request.max_procs``)."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.training.trainer import Event
from workbench.training.notices import notices, start_lines
from workbench.training.request import MAX_PROCS, max_procs, parse_procs

START = {"run": "r1", "params": 30_000, "device": "cpu", "world": 2, "resumed_from": "step_000200",
         "precision": "bf16", "precision_reason": "bf16 matmul 4.0x fp32", "attention": "sdpa",
         "attention_reason": "measured"}


def test_start_lines_say_size_device_processes_precision_and_attention():
    assert start_lines(START) == ["30,000 parameters on cpu, 2 process(es), resumed from step_000200",
                                  "precision bf16 (bf16 matmul 4.0x fp32)", "attention sdpa (measured)"]
    # a run followed from its folder may lack the reasons and the kernel: nothing is made up
    assert start_lines({"params": 5, "device": "cuda", "precision": "fp32"}) == [
        "5 parameters on cuda, 1 process(es)", "precision fp32"]


@pytest.mark.parametrize("kind, data, step, said", [
    ("start", START, 0, ["run r1: 30,000 parameters on cpu, 2 process(es), resumed from step_000200",
                         "precision bf16 (bf16 matmul 4.0x fp32)", "attention sdpa (measured)"]),
    ("eval", {"val_loss": 1.23456, "val_ppl": 3.4367, "bpb": 0.5}, 50,
     ["step 50: val loss 1.2346, ppl 3.44, 0.500 bits/byte"]),
    ("eval", {"val_loss": 2.0}, 10, ["step 10: val loss 2.0000, ppl 0.00"]),
    ("checkpoint", {"name": "step_000100"}, 100, ["checkpoint saved: step_000100"]),
    ("message", {"text": "measuring attention kernels"}, 0, ["measuring attention kernels"]),
    ("done", {"state": "stopped", "step": 7, "checkpoint": "step_000007"}, 7,
     ["stopped: step 7, checkpoint step_000007"]),
    ("error", {"message": "loss is nan"}, 3, ["error: loss is nan"]),
    ("step", {"loss": 1.0}, 3, []),
    ("log", {"loss": 1.0}, 3, []),
    ("sample", {"texts": ["a"]}, 3, []),
])
def test_each_event_says_what_a_reader_needs(kind, data, step, said):
    assert notices(Event(kind, step, data)) == said


def test_a_done_event_without_a_step_takes_the_readers():
    """A run followed from its folder (ChildRun) ends with a done event that carries no step."""
    assert notices(Event("done", 0, {"state": "finished"}), step=42) == ["finished: step 42"]


CPU = {"device": "cpu", "cores": 8}


@pytest.mark.parametrize("devices, limit", [
    ([CPU], (8, "one per CPU core; this machine has 8")),
    ([CPU, {"device": "cuda:0"}, {"device": "cuda:1"}], (2, "one per GPU; this machine has 2")),
    ([{"device": "cpu", "cores": 512}], (MAX_PROCS, "one per CPU core; this machine has 512")),
    ([], (MAX_PROCS, "")),  # the devices are not known yet
    ([{"device": "cpu", "cores": "?"}], (MAX_PROCS, "")),  # they could not be listed
])
def test_one_process_per_gpu_else_per_core(devices, limit):
    assert max_procs(devices) == limit


def test_processes_are_parsed_within_the_limit_and_refused_naming_it():
    assert parse_procs("", [CPU]) == 1 and parse_procs(" 8 ", [CPU]) == 8
    for text in ("9", "0", "two", "1.5"):
        with pytest.raises(WorkbenchError) as e:
            parse_procs(text, [CPU])
        assert str(e.value) == (f"processes {text!r} is not allowed: expected an integer from 1 to 8 "
                                "(one per CPU core; this machine has 8)")
    with pytest.raises(WorkbenchError, match=r"from 1 to 64$"):
        parse_procs("65", [])

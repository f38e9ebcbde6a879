"""What the Train pane lists and `workbench train` prints about a run (``training.notices``), and
how many processes the pane may start (``training.request.max_procs``)."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.training.events import (CheckpointSaved, Evaluated, Failed, Finished, Logged, Notice, Paused, Resumed,
                                       Sampled, Started, Stepped)
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


@pytest.mark.parametrize("ev, said", [
    (Started(**START), ["run r1: 30,000 parameters on cpu, 2 process(es), resumed from step_000200",
                        "precision bf16 (bf16 matmul 4.0x fp32)", "attention sdpa (measured)"]),
    (Evaluated(step=50, row={"val_loss": 1.23456, "val_ppl": 3.4367, "bpb": 0.5}),
     ["step 50: val loss 1.2346, ppl 3.44, 0.500 bits/byte"]),
    (Evaluated(step=10, row={"val_loss": 2.0}), ["step 10: val loss 2.0000, ppl 0.00"]),
    (CheckpointSaved(step=100, name="step_000100"), ["checkpoint saved: step_000100"]),
    (Notice(text="measuring attention kernels"), ["measuring attention kernels"]),
    (Paused(step=4), ["paused"]),
    (Resumed(step=4), ["resumed"]),
    (Finished(step=7, state="stopped", checkpoint="step_000007"), ["stopped: step 7, checkpoint step_000007"]),
    (Failed(step=3, message="loss is nan"), ["error: loss is nan"]),
    (Stepped(step=3, loss=1.0, lr=0.1, tokens=3, grad_norm=1.0, elapsed=0.1), []),
    (Logged(step=3, row={"loss": 1.0}), []),
    (Sampled(step=3, texts=["a"]), []),
], ids=lambda x: type(x).__name__ if not isinstance(x, list) else "")
def test_each_event_says_what_a_reader_needs(ev, said):
    assert notices(ev) == said


def test_a_done_event_without_a_step_takes_the_readers():
    """A run followed from its folder (follower.ChildRun) ends with a Finished event that carries no step."""
    assert notices(Finished(state="finished"), step=42) == ["finished: step 42"]


def test_a_followed_start_keeps_the_facts_it_knows():
    """The follower builds Started from a status file: unknown keys are left aside, missing ones stay unset."""
    ev = Started.from_facts(run="r1", params=5, device="cuda", precision="fp32", compile_seconds=3.0)
    assert (ev.run, ev.params, ev.device, ev.precision, ev.attention) == ("r1", 5, "cuda", "fp32", None)
    assert notices(ev) == ["run r1: 5 parameters on cuda, 1 process(es)", "precision fp32"]


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


def test_a_runs_history_comes_back_as_typed_events(trained):
    """What the Train pane shows of a resumed run's past: each metrics row as the event it
    stands for (eval rows Evaluated, train rows Logged), up to the latest checkpoint."""
    from helpers import TRAINED_RUN
    from workbench.runs.folder import get_run
    from workbench.training.follower import read_history

    rows = get_run(trained, TRAINED_RUN).metrics()
    assert {r["kind"] for r in rows} == {"train", "eval"} and max(r["step"] for r in rows) == 12
    evs = read_history(trained, TRAINED_RUN)
    assert [type(e) for e in evs] == [Evaluated if r["kind"] == "eval" else Logged for r in rows]
    assert all(e.row == r and e.step == r["step"] for e, r in zip(evs, rows))

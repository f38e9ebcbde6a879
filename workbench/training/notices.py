"""The lines a user reads about a training run, made from its events (``training.events``): what
``workbench train`` prints when a run starts, and what the Train pane lists as notices.

Made once here so both clients say the same thing in the same words. Plain text, without torch,
so the pane makes them on the UI thread.
"""

from __future__ import annotations

import dataclasses

from workbench.training.events import (CheckpointSaved, Evaluated, Failed, Finished, Notice, Paused, Resumed, Started,
                                       TrainEvent)


def start_lines(d: dict) -> list[str]:
    """A start event's facts: the model's size, device and processes (and the checkpoint a
    resume goes on from), then the precision and the attention kernel with why each was chosen.
    A run followed from its folder may lack some of them, so every one is optional."""
    resumed = f", resumed from {d['resumed_from']}" if d.get("resumed_from") else ""
    lines = [f"{d.get('params', 0):,} parameters on {d.get('device')}, {d.get('world', 1)} process(es){resumed}",
             f"precision {d.get('precision')}" + (f" ({d['precision_reason']})" if d.get("precision_reason") else "")]
    if d.get("attention"):
        lines.append(f"attention {d['attention']} ({d.get('attention_reason') or ''})")
    return lines


def notices(ev: TrainEvent, step: int = 0) -> list[str]:
    """The notices one event adds: none for the numbers that charts and headers show (steps,
    train rows, samples). ``step`` is the last step the reader saw: a run followed from its
    folder (``follower.ChildRun``) ends with a Finished event that carries none."""
    match ev:
        case Started():
            first, *rest = start_lines(dataclasses.asdict(ev))
            return [f"run {ev.run}: {first}", *rest]
        case Evaluated(row=d):
            return [f"step {ev.step}: val loss {d['val_loss']:.4f}, ppl {d.get('val_ppl', 0):.2f}"
                    + (f", {d['bpb']:.3f} bits/byte" if d.get("bpb") is not None else "")]
        case CheckpointSaved(name=name):
            return [f"checkpoint saved: {name}"]
        case Notice(text=text):
            return [text]
        case Paused():
            return ["paused"]
        case Resumed():
            return ["resumed"]
        case Finished(state=state, checkpoint=ck):
            return [f"{state}: step {ev.step or step}" + (f", checkpoint {ck}" if ck else "")]
        case Failed(message=message):
            return [f"error: {message}"]
    return []

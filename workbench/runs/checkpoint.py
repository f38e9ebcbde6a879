"""Checkpoints of a run, written so that a process killed at any moment leaves the previous one
loadable.

``checkpoints/step_000100/`` holds ``model.safetensors`` (weights only) and ``state.pt``
(optimizer, schedule position, RNG states and data position; loadable with
``weights_only=True``). A checkpoint is written into a temporary folder that is renamed into
place, then the ``latest`` pointer (a small text file) is replaced atomically, then old
checkpoints beyond ``keep_last`` are removed. Loading checks everything (shapes, and that every
weight is finite) and names the file at fault. The pointer is a cache: with no checkpoint named,
a verb uses the one it names when that one is whole, else the newest one that is, and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from workbench import fileio
from workbench.errors import WorkbenchError

CKPT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
_NAME_RE = re.compile(r"^step_(\d{6,})$")


def ckpt_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[str]:
    """Complete checkpoint folders, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    names = [p.name for p in d.iterdir() if p.is_dir() and _NAME_RE.match(p.name) and (p / WEIGHTS).is_file()]
    return sorted(names, key=lambda n: int(_NAME_RE.match(n).group(1)))


def latest_name(run_dir: Path) -> str | None:
    """What the ``latest`` pointer names, as written (None when it is missing or empty)."""
    p = Path(run_dir) / LATEST
    if not p.is_file():
        return None
    try:
        return p.read_text(encoding="utf-8").strip() or None
    except UnicodeDecodeError:
        return None


def default_name(run_dir: Path) -> str | None:
    """The checkpoint a verb uses when none is named: the one ``latest`` names when that folder
    is there, else the newest one (the pointer is a cache of this, not the truth). Cheap: no
    file is read beyond the pointer; loading checks the rest (see ``load_weights``)."""
    names, _ = _candidates(run_dir)
    return names[0] if names else None


def _candidates(run_dir: Path) -> tuple[list[str], str | None]:
    """The checkpoints to try when none is named, in order, and why the pointer is not first:
    ``latest``'s when it names a complete folder, then the others newest first."""
    names = list_checkpoints(run_dir)
    pointed = latest_name(run_dir)
    if pointed in names:
        return [pointed, *(n for n in reversed(names) if n != pointed)], None
    p = Path(run_dir) / LATEST
    if not p.is_file():
        why = f"the '{LATEST}' pointer is missing"
    elif pointed is None:
        why = f"the '{LATEST}' pointer is empty"
    else:
        why = f"the '{LATEST}' pointer names {pointed!r}, which is not a complete checkpoint"
    return list(reversed(names)), why


def quick_problem(run_dir: Path, name: str) -> str | None:
    """Whether checkpoint ``name`` is visibly damaged, read cheaply (for `runs list`): a file
    missing or empty, a weights file shorter than its header says, a state file that is not a
    whole archive. Non-finite weights are found only by loading (``load_weights``)."""
    import zipfile

    d = Path(run_dir) / CKPT_DIR / name
    try:
        with open(d / WEIGHTS, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(fh.read(n)) if 0 < n < 100_000_000 else None
            size = os.fstat(fh.fileno()).st_size
        if not isinstance(header, dict):
            return f"{d / WEIGHTS} is truncated or not a safetensors file"
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if size < 8 + n + end:
            return f"{d / WEIGHTS} is truncated ({size:,} of {8 + n + end:,} bytes)"
    except FileNotFoundError:
        return f"{d / WEIGHTS} is missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{d / WEIGHTS} is damaged ({type(e).__name__})"
    st = d / STATE
    if not st.is_file():
        return f"{st} is missing"
    try:
        if st.stat().st_size == 0 or not zipfile.is_zipfile(st):
            return f"{st} is truncated or empty"
    except OSError as e:
        return f"cannot read {st}: {e.strerror}"
    return None


def _state_dict_for_save(model) -> dict:
    # safetensors refuses tensors that share memory (tied embeddings): store each once.
    sd, seen = {}, set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.device.type != "meta" else k
        if key in seen:
            continue
        seen.add(key)
        sd[k] = v.detach().to("cpu").contiguous()
    return sd


def save_checkpoint(run_dir: Path, step: int, model, state: dict, keep_last: int) -> str:
    """Write checkpoint ``step`` and point ``latest`` at it; returns its name."""
    import torch
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = ckpt_name(step)
    tmp = root / f".{name}{fileio.TMP_MARK}{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        try:
            save_file(_state_dict_for_save(model), str(tmp / WEIGHTS), metadata={"step": str(step)})
            torch.save(state, tmp / STATE)
        except RuntimeError as e:  # torch and safetensors report a failed write as RuntimeError
            import errno

            first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise OSError(errno.EIO, f"the write failed, the disk may be full or a file size limit reached ({first})",
                          str(root / name)) from None
        for f in (WEIGHTS, STATE):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        final = root / name
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fileio._fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fileio.write_text(run_dir / LATEST, name + "\n")
    prune(run_dir, keep_last)
    return name


def prune(run_dir: Path, keep_last: int) -> None:
    """Remove old checkpoints and leftovers of interrupted writes; never the latest one."""
    root = Path(run_dir) / CKPT_DIR
    latest = latest_name(run_dir)
    names = list_checkpoints(run_dir)
    keep = set(names[-keep_last:]) | ({latest} if latest else set())
    for p in root.iterdir():
        stale_tmp = fileio.is_stale_temp(p)  # a killed writer's; never a live one's
        if (p.is_dir() and _NAME_RE.match(p.name) and p.name not in keep) or stale_tmp:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def load_weights(model, run_dir: Path, name: str | None = None, say=None) -> str:
    """Load a checkpoint's weights into ``model`` strictly; returns the checkpoint name.

    A named checkpoint is loaded or refused. With no name, the one ``latest`` names is tried
    first, then the others newest first: a missing or damaged pointer, or a checkpoint whose
    weights are truncated or not finite, falls back to the newest one that loads, and
    ``say(text)`` hears which and why. Nothing is loaded into ``model`` unless every check passes.
    """
    run_dir = Path(run_dir)
    if name is not None:
        _load_into(model, run_dir, name)
        return name
    names, why = _candidates(run_dir)
    if not names:
        raise WorkbenchError(f"run {run_dir.name!r} has no checkpoint yet")
    failed: list[str] = []
    for n in names:
        try:
            _load_into(model, run_dir, n)
        except WorkbenchError as e:
            if "does not match the model config" in str(e):
                raise  # every checkpoint of the run would say the same
            failed.append(str(e))
            continue
        if (why or failed) and say is not None:
            say(_fallback_note(run_dir, n, why, failed))
        return n
    raise WorkbenchError(failed[0] + (f"; no other checkpoint of run {run_dir.name!r} loads either"
                                      if len(failed) > 1 else ""))


def _fallback_note(run_dir: Path, used: str, why: str | None, failed: list[str]) -> str:
    reasons = ([why] if why else []) + failed
    return f"run {run_dir.name!r}: {'; '.join(reasons)}; using {used}, the newest checkpoint that loads"


def read_weights(run_dir: Path, name: str, device: str = "cpu") -> dict:
    """Checkpoint ``name``'s tensors, refused in one line naming the file when it is missing,
    corrupt, truncated or holds a value that is not finite (NaN or infinity)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / CKPT_DIR / name / WEIGHTS
    if not path.is_file():
        have = ", ".join(list_checkpoints(run_dir)) or "none"
        raise WorkbenchError(f"checkpoint {name!r} of run {Path(run_dir).name!r} is missing ({path}); available: {have}")
    try:
        sd = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WorkbenchError(f"checkpoint file {path} is corrupt or truncated: {e}") from None
    for k, t in sd.items():
        if t.is_floating_point():
            bad = (~torch.isfinite(t)).sum().item()
            if bad:
                raise WorkbenchError(f"checkpoint file {path} holds weights that are not finite: {bad:,} of "
                                     f"{t.numel():,} values of {k} are NaN or infinite")
    return sd


def _load_into(model, run_dir: Path, name: str) -> None:
    path = run_dir / CKPT_DIR / name / WEIGHTS
    sd = read_weights(run_dir, name, device=str(next(model.parameters()).device))
    why = _mismatch(model, sd)
    if why:
        raise WorkbenchError(f"checkpoint file {path} does not match the model config: {why}")
    model.load_state_dict(sd, strict=False)  # tied copies were dropped at save; all else checked above


def check_fits(model_config, run_dir: Path, name: str) -> None:
    """Refuse, before anything is built or written, weights of checkpoint ``name`` that do not fit
    a model of ``model_config``: naming the first tensor at fault and both shapes."""
    from workbench.model import build_model

    why = _mismatch(build_model(model_config, device="meta"), read_weights(run_dir, name), there=" there")
    if why:
        raise WorkbenchError(f"run {Path(run_dir).name!r}'s weights do not fit this config: {why}")


def _mismatch(model, sd: dict, there: str = "") -> str | None:
    """What keeps weights ``sd`` from loading into ``model`` strictly (None: nothing): the first
    tensor of another shape, in the model's order, and the names missing or unexpected. Tied
    parameters (one Parameter under two names) are saved once, so either name will do."""
    expected = model.state_dict()
    tied: dict[int, set[str]] = {}
    for k, prm in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(prm), set()).add(k)
    names = {k: g for g in tied.values() for k in g}
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if not names.get(k, {k}) & sd.keys()]
    unexpected = [k for k in sd if k not in expected]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{k} has shape {tuple(sd[k].shape)}{there}, the model expects {tuple(expected[k].shape)}")
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}")
    return "; ".join(parts) or None


def resumable(run_dir: Path, say=None) -> str | None:
    """The checkpoint a resume starts from: ``latest``'s when its weights load and are finite
    and its training state is whole, else the newest such one (``say`` hears which and why).
    None when the run has no checkpoint folder at all; a WorkbenchError naming the first problem
    when none is usable."""
    run_dir = Path(run_dir)
    names, why = _candidates(run_dir)
    if not names:
        return None
    failed: list[str] = []
    for n in names:
        try:
            read_weights(run_dir, n)
            load_state(run_dir, n)
        except WorkbenchError as e:
            failed.append(str(e))
            continue
        if (why or failed) and say is not None:
            say(_fallback_note(run_dir, n, why, failed).replace("the newest checkpoint that loads",
                                                                "the newest whole checkpoint"))
        return n
    raise WorkbenchError(failed[0] + (f"; no other checkpoint of run {run_dir.name!r} is whole either"
                                      if len(failed) > 1 else ""))


def load_state(run_dir: Path, name: str) -> dict:
    import pickle

    import torch

    path = Path(run_dir) / CKPT_DIR / name / STATE
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {name!r} has no training state ({path} is missing); it cannot be resumed")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WorkbenchError(f"checkpoint file {path} is corrupt or truncated: {first}") from None
    if isinstance(st, dict) and st.get("imported"):  # written by `workbench import`: weights, no training
        run = Path(run_dir).name
        raise WorkbenchError(f"run {run!r} was imported, not trained here: its checkpoint {name} holds weights and no "
                             f"training to resume; start a new run from them with `workbench train --init-from {run} "
                             "--data ... --name ...`")
    problem = _state_problem(st)
    if problem:
        raise WorkbenchError(f"checkpoint file {path} is not a training state this workbench wrote: {problem}")
    return st


# what a resume reads from state.pt, and the type each must have
_STATE_FIELDS = {"step": int, "tokens": int, "elapsed": (int, float), "optimizer": dict, "data_rng": list}


def _state_problem(st) -> str | None:
    import torch

    if not isinstance(st, dict):
        return f"it holds a {type(st).__name__}, not a mapping"
    for key, kind in _STATE_FIELDS.items():
        if key not in st:
            return f"'{key}' is missing"
        if not isinstance(st[key], kind) or isinstance(st[key], bool):
            return f"'{key}' is a {type(st[key]).__name__}"
    if not isinstance(st.get("torch_rng"), torch.Tensor):
        return "'torch_rng' is missing or not a tensor"
    if not st["data_rng"] or not all(isinstance(x, dict) for x in st["data_rng"]):
        return "'data_rng' holds no generator states"
    return None

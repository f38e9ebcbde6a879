"""Exporting a run's checkpoint to run outside the workbench: one engine function,
``export_run``, that the CLI (``workbench export``) and the Runs pane both call.

Formats, each in its own module, and where the result runs:

* ``hf`` (:mod:`.hf`): a transformers Llama folder — ``AutoModelForCausalLM`` / ``AutoTokenizer``;
* ``gguf`` (:mod:`.gguf_file`): ``model.gguf`` for llama.cpp and everything built on it
  (f32, f16 or q8_0 via ``dtype``);
* ``llama2c`` (:mod:`.llama2c`): ``model.bin`` + ``tokenizer.bin`` for llama2.c's ``run.c``
  (version 0, or 1 via ``version``);
* ``weights`` (:mod:`.weights`): our own safetensors + config.yaml, for any config.

The Llama formats share :mod:`.layout` (which configs are a Llama, the tensors by role, the
RoPE row order); each refuses, before anything is written, a config it cannot express, naming
every switch at fault. :mod:`.folder` checks ``to`` (``overwrite`` replaces only an earlier
export, recognised by its marker file) and moves the finished folder into place atomically.

The other way, :mod:`.importer` (``workbench import``) reads hf, gguf and llama2c files back
into a run through each format module's ``read`` and the same name maps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export import gguf_file, hf, llama2c, weights
from workbench.export.folder import MARKER, check_destination, read_marker, write_folder
from workbench.export.hf import hf_config, hf_state_dict

_MODULES = {m.NAME: m for m in (hf, gguf_file, llama2c, weights)}
FORMATS = tuple(_MODULES)  # most capable first: the first one a config allows is the default
SUMMARIES = {name: m.SUMMARY for name, m in _MODULES.items()}

__all__ = ["FORMATS", "MARKER", "SUMMARIES", "export_run", "format_choices", "formats_for", "hf_config",
           "hf_incompatibilities", "hf_state_dict", "incompatibilities", "read_marker"]


def incompatibilities(fmt: str, cfg, tok) -> list[str]:
    """Why ``fmt`` cannot hold a model of config ``cfg`` with tokenizer ``tok`` (empty if it can)."""
    return _module(fmt).incompatibilities(cfg, tok)


def hf_incompatibilities(cfg) -> list[str]:
    """Why a model config cannot be a transformers Llama (empty when it can)."""
    return hf.incompatibilities(cfg, None)


def formats_for(cfg, tok=None) -> list[dict]:
    """Every format for a model of config ``cfg``: ``{"format", "summary", "why_not"}`` (why_not
    is None when it can hold it), most capable first. Without ``tok`` only the model is checked
    (the Config pane and ``config show``, before a tokenizer is tied to it)."""
    return [{"format": name, "summary": m.SUMMARY, "why_not": "; ".join(m.incompatibilities(cfg, tok)) or None}
            for name, m in _MODULES.items()]


def format_choices(ws, run_name: str) -> list[dict]:
    """``formats_for`` a run: its config and tokenizer; the first allowed one is the best."""
    run, cfg, tok = _run_and_tokenizer(ws, run_name)
    return formats_for(cfg.model, tok)


@dataclass
class ExportJob:
    """What a format's ``write(job, folder)`` gets: the loaded model and everything around it."""

    run: object
    model: object
    tok: object
    cfg: object
    checkpoint: str
    options: dict = field(default_factory=dict)


def export_run(ws, run_name: str, to: str | os.PathLike, fmt: str = "hf",
               checkpoint: str | None = None, overwrite: bool = False, *,
               dtype: str | None = None, version: int | None = None, say=None) -> dict:
    """Write ``run_name``'s checkpoint (latest by default; ``say`` hears a fall-back to an older
    one) as ``fmt`` to folder ``to``.

    ``dtype`` (gguf: f32, f16, q8_0) and ``version`` (llama2c: 0, 1) are per-format options.
    Everything is checked — format, options, config, destination — before the model loads, and
    nothing is written unless all of it passes. Returns a summary (run, checkpoint, format,
    options, path, files).
    """
    from workbench.runs.load import load_run_model

    module = _module(fmt)
    run, cfg, tok = _run_and_tokenizer(ws, run_name)
    options = _options(fmt, cfg.model, dtype, version)
    why = module.incompatibilities(cfg.model, tok)
    if why:
        fits = [n for n, m in _MODULES.items() if n != fmt and not m.incompatibilities(cfg.model, tok)]
        raise WorkbenchError(f"run {run_name!r} cannot be exported as {fmt} ({module.SUMMARY}): "
                             f"{'; '.join(why)}. Use --format {' or --format '.join(fits)} instead.")
    dest = Path(to).expanduser().resolve()
    check_destination(dest, overwrite)
    model, tok, cfg, ckpt = load_run_model(run, checkpoint, say=say)
    job = ExportJob(run, model, tok, cfg, ckpt, options)
    marker = {"format": fmt, "options": options, "run": run.name, "checkpoint": ckpt,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    files = write_folder(dest, lambda tmp: module.write(job, tmp), marker)
    return {"run": run.name, "checkpoint": ckpt, "format": fmt, "options": options,
            "path": str(dest), "files": files}


def _module(fmt: str):
    if fmt not in _MODULES:
        raise WorkbenchError(f"format {fmt!r} is not supported: expected one of {', '.join(FORMATS)}")
    return _MODULES[fmt]


def _run_and_tokenizer(ws, run_name: str):
    from workbench.runs.folder import get_run, run_config

    run = get_run(ws, run_name)
    return run, run_config(run), run.load_tokenizer()


def _options(fmt: str, cfg, dtype, version) -> dict:
    """The format's options with defaults filled in; an option another format owns is refused."""
    for flag, value, owner in (("--dtype", dtype, "gguf"), ("--version", version, "llama2c")):
        if value is not None and fmt != owner:
            raise WorkbenchError(f"{flag} applies only to --format {owner}, not {fmt}")
    if fmt == "gguf":
        return {"dtype": gguf_file.check_dtype(dtype, cfg)}
    if fmt == "llama2c":
        return {"version": llama2c.check_version(version)}
    return {}

"""``workbench import``: a model made elsewhere becomes a run of this workspace — the inverse of
``export``, through the same format modules and name maps.

``import_model(ws, source, name, tokenizer=None)`` takes

* a transformers Llama folder (``config.json``, safetensors or ``pytorch_model.bin``, a
  sentencepiece ``tokenizer.model``; :func:`workbench.export.hf.read`), or a hub id of one,
  downloaded with ``huggingface_hub`` when the hub can be reached;
* a GGUF file of the ``llama`` architecture (:func:`workbench.export.gguf_file.read`);
* a llama2.c ``model.bin`` of version 0 or 1 (:func:`workbench.export.llama2c.read`) with
  ``tokenizer``, the sentencepiece ``tokenizer.model`` it was trained with.

The kind is decided by what the source is (a folder with config.json; a file starting with
``GGUF``; otherwise a llama2.c header). Everything is read and checked before anything is
written — the config our model family must express, every tensor's name and shape, that the
weights are finite, that the tokenizer loads and has one piece per id of the model, the special
ids the file names — and a refusal is one line. The run is then written as any run: config.yaml
(with ``imported_from``: format, source, options, time), a copy of the tokenizer, checkpoint
``step_000000`` (weights, and a state that says they were imported) and status ``imported``,
built under a temporary name and renamed into place. The tokenizer also goes to ``tokenizers/``
(the one already there when it is the same file; else under the run's name), so the run can be
fine-tuned with ``train --init-from`` and its tokenizer used to prepare data.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

from workbench import fileio
from workbench.errors import WorkbenchError
from workbench.workspace import Workspace, check_name

KINDS = ("hf", "gguf", "llama2c")
_HUB_FILES = ["*.json", "tokenizer.model", "*.safetensors"]


def import_model(ws: Workspace, source: str | os.PathLike, name: str, tokenizer: str | os.PathLike | None = None,
                 say=None) -> dict:
    """Import ``source`` as run ``name`` (see the module's docstring); ``say`` hears a download.
    Returns a summary: run, format, source, options, tokenizer (its name in tokenizers/ and
    whether it was already there), checkpoint, params and the model config."""
    check_name("run", name)
    if ws.run_path(name).exists():
        raise WorkbenchError(f"run {name!r} already exists; choose another --name")
    spec = str(source)
    try:
        path = _local_or_hub(spec, say)
        kind = _kind(path)
        imp = _read(kind, path, tokenizer)
        tok, model = _check(imp)
    except WorkbenchError as e:
        raise WorkbenchError(f"cannot import {spec!r}: {e}; nothing was written") from None
    except (ValueError, TypeError, KeyError, IndexError, OSError, struct.error) as e:
        # a value of the wrong type deep in a file that otherwise parses: still one line
        first = (str(e).splitlines() or [""])[0][:160]
        raise WorkbenchError(f"cannot import {spec!r}: it is damaged or not what it says it is "
                             f"({type(e).__name__}: {first}); nothing was written") from None
    record = {"format": kind, "source": spec if not Path(spec).expanduser().exists() else str(path),
              **({"tokenizer": str(Path(tokenizer).expanduser().resolve())} if tokenizer else {}),
              **imp.options, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return _write(ws, name, imp, tok, model, record)


def _local_or_hub(spec: str, say) -> Path:
    from workbench.data.sources import _HUB_RE, hub_offline_reason

    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve()
    if not (_HUB_RE.match(spec) and not spec.startswith((".", "/")) and path.suffix.lower() not in (".gguf", ".bin")):
        raise WorkbenchError("no such file or folder (give a transformers Llama folder or its hub id, a .gguf file, "
                             "or a llama2.c model.bin)")
    reason = hub_offline_reason(spec)
    if reason:
        raise WorkbenchError(f"it is not a local path, and the hub model cannot be downloaded: {reason}; give the "
                             "path of a local folder or file")
    from huggingface_hub import snapshot_download

    if say is not None:
        say(f"downloading {spec} from the Hugging Face hub")
    try:
        folder = Path(snapshot_download(spec, allow_patterns=_HUB_FILES))
        if not any(folder.glob("*.safetensors")):  # an older repository: pytorch_model.bin only
            folder = Path(snapshot_download(spec, allow_patterns=[*_HUB_FILES, "pytorch_model*.bin"]))
    except Exception as e:  # huggingface_hub raises its own types for a missing repo, gating, network
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WorkbenchError(f"the hub model cannot be downloaded ({type(e).__name__}: {first})") from None
    return folder


def _kind(path: Path) -> str:
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise WorkbenchError("the folder has no config.json, so it is not a transformers model folder (for a GGUF "
                             "or llama2.c file give the file itself)")
    from workbench.export.gguf_file import MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as e:
        raise WorkbenchError(f"it cannot be read ({e.strerror})") from None
    return "gguf" if head == MAGIC else "llama2c"


def _read(kind: str, path: Path, tokenizer):
    from workbench.export import gguf_file, hf, llama2c

    if kind != "llama2c":
        if tokenizer is not None:
            raise WorkbenchError(f"--tokenizer is for a llama2.c model.bin; a {'GGUF file' if kind == 'gguf' else 'transformers folder'} "
                                 "carries its own tokenizer")
        if kind == "gguf":
            import importlib.util

            if importlib.util.find_spec("gguf") is None:
                raise WorkbenchError("reading a GGUF file needs the gguf package (pip install 'workbench[export]')")
            return gguf_file.read(path)
        return hf.read(path)
    llama2c.read_header(path)  # a file of another kind is named as such before the tokenizer is asked for
    if tokenizer is None:
        raise WorkbenchError("a llama2.c model.bin holds no vocabulary: give the sentencepiece model it was trained "
                             "with, --tokenizer PATH/tokenizer.model")
    tpath = Path(tokenizer).expanduser()
    tpath = tpath / "tokenizer.model" if tpath.is_dir() else tpath
    try:
        proto = tpath.read_bytes()
    except OSError as e:
        raise WorkbenchError(f"--tokenizer {str(tpath)!r} cannot be read ({e.strerror})") from None
    return llama2c.read(path, proto)


def _check(imp):
    """The tokenizer and our model holding the imported weights, or the first thing wrong."""
    import torch

    from workbench.export.layout import our_state_dict
    from workbench.model import build_model
    from workbench.tokenizer.tokenizer import Tokenizer

    if not imp.tokenizer:
        raise WorkbenchError("the tokenizer is empty")
    try:
        tok = Tokenizer(imp.tokenizer)
    except Exception as e:  # sentencepiece raises several types for a file that is not a model
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WorkbenchError(f"the tokenizer is not a sentencepiece model ({first})") from None
    V = imp.config.vocab_size
    if tok.vocab_size != V:
        raise WorkbenchError(f"the weights are for {V} token ids but the tokenizer has {tok.vocab_size} pieces: "
                             "they were not made for each other")
    for k, i in (imp.specials or {}).items():
        have = getattr(tok, f"{k}_id")
        if i != have:
            raise WorkbenchError(f"the model's {k.upper()} id is {i}, the tokenizer's is {have}")
    sd = our_state_dict(imp.tensors, imp.config)
    for k, t in sd.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise WorkbenchError(f"{bad:,} of {t.numel():,} values of {k} are NaN or infinite")
    model = build_model(imp.config, device="cpu")
    model.load_state_dict(sd, strict=True)
    model.eval()
    return tok, model


def _write(ws: Workspace, name: str, imp, tok, model, record: dict) -> dict:
    from workbench.config.schema import Config
    from workbench.runs import checkpoint
    from workbench.runs.folder import STATUS, create_run

    tok_name, made = _tokenizer_folder(ws, name, tok, record["source"])
    cfg = Config(imp.config)
    step = checkpoint.ckpt_name(0)

    def fill(folder: Path) -> None:
        checkpoint.save_checkpoint(folder, 0, model, {"step": 0, "imported": True}, keep_last=1)
        fileio.write_json(folder / STATUS, {"state": "imported", "updated": time.time()})

    try:
        run = create_run(ws, name, cfg, ws.tokenizer_path(tok_name),
                         {"tokenizer": tok_name, "tokenizer_sha256": tok.sha256}, {"imported_from": record}, fill)
    except BaseException:
        if made:
            shutil.rmtree(ws.tokenizer_path(tok_name), ignore_errors=True)
        raise
    return {"run": run.name, "format": imp.fmt, "source": record["source"], "options": imp.options,
            "tokenizer": tok_name, "tokenizer_new": made, "checkpoint": step, "params": imp.config.n_params,
            "config": imp.config.to_dict()}


def _tokenizer_folder(ws: Workspace, name: str, tok, source: str) -> tuple[str, bool]:
    """The name of the workspace tokenizer holding ``tok``: one already there with the same
    model file, or a new folder (the run's name, made unique) written atomically. The bool says
    whether it is new."""
    from workbench.tokenizer.tokenizer import MODEL_FILE, SETTINGS_FILE, STATS_FILE, file_sha256, list_tokenizers

    for info in list_tokenizers(ws):
        try:
            if file_sha256(info.model_path) == tok.sha256:
                return info.name, False
        except OSError:
            continue
    tname, n = name, 2
    while ws.tokenizer_path(tname).exists():
        tname, n = f"{name}-{n}", n + 1
    root = ws.tokenizers_dir(create=True)
    tmp = root / f".{tname}{fileio.TMP_MARK}{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.mkdir()
        (tmp / MODEL_FILE).write_bytes(tok.model_proto)
        fileio.write_yaml(tmp / SETTINGS_FILE, {"vocab_size": tok.vocab_size, "byte_fallback": tok.byte_fallback,
                                                "data": "", "imported_from": source})
        fileio.write_json(tmp / STATS_FILE, {"vocab_size": tok.vocab_size})
        os.rename(tmp, ws.tokenizer_path(tname))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return tname, True

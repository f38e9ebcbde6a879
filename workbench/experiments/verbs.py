"""The ``workbench experiment`` verbs, one engine function each: list the variants, write a new
experiment file from a built-in part's source (lmplay's copy -> change), and check one (build
the ``debug`` shape with it, one forward and backward, a trace) in one line.

They sit above the model (``check`` builds one), so the model and config import only the
registry and the loader below them; torch is imported inside ``check`` and ``new`` alone.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import keyword
import types
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.experiments.loader import FOLDER, failure_line
from workbench.experiments.registry import PARTS, get, names, variants



def _default(part: str) -> str:
    """The variant a config takes for ``part`` when it names none (its field's default)."""
    from workbench.config.schema import ModelConfig, TrainConfig

    section, _, field = PARTS[part][0].partition(".")
    cls = ModelConfig if section == "model" else TrainConfig
    return next(f.default for f in dataclasses.fields(cls) if f.name == field)


def list_variants() -> list[dict]:
    """Every registered variant: part, name, where it comes from, what it is."""
    return [{"part": v.part, "name": v.name, "field": PARTS[v.part][0], "builtin": v.builtin,
             "file": v.source, "description": v.description,
             "options": {k: {"default": o.default, "allowed": o.allowed(), "help": o.help}
                         for k, o in v.options.items()}} for v in variants()]


def _check_name(name: str) -> None:
    if not name or not (name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)) or keyword.iskeyword(name):
        raise WorkbenchError(f"experiment name {name!r} is not allowed: a letter, then letters, digits or '_'")


def _imports_for(cls, source: str) -> list[str]:
    """Import lines for every module-level name the copied class uses from its module."""
    module = inspect.getmodule(cls)
    used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    modules, names_from = [], {}
    for name in sorted(used):
        obj = module.__dict__.get(name)
        if obj is None or name == cls.__name__:
            continue
        if isinstance(obj, types.ModuleType):
            modules.append(f"import {obj.__name__}" + (f" as {name}" if obj.__name__ != name else ""))
        else:  # a class or function from where it is defined; a constant from this module
            home = getattr(obj, "__module__", None) if isinstance(obj, (type, types.FunctionType)) else None
            names_from.setdefault(home or module.__name__, []).append(name)
    return sorted(modules) + [f"from {m} import {', '.join(n)}" for m, n in sorted(names_from.items())]


def new_experiment(root: Path, name: str, part: str, base: str | None = None) -> Path:
    """Write ``experiments/NAME.py`` in workspace ``root``: a copy of the source of ``part``'s
    variant ``base`` (the default one when not given), registered as ``name``, ready to edit.
    Refuses an existing file or a taken name; writes nothing then."""
    from workbench import fileio

    _check_name(name)
    if part not in PARTS:
        raise WorkbenchError(f"part {part!r} is not one of {', '.join(PARTS)}")
    if name in names(part):
        raise WorkbenchError(f"{part} {name!r} is already registered ({get(part, name).source or 'built in'})")
    base = base or _default(part)
    if base not in names(part):
        raise WorkbenchError(f"{part} {base!r} is not registered; choose one of {', '.join(names(part))}")
    cls = get(part, base).resolve()
    source = inspect.getsource(cls)
    if isinstance(cls, type):
        class_name = "".join(w.capitalize() for w in name.split("_")) or name
        source = source.replace(f"class {cls.__name__}(", f"class {class_name}(", 1)
    else:  # an optimizer is a function
        source = source.replace(f"def {cls.__name__}(", f"def {name}(", 1)
    path = Path(root) / FOLDER / f"{name}.py"
    if path.exists():
        raise WorkbenchError(f"{str(path)!r} already exists; edit it, or choose another name")
    field = PARTS[part][0]
    text = "\n".join([
        f'"""Experiment {name!r}: a copy of the built-in {part} {base!r} ({cls.__module__}.{cls.__name__}),',
        "ready to change. Train it with",
        "",
        f"    workbench train --config debug --tokenizer T --set {field}={name}",
        "",
        f"and compare it with a run of {field}={base} in the Runs pane (or `workbench runs compare`).",
        f"`workbench experiment check {name}` builds and traces it; self.log(name, tensor) shows an",
        'intermediate in the trace."""',
        "",
        "from __future__ import annotations",
        "",
        *_imports_for(cls, source),
        "",
        "from workbench.experiments import register",
        "",
        "",
        f'@register("{part}", "{name}", "a copy of {base}: describe your change here")',
        source.rstrip(),
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, text)
    return path


@dataclass
class CheckResult:
    ok: bool
    line: str


def check_experiment(name: str) -> CheckResult:
    """Build the ``debug`` shape with variant ``name`` (every part it is registered for), run
    one forward and backward, the training loss path in fp32 and under bf16 autocast, an
    optimizer step (an optimizer variant) and a trace; what went wrong, in one line, if
    anything did."""
    import torch

    from workbench.config.schema import load_config
    from workbench.model import build_model
    from workbench.model.attention import KERNELS
    from workbench.tracing.tracer import trace_model
    from workbench.training.optim import make_optimizer

    parts = [p for p in PARTS if name in names(p)]
    if not parts:
        raise WorkbenchError(f"no variant is registered as {name!r}; `workbench experiment list` shows them")
    cfg = load_config("debug")
    changes = {"model": {}, "train": {}}
    for p in parts:
        section, _, field = PARTS[p][0].partition(".")
        changes[section][field] = name
    where = ", ".join(f"{PARTS[p][0]}={name}" for p in parts)
    source = next((get(p, name).source for p in parts if get(p, name).source), None)
    try:
        model_cfg = cfg.model.replace(**changes["model"])
        train_cfg = cfg.train.replace(**changes["train"])
        model = build_model(model_cfg, seed=0)
        idx = torch.randint(0, model_cfg.vocab_size, (2, model_cfg.max_seq_len))
        logits = model(idx)
        if tuple(logits.shape) != (2, model_cfg.max_seq_len, model_cfg.vocab_size):
            return CheckResult(False, f"{where}: the model's logits are {tuple(logits.shape)}, expected "
                                      f"{(2, model_cfg.max_seq_len, model_cfg.vocab_size)}")
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
        loss.backward()
        if not torch.isfinite(loss):
            return CheckResult(False, f"{where}: the loss is {loss.item()}")
        fused = model(idx, targets=idx)  # the path training takes
        if not torch.allclose(fused, loss, rtol=1e-4, atol=1e-4):
            return CheckResult(False, f"{where}: forward(idx, targets=...) gives loss {fused.item():.4f}, "
                                      f"but the logits give {loss.item():.4f}")
        for kernel in KERNELS:  # training's mixed precision (bf16 on CPU), with each attention kernel
            model.set_attention_kernel(kernel)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(idx, targets=idx)
        model.set_attention_kernel("sdpa")
        if "optimizer" in parts:
            before = [p.detach().clone() for p in model.parameters()]
            opt = make_optimizer(model, train_cfg, torch.device("cpu"))
            opt.step()
            if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
                return CheckResult(False, f"{where}: one step of the optimizer changed no parameter")
        trace = trace_model(model, idx[:1, :16])
        logged = sum(len(c.logs) for c in trace.calls())
    except WorkbenchError as e:
        return CheckResult(False, f"{where}: {e}")
    except Exception as e:  # the user's code: say where in it, in one line
        return CheckResult(False, failure_line(e, Path(source).resolve()) if source else f"{where}: {type(e).__name__}: {e}")
    n = sum(p.numel() for p in model.parameters())
    stepped = ", one optimizer step" if "optimizer" in parts else ""
    return CheckResult(True, f"ok: {where} builds the debug shape ({n:,} parameters), loss {loss.item():.3f}, "
                             f"gradients flow{stepped}, trace of {sum(1 for _ in trace.calls())} calls with {logged} logged tensors")

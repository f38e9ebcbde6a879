"""The ``weights`` format: our own weights-only folder, for any config the model family builds.

``model.safetensors`` (every key of the model's ``state_dict``), ``config.yaml`` (the run's
config, which ``read_config`` accepts) and the tokenizer's ``tokenizer.model``. It loads back
with the plain strict calls::

    cfg = read_config(folder / "config.yaml").model
    model = build_model(cfg)
    model.load_state_dict(safetensors.torch.load_file(folder / "model.safetensors"))  # strict

With tied embeddings the output head is the embedding itself; safetensors refuses tensors that
share memory, so the head is stored as a copy under its own key — loading writes the same
values into the one shared parameter, and the model stays tied.
"""

from __future__ import annotations

from pathlib import Path

NAME = "weights"
SUMMARY = "workbench: safetensors + config.yaml, for any config"


def incompatibilities(cfg, tok) -> list[str]:
    return []


def state_dict_for_export(model) -> dict:
    """Every state_dict key, each tensor in its own storage (tied ones copied)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        key = (t.data_ptr(), tuple(t.shape))
        out[k] = t.clone() if key in seen else t.contiguous()
        seen.add(key)
    return out


def write(job, tmp: Path) -> None:
    from safetensors.torch import save_file

    from workbench.config.schema import save_config
    from workbench.runs.folder import run_config

    save_file(state_dict_for_export(job.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    # the run's config minus run-only keys (``created``), so ``read_config`` accepts it
    save_config(tmp / "config.yaml", run_config(job.run))
    (tmp / "tokenizer.model").write_bytes(job.tok.model_proto)

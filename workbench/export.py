"""Exporting a run's checkpoint for use outside the workbench.

* ``hf``: a Hugging Face transformers Llama folder — ``config.json``, ``generation_config.json``,
  ``model.safetensors`` with Llama parameter names, and the sentencepiece ``tokenizer.model``
  with ``tokenizer_config.json`` / ``special_tokens_map.json``. Only Llama-compatible configs
  (rmsnorm, rope, swiglu, no bias) can be written; others are refused with the reason.
* ``weights``: our own weights-only ``model.safetensors`` plus ``config.yaml`` (and the
  tokenizer), loadable with ``build_model`` + ``load_state_dict``.

Layout notes for ``hf``. Our attention fuses q, k and v into one ``wqkv`` (rows: H query heads,
then Hkv key heads, then Hkv value heads), which is split here; the SwiGLU gate and up
projections are ``w1`` and ``w3`` (or one fused ``w13`` in older checkpoints). Our RoPE rotates the first half of each head against the second (the half-split
layout, see ``model/positions.py``), which is exactly transformers' ``rotate_half``, so q and k
need no permutation (Meta's interleaved checkpoints do; ours are not interleaved).

The folder is written under a temporary name beside the target and renamed into place, so a
killed export never leaves a half-written folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from . import fileio
from .errors import WorkbenchError

FORMATS = ("hf", "weights")


def hf_incompatibilities(cfg) -> list[str]:
    """Why a model config cannot be a transformers Llama (empty when it can)."""
    why = []
    if cfg.norm != "rmsnorm":
        why.append(f"norm is {cfg.norm!r} (Llama uses rmsnorm)")
    if cfg.pos != "rope":
        why.append(f"pos is {cfg.pos!r} (Llama uses rope)")
    if cfg.mlp != "swiglu":
        why.append(f"mlp is {cfg.mlp!r} (Llama uses swiglu)")
    if cfg.bias:
        why.append("bias is true (Llama's layers have no bias)")
    return why


def hf_config(cfg, tok) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # both spellings: transformers 5 reads rope_parameters, 4.x reads rope_theta
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id if tok.pad_id >= 0 else None,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def hf_state_dict(model) -> dict:
    """Our parameters under transformers Llama names, fused projections split."""
    cfg = model.config
    H, Hkv, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = _unfused(sd, src + "attn.", ("wqkv",), ("wq", "wk", "wv"), (H * D, Hkv * D, Hkv * D))
        gate, up = _unfused(sd, src + "mlp.", ("w13",), ("w1", "w3"), (F, F))
        out.update({
            dst + "input_layernorm.weight": sd[src + "attn_norm.weight"],
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": sd[src + "attn.wo.weight"],
            dst + "post_attention_layernorm.weight": sd[src + "mlp_norm.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": sd[src + "mlp.w2.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def _unfused(sd: dict, prefix: str, fused: tuple[str], parts: tuple[str, ...], sizes: tuple[int, ...]):
    """The weights of projections that may be stored fused (one matrix, rows stacked) or apart;
    the model has used both layouts, and checkpoints of either should export."""
    key = f"{prefix}{fused[0]}.weight"
    if key in sd:
        return sd[key].split(sizes, dim=0)
    return tuple(sd[f"{prefix}{p}.weight"] for p in parts)


def _tokenizer_files(tok, cfg) -> dict[str, dict]:
    specials = {"bos_token": tok.id_to_piece(tok.bos_id), "eos_token": tok.id_to_piece(tok.eos_id),
                "unk_token": tok.id_to_piece(tok.unk_id)}
    if tok.pad_id >= 0:
        specials["pad_token"] = tok.id_to_piece(tok.pad_id)
    tok_cfg = {
        "tokenizer_class": "LlamaTokenizer",
        **specials,
        "add_bos_token": True,
        "add_eos_token": False,
        # our tokenizers are built without a dummy prefix and with identity normalisation
        "add_prefix_space": False,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.max_seq_len,
    }
    return {"tokenizer_config.json": tok_cfg, "special_tokens_map.json": specials}


def _write_hf(model, tok, cfg, tmp: Path) -> None:
    from safetensors.torch import save_file

    save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    files = {
        "config.json": hf_config(cfg, tok),
        "generation_config.json": {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
                                   "max_length": cfg.max_seq_len},
        **_tokenizer_files(tok, cfg),
    }
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    (tmp / "tokenizer.model").write_bytes(tok.model_proto)


def _write_weights(model, tok, run, tmp: Path) -> None:
    from safetensors.torch import save_file

    from .checkpoint import _state_dict_for_save

    save_file(_state_dict_for_save(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    from .config import save_config
    from .runs import run_config

    # the run's config minus run-only keys (``created``), so ``read_config`` accepts it
    save_config(tmp / "config.yaml", run_config(run))
    (tmp / "tokenizer.model").write_bytes(tok.model_proto)


def export_run(ws, run_name: str, to: str | os.PathLike, fmt: str = "hf",
               checkpoint: str | None = None, overwrite: bool = False) -> dict:
    """Write ``run_name``'s checkpoint (latest by default) to folder ``to``; returns a summary."""
    from .runs import get_run, load_run_model

    if fmt not in FORMATS:
        raise WorkbenchError(f"format {fmt!r} is not supported: expected one of {', '.join(FORMATS)}")
    run = get_run(ws, run_name)
    if fmt == "hf":
        from .runs import run_config

        why = hf_incompatibilities(run_config(run).model)
        if why:
            raise WorkbenchError(f"run {run_name!r} cannot be exported as a transformers Llama: "
                                 f"{'; '.join(why)}. Use --format weights instead.")
    dest = Path(to).expanduser().resolve()
    if dest.exists() and not overwrite and (not dest.is_dir() or any(dest.iterdir())):
        raise WorkbenchError(f"{str(dest)!r} already exists and is not empty; choose another "
                             "--to or pass --force to replace it")
    model, tok, cfg, ckpt = load_run_model(run, checkpoint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}{fileio.TMP_MARK}{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    old = None
    try:
        if fmt == "hf":
            _write_hf(model, tok, cfg.model, tmp)
        else:
            _write_weights(model, tok, run, tmp)
        for p in tmp.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():  # replace: move the old one aside first so a crash loses nothing
            old = dest.parent / f".{dest.name}{fileio.TMP_MARK}old-{os.getpid()}"
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            if old is not None:  # put the previous export back
                os.rename(old, dest)
                old = None
            raise
        fileio._fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return {"run": run.name, "checkpoint": ckpt, "format": fmt, "path": str(dest),
            "files": sorted(p.name for p in dest.iterdir())}

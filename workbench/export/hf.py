"""The ``hf`` format: a Hugging Face transformers Llama folder.

``config.json``, ``generation_config.json``, ``model.safetensors`` with Llama parameter names,
and the sentencepiece ``tokenizer.model`` with ``tokenizer_config.json`` /
``special_tokens_map.json``; ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load it. transformers' Llama applies RoPE with
``rotate_half``, our own half-split layout, so q and k are written as they are (no permutation,
unlike the gguf and llama2c formats).

``read`` is the other way (``workbench import``): such a folder — ours, or any transformers
Llama with a sentencepiece ``tokenizer.model`` — back into a config and our tensors, by the
same names. A ``config.json`` value our model cannot express is refused, naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.export.layout import (Imported, check_tensors, llama_config, llama_from_named, llama_incompatibilities,
                                     llama_named, llama_shapes)

NAME = "hf"
SUMMARY = "transformers: a Llama folder for AutoModelForCausalLM"


def incompatibilities(cfg, tok) -> list[str]:
    # a ReLU² MLP is exact in Llama's gated one: act relu, gate_proj = up_proj = w1 (relu(z)·z = relu(z)²)
    return llama_incompatibilities(cfg, "Llama", allow={"mlp": ("relu2",)})


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
        "hidden_act": "relu" if cfg.mlp == "relu2" else "silu",
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


HF_TOP = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}
HF_ROLES = {"attn_norm": "input_layernorm.weight", "q": "self_attn.q_proj.weight",
            "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
            "o": "self_attn.o_proj.weight", "mlp_norm": "post_attention_layernorm.weight",
            "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight", "down": "mlp.down_proj.weight"}


def hf_state_dict(model) -> dict:
    """Our parameters under transformers Llama names, fused projections split (q and k in our
    own half-split order, which is transformers')."""
    return llama_named(model, HF_TOP, "model.layers.{i}.", HF_ROLES, interleave=False)


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
        # our tokenizers are built without a dummy prefix (an imported one may have it)
        "add_prefix_space": bool(tok.normalizer["add_dummy_prefix"]),
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.max_seq_len,
    }
    return {"tokenizer_config.json": tok_cfg, "special_tokens_map.json": specials}


def write(job, tmp: Path) -> None:
    from safetensors.torch import save_file

    cfg, tok = job.cfg.model, job.tok
    save_file(hf_state_dict(job.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    files = {
        "config.json": hf_config(cfg, tok),
        "generation_config.json": {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
                                   "max_length": cfg.max_seq_len},
        **_tokenizer_files(tok, cfg),
    }
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    (tmp / "tokenizer.model").write_bytes(tok.model_proto)


# --- the other way: a transformers Llama folder into a run (``workbench import``) ------------

HF_LAYER = "model.layers.{i}."
# config.json keys that do not change what the model computes: bookkeeping, ids, generation
# defaults old transformers saved, training-only dropout and the tensor-parallel split
HF_INERT = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "initializer_range", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "pretraining_tp",
    "attention_dropout", "output_attentions", "output_hidden_states", "return_dict", "torchscript",
    "id2label", "label2id", "problem_type", "tokenizer_class", "is_encoder_decoder", "is_decoder",
    "add_cross_attention", "tie_encoder_decoder", "chunk_size_feed_forward", "prefix", "task_specific_params",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "diversity_penalty",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "sep_token_id", "decoder_start_token_id", "cross_attention_hidden_size", "finetuning_task",
    "tf_legacy_loss", "use_bfloat16", "pruned_heads", "_attn_implementation_autoset",
}
HF_SHAPES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
HF_CHECKED = {*HF_SHAPES, "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
              "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "tie_word_embeddings",
              "attention_bias", "mlp_bias"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def model_config(d: dict):
    """config.json -> ModelConfig; the first key our Llama cannot express is refused by name
    (defaults are LlamaConfig's where a key is absent)."""
    def refuse(key, why):
        raise WorkbenchError(f"config.json: {key} is {_show(d.get(key))} ({why})")

    if d.get("model_type") != "llama" or d.get("architectures", ["LlamaForCausalLM"]) != ["LlamaForCausalLM"]:
        arch = d.get("architectures") or d.get("model_type")
        raise WorkbenchError(f"config.json: architecture {_show(arch)} is not a Llama (workbench imports "
                             "LlamaForCausalLM, model_type 'llama')")
    for key in HF_SHAPES:
        if key not in d:
            raise WorkbenchError(f"config.json has no {key}")
    if d.get("hidden_act", "silu") not in ("silu", "relu"):
        refuse("hidden_act", "workbench reads silu (SwiGLU), or relu with gate_proj = up_proj (its ReLU² MLP)")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            refuse(key, "workbench's Llama has no bias terms")
    if d.get("rope_scaling") is not None:
        refuse("rope_scaling", "workbench's RoPE has no scaling")
    if d.get("quantization_config") is not None:
        refuse("quantization_config", "quantized weights are not read; import an unquantized folder")
    theta = d.get("rope_theta")
    rp = d.get("rope_parameters")
    if rp is not None:
        if not isinstance(rp, dict) or rp.get("rope_type", "default") != "default" or set(rp) - {"rope_type", "rope_theta"}:
            refuse("rope_parameters", "workbench's RoPE is the default one, with no scaling or partial rotation")
        if theta is not None and rp.get("rope_theta", theta) != theta:
            refuse("rope_parameters", f"its rope_theta differs from rope_theta {_show(theta)}")
        theta = rp.get("rope_theta", theta)
    heads = d["num_attention_heads"]
    if isinstance(heads, int) and heads > 0 and d.get("head_dim") not in (None, d["hidden_size"] // heads):
        refuse("head_dim", f"workbench's head size is hidden_size / num_attention_heads = {d['hidden_size'] // heads}")
    for key, value in d.items():
        if key not in HF_INERT and key not in HF_CHECKED and value not in (None, False, 0, {}, []):
            refuse(key, "a setting this importer does not know, so it cannot say the model ignores it")
    return llama_config(
        "config.json", mlp="relu2" if d.get("hidden_act") == "relu" else "swiglu", vocab_size=d["vocab_size"], dim=d["hidden_size"], n_layers=d["num_hidden_layers"],
        n_heads=heads, n_kv_heads=d.get("num_key_value_heads") or heads, hidden_dim=d["intermediate_size"],
        norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(10000.0 if theta is None else theta),
        max_seq_len=d.get("max_position_embeddings", 2048), tie_embeddings=bool(d.get("tie_word_embeddings", False)))


def _show(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v)


def _weight_files(folder: Path) -> list[Path]:
    """The files holding the weights: one file, or the shards its index names."""
    for name in WEIGHT_FILES:
        p = folder / name
        if not p.is_file():
            continue
        if not name.endswith(".index.json"):
            return [p]
        try:
            shards = sorted(set(json.loads(p.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise WorkbenchError(f"{name} is not a weight index ({type(e).__name__})") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise WorkbenchError(f"{name} names {missing[0]}, which is not in the folder")
        return [folder / s for s in shards]
    raise WorkbenchError(f"no weights: the folder has none of {', '.join(WEIGHT_FILES)}")


def _read_tensors(files: list[Path]) -> dict:
    import torch
    from safetensors.torch import load_file

    out = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                out.update(load_file(str(f)))
            else:
                out.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # safetensors and torch report a truncated or foreign file in their own types
            first = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise WorkbenchError(f"{f.name} is not a readable weights file (truncated or damaged: {first})") from None
    return out


def read(folder: Path) -> Imported:
    """A transformers Llama folder as an ``Imported``: config.json, the weights (safetensors or
    pytorch_model.bin, sharded or not; any float dtype, read as float32) and tokenizer.model."""
    try:
        d = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WorkbenchError(f"config.json cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if not isinstance(d, dict):
        raise WorkbenchError("config.json is not a JSON object")
    cfg = model_config(d)
    spm = folder / "tokenizer.model"
    if not spm.is_file():
        other = " (only tokenizer.json: a byte-level BPE such as Llama 3's, which workbench's sentencepiece " \
                "tokenizers cannot hold)" if (folder / "tokenizer.json").is_file() else ""
        raise WorkbenchError(f"the folder has no sentencepiece tokenizer.model{other}")
    got = _read_tensors(_weight_files(folder))
    tied_copy = cfg.tie_embeddings and "lm_head.weight" in got  # some writers store a tied head anyway
    check_tensors({k: tuple(v.shape) for k, v in got.items()}, llama_shapes(cfg, HF_TOP, HF_LAYER, HF_ROLES),
                  ignore=lambda n: n.endswith("rotary_emb.inv_freq") or (tied_copy and n == "lm_head.weight"))
    tensors = llama_from_named(got, cfg, HF_TOP, HF_LAYER, HF_ROLES, interleave=False)
    if cfg.mlp == "relu2":
        import torch

        for i, layer in enumerate(tensors.layers):
            if not torch.equal(layer.gate, layer.up):
                raise WorkbenchError(f"config.json: hidden_act is 'relu' but layer {i}'s gate_proj and up_proj differ "
                                     "(workbench's ReLU² MLP is relu(x W)·(x W): one matrix for both)")
    specials = {k: d[f"{k}_token_id"] for k in ("bos", "eos") if isinstance(d.get(f"{k}_token_id"), int)}
    return Imported("hf", cfg, tensors, spm.read_bytes(), {}, specials)

"""The ``hf`` format: a Hugging Face transformers Llama folder.

``config.json``, ``generation_config.json``, ``model.safetensors`` with Llama parameter names,
and the sentencepiece ``tokenizer.model`` with ``tokenizer_config.json`` /
``special_tokens_map.json``; ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load it. transformers' Llama applies RoPE with
``rotate_half``, our own half-split layout, so q and k are written as they are (no permutation,
unlike the gguf and llama2c formats).
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.export.layout import llama_incompatibilities, llama_named

NAME = "hf"
SUMMARY = "transformers: a Llama folder for AutoModelForCausalLM"


def incompatibilities(cfg, tok) -> list[str]:
    return llama_incompatibilities(cfg, "Llama")


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
        # our tokenizers are built without a dummy prefix and with identity normalisation
        "add_prefix_space": False,
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

"""The model family: a GPT/Llama transformer built from small variant classes.

Public API::

    model = build_model(cfg)                 # cfg: workbench.config.schema.ModelConfig
    logits = model(idx)                      # idx (B, T) int64 -> (B, T, vocab_size)
    loss = lm_loss(logits, targets)
    cache = KVCache.for_model(model, batch_size=1)
    logits = model(idx, kv_cache=cache)      # incremental decoding
"""

from workbench.model.kv_cache import KVCache
from workbench.model.loss import IGNORE_INDEX, lm_loss
from workbench.model.transformer import Transformer, build_model

__all__ = ["KVCache", "Transformer", "build_model", "lm_loss", "IGNORE_INDEX"]

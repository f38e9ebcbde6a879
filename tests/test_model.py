"""The model family: exact parameter estimates, shapes, causality, GQA/MQA, KV cache, overfitting."""

from __future__ import annotations

import itertools

import pytest
import torch

from workbench.config.schema import ModelConfig, load_config
from workbench.machine.estimate import kv_cache_bytes, saved_activation_bytes
from workbench.config.sizes import param_count
from workbench.model import IGNORE_INDEX, KVCache, build_model, lm_loss

PRESETS = ["debug", "tiny-1m", "stories260K", "stories15M", "gpt2-style"]
HEADS = {"mha": 4, "gqa": 2, "mqa": 1}  # n_kv_heads with n_heads = 4

COMBOS = list(itertools.product(("swiglu", "gelu"), ("rmsnorm", "layernorm"),
                                ("rope", "learned", "none"), (False, True), (False, True),
                                tuple(HEADS)))


def tiny(mlp="swiglu", norm="rmsnorm", pos="rope", bias=False, tie=True, heads="gqa", **kw):
    base = dict(vocab_size=37, dim=16, n_layers=2, n_heads=4, n_kv_heads=HEADS[heads],
                max_seq_len=12, mlp=mlp, norm=norm, pos=pos, bias=bias, tie_embeddings=tie,
                multiple_of=8)
    base.update(kw)
    return ModelConfig(**base)


def combo_id(c):
    return "-".join(str(x) for x in c)


@pytest.mark.parametrize("name", PRESETS)
def test_param_estimate_is_exact_for_presets(name):
    cfg = load_config(name).model
    model = build_model(cfg, device="meta")  # shapes only: stories15M costs nothing here
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_every_variant_has_exact_params_right_shape_and_is_causal(combo):
    cfg = tiny(*combo)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    B, T = 2, 7
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        logits = model(idx)
        assert logits.shape == (B, T, cfg.vocab_size)
        assert torch.isfinite(logits).all()
        # changing a later token must leave every earlier position's logits unchanged
        changed = idx.clone()
        changed[:, 4] = (changed[:, 4] + 1) % cfg.vocab_size
        other = model(changed)
    assert torch.equal(logits[:, :4], other[:, :4])
    assert not torch.allclose(logits[:, 4:], other[:, 4:])


@pytest.mark.parametrize("heads", tuple(HEADS))
def test_attention_kinds_give_expected_projection_sizes(heads):
    cfg = tiny(heads=heads)
    model = build_model(cfg)
    attn = model.layers[0].attn
    D = cfg.head_dim
    assert attn.wqkv.out_features == (4 + 2 * HEADS[heads]) * D
    assert attn.gqa == (HEADS[heads] != 4)


def test_tied_embeddings_share_storage_and_init_is_scaled():
    cfg = tiny(tie=True, dim=64, n_layers=4, vocab_size=500, max_seq_len=16)
    model = build_model(cfg, seed=0)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)
    resid = model.layers[0].attn.wo.weight.std().item()
    assert resid == pytest.approx(0.02 / (2 * 4) ** 0.5, rel=0.15)
    untied = build_model(tiny(tie=False), seed=0)
    assert untied.lm_head.weight is not untied.tok_emb.weight


def test_build_is_seeded():
    a, b = build_model(tiny(), seed=3), build_model(tiny(), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert "pos.cos" not in a.state_dict()  # derived buffers are not checkpointed


def test_overfits_one_batch():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
    model = build_model(cfg, seed=0)
    x = torch.randint(0, 64, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = lm_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert first == pytest.approx(torch.log(torch.tensor(64.0)).item(), rel=0.1)
    assert loss.item() < 0.05


def test_lm_loss_ignores_padding():
    logits = torch.randn(1, 3, 5)
    targets = torch.tensor([[1, IGNORE_INDEX, 2]])
    expected = torch.nn.functional.cross_entropy(logits[0, [0, 2]], torch.tensor([1, 2]))
    assert torch.allclose(lm_loss(logits, targets), expected)


def test_dropout_is_active_only_in_training():
    model = build_model(tiny(dropout=0.5), seed=0)
    idx = torch.randint(0, 37, (2, 6))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


# ---------------------------------------------------------------- KV cache

@pytest.mark.parametrize("pos,heads", list(itertools.product(("rope", "learned", "none"), tuple(HEADS))))
def test_kv_cache_matches_full_forward(pos, heads):
    cfg = tiny(pos=pos, heads=heads)
    model = build_model(cfg, seed=1).eval()
    B, T = 2, 10
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_model(model, B)
        parts = [model(idx[:, :4], kv_cache=cache)]  # prefill
        parts += [model(idx[:, t:t + 1], kv_cache=cache) for t in (4, 5, 6)]  # one at a time
        parts.append(model(idx[:, 7:], kv_cache=cache))  # a chunk after cached tokens
    assert cache.pos == T
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
    cache.reset()
    with torch.no_grad():
        again = model(idx, kv_cache=cache)
    assert torch.allclose(again, full, atol=1e-5, rtol=1e-4)


def test_kv_cache_is_preallocated_and_bounded():
    cfg = tiny(heads="gqa")
    cache = KVCache(cfg, batch_size=3)
    assert cache.k[0].shape == (3, 2, cfg.max_seq_len, cfg.head_dim)
    assert len(cache.k) == len(cache.v) == cfg.n_layers
    assert cache.nbytes == kv_cache_bytes(cfg, 3)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model(torch.zeros(3, cfg.max_seq_len, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="longer than the model's max_seq_len"):
            model(torch.zeros(3, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="KV cache length"):
        KVCache(cfg, 1, max_seq_len=cfg.max_seq_len + 1)


# ---------------------------------------------------------------- activation estimate

@pytest.mark.parametrize("variant", [dict(), dict(mlp="gelu"), dict(pos="learned"),
                                     dict(norm="layernorm", bias=True), dict(heads="mqa"), dict(mlp="relu2"),
                                     dict(qk_norm=True), dict(logit_softcap=30.0)])
def test_activation_estimate_matches_saved_tensors(variant):
    cfg = tiny(**variant, dim=32, vocab_size=300, max_seq_len=32)
    model = build_model(cfg, seed=0)
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            saved[s.data_ptr()] = s.nbytes()
        return t

    B, T = 2, 32
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model(idx), idx)
    assert saved_activation_bytes(cfg, B, T) == pytest.approx(sum(saved.values()), rel=0.02)


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_each_block_adds_its_residuals_where_its_norms_say(block):
    """One layer against the block's formula written out here: pre-norm adds each sublayer's
    output to the stream and normalises its input; post-norm normalises after each addition."""
    import torch.nn.functional as F

    cfg = tiny(block=block, n_layers=1)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    layer = model.layers[0]
    for norm in (layer.attn_norm, layer.mlp_norm):  # gains other than 1, so a missing norm shows
        norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, cfg.dim)
    rope = model.pos.rotary(0, 7)

    def rms(t, w):
        return F.rms_norm(t, (cfg.dim,), w, cfg.norm_eps)

    with torch.no_grad():
        got = layer(x, rope)
        a, m = layer.attn, layer.mlp
        wa, wm = layer.attn_norm.weight, layer.mlp_norm.weight
        if block == "prenorm":
            h = x + a(rms(x, wa), rope)
            want = h + m(rms(h, wm))
        else:
            h = rms(x + a(x, rope), wa)
            want = rms(h + m(h), wm)
    torch.testing.assert_close(got, want)

"""The original plan's checks on the gpt core as plain tests, plus its API contracts (presets, KV-cache
errors, generate). The Hypothesis properties generalise the first four to every drawn config."""
import math

import pytest
import torch

from gpt import GPT, Config
from gpt.attention import attention_probs

pytestmark = pytest.mark.gpt_internal


def tiny(**kw):
    return GPT.Config(**{**dict(vocab_size=128, n_layer=2, n_head=2, n_embd=64, block_size=32), **kw})


def test_forward_shape():
    """GPT(config)(idx) is (B, T, vocab_size), as the plan writes it."""
    model = GPT(tiny())
    assert model(torch.randint(0, 128, (2, 16))).shape == (2, 16, 128)


def test_gradcheck_float64_wrt_input_embeddings():
    """Token ids are integers and carry no gradient, so gradients are checked w.r.t. the embeddings."""
    model = GPT(tiny(vocab_size=16, n_embd=8, block_size=4)).double().eval()
    emb = model.embed(torch.randint(0, 16, (1, 4))).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: model(inputs_embeds=e), (emb,), fast_mode=True)


def test_causal_mask_zero_above_diagonal():
    """Math-backend attention weights are exactly zero above the diagonal."""
    q, k = torch.randn(2, 2, 8, 4), torch.randn(2, 2, 8, 4)
    probs = attention_probs(q, k, None, 0.5)
    lower = torch.ones(8, 8, dtype=torch.bool).tril()
    assert (probs.masked_select(~lower) == 0).all() and (probs.masked_select(lower) > 0).all()


def test_dropout_determinism_in_eval():
    model = GPT(tiny(embd_dropout=0.5, attn_dropout=0.5, resid_dropout=0.5)).eval()
    idx = torch.randint(0, 128, (2, 16))
    assert torch.equal(model(idx), model(idx))


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "pythia-160m", "llama-tiny", "shakespeare-char"])
def test_param_count_closed_form_presets(name):
    config = Config.from_name(name)
    with torch.device("meta"):
        model = GPT(config)
    assert config.param_count() == sum(p.numel() for p in model.parameters())


def test_gpt2_preset_is_124m():
    config = Config.from_name("gpt2")
    assert config.padded_vocab_size == 50304 and config.param_count() == 124_475_904


@pytest.mark.parametrize("n_layer", [1, 2, 4])
@pytest.mark.parametrize("n_head", [1, 2, 4, 8])
def test_config_sweep_layers_by_heads(n_layer, n_head):
    model = GPT(tiny(n_layer=n_layer, n_head=n_head))
    logits = model(torch.randint(0, 128, (1, 8)))
    assert logits.shape == (1, 8, 128) and torch.isfinite(logits).all()


def test_residual_projections_scaled_at_init():
    torch.manual_seed(0)
    model = GPT(Config(vocab_size=64, n_layer=8, n_head=4, n_embd=256, block_size=8))
    expected = 0.02 / math.sqrt(2 * 8)
    assert abs(model.blocks[0].attn.proj.weight.std().item() - expected) < 0.05 * expected
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.05 * 0.02


def test_kv_cache_holds_query_groups_and_refuses_overflow():
    model = GPT(tiny(n_head=4, n_query_groups=2))
    model.set_kv_cache(batch_size=1, max_seq_length=8)
    assert model.blocks[0].attn.kv_cache.k.shape == (1, 2, 8, 16)
    model(torch.randint(0, 128, (1, 6)), input_pos=0)
    with pytest.raises(ValueError, match="KV cache length"):
        model(torch.randint(0, 128, (1, 3)), input_pos=6)
    with pytest.raises(ValueError, match="max_seq_length"):
        model.set_kv_cache(1, 33)


def test_generate_greedy_matches_argmax_of_full_forward():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    prompt = torch.randint(0, 128, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    assert torch.equal(model(out[:, :-1]).argmax(-1)[:, 4:], out[:, 5:])
    assert model.kv_cache_length is None  # generate frees its cache
    sampled = model.generate(prompt, 6, temperature=1.0, top_k=3)
    assert ((sampled >= 0) & (sampled < 128)).all()


def test_flash_backend_errors_clearly_on_cpu():
    model = GPT(tiny(attn_backend="flash"))
    with pytest.raises((ValueError, ImportError), match="flash"):
        model(torch.randint(0, 128, (1, 4)))


def test_idx_on_wrong_device_or_shape():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="shape"):
        model(torch.randint(0, 128, (16,)))
    with pytest.raises(TypeError, match="Tensor"):
        model([[1, 2, 3]])

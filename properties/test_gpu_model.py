"""GPU properties of the whole model on CUDA: causality, prefix consistency and KV-cache equivalence in
bf16 with the fast backends, eval determinism, and torch.compile equivalence without graph breaks.

Exact invariants stay exact where the arithmetic is the same: the logits at positions <= t are computed
from identical inputs by identical kernels whatever follows t, so they must be bitwise equal. Where the
arithmetic legitimately differs (a prefix is tiled differently, the cache splits the keys, compile fuses
ops), the low-precision result must stay within 2x the error that the eager math backend in the same
dtype makes against float64, plus the noise floor (properties.harness.assert_low_precision).
"""
import pytest
import torch
from hypothesis import given, strategies as st

from gpt import GPT
from gpt.attention import flash_available
from properties.gpu import device
from properties.harness import assert_low_precision
from properties.subject import GPTSubject
from strategies import ConfigSpace, configs, decode_plans, perturbations, seeds, token_batches

pytestmark = [pytest.mark.gpu, pytest.mark.gpt_internal]
SUBJECT = GPTSubject(("sdpa", "flash") if flash_available() else ("sdpa",), "gpt-cuda")
# flash-attn kernels have no tile for every head size: draw the sizes real models use
SPACE = ConfigSpace(backends=SUBJECT.space.backends, free_head_size=False)


def _case(data, min_len=1):
    # few head sizes: FlashAttention-4 compiles a kernel per shape class on first use
    head_size = data.draw(st.sampled_from([32, 64]), label="head_size")
    config = data.draw(configs(SPACE, size="medium", head_size=head_size), label="config")
    seed = data.draw(seeds(), label="seed")
    idx = data.draw(token_batches(config, min_len=min_len), label="idx").to(device())
    return config, seed, idx


def _model(config, seed, dtype):
    torch.manual_seed(seed)
    return GPT(config).to(device=device(), dtype=dtype).eval()


def _references(config, seed, idx, dtype):
    """(float64 math logits, same-dtype math logits) for the rule's two reference points."""
    math_config = config.replace(attn_backend="math")
    with torch.no_grad():
        return _model(math_config, seed, torch.float64)(idx), _model(math_config, seed, dtype)(idx)


@given(data=st.data())
def test_cuda_causality_bf16_is_exact(data):
    """bf16, fast backends: logits at positions <= t are bitwise unchanged by tokens after t."""
    config, seed, idx = _case(data, min_len=2)
    t, perturbed = data.draw(perturbations(idx.cpu(), config.vocab_size), label="perturbation")
    model = _model(config, seed, torch.bfloat16)
    with torch.no_grad():
        a, b = model(idx), model(perturbed.to(idx.device))
    assert torch.equal(a[:, : t + 1], b[:, : t + 1]), f"{config.attn_backend}: future tokens changed past logits"


@given(data=st.data())
def test_cuda_prefix_and_cache_bf16(data):
    """bf16: forward(x[:, :t]) and chunked KV-cache decoding each match float64 within the rule."""
    config, seed, idx = _case(data)
    t = data.draw(st.integers(1, idx.size(1)), label="t")
    plan = data.draw(decode_plans(idx.size(1)), label="chunks")
    ref64, ref_low = _references(config, seed, idx, torch.bfloat16)
    model = _model(config, seed, torch.bfloat16)
    with torch.no_grad():
        assert_low_precision(model(idx[:, :t]), ref_low[:, :t], ref64[:, :t], 2, f"{config.attn_backend} prefix {t}")
        model.set_kv_cache(idx.size(0), idx.size(1))
        chunks, pos = [], 0
        for n in plan:
            chunks.append(model(idx[:, pos : pos + n], input_pos=pos))
            pos += n
    assert_low_precision(torch.cat(chunks, 1), ref_low, ref64, 2, f"{config.attn_backend} cached decode {plan}")


@given(data=st.data())
def test_cuda_eval_is_deterministic(data):
    """On CUDA, two eval forwards in any dtype are bitwise identical."""
    config, seed, idx = _case(data)
    dtypes = [torch.bfloat16, torch.float16] + ([torch.float32] if config.attn_backend != "flash" else [])
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    model = _model(config, seed, dtype)
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))


@pytest.mark.slow
def test_compile_matches_eager_without_graph_breaks():
    """torch.compile(model) gives the eager float32 outputs and gradients within the rule (eager float32
    math backend as the same-dtype reference, float64 as truth), and dynamo finds no graph break."""
    dev = device()
    config = GPT.Config(vocab_size=512, n_layer=2, n_head=4, n_embd=128, block_size=128, position_embedding="rope",
                        n_query_groups=2, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP")
    idx = torch.randint(0, 512, (2, 96), device=dev)
    explanation = torch._dynamo.explain(_model(config, 0, torch.float32))(idx)
    assert explanation.graph_break_count == 0, explanation.break_reasons

    def logits_and_grads(model):
        model.train()
        out = model(idx)
        out.float().square().mean().backward()
        return out.detach(), [p.grad for p in model.parameters()]

    out64, grads64 = logits_and_grads(_model(config.replace(attn_backend="math"), 0, torch.float64))
    ref, ref_grads = logits_and_grads(_model(config.replace(attn_backend="math"), 0, torch.float32))
    compiled, grads = logits_and_grads(torch.compile(_model(config, 0, torch.float32)))
    assert_low_precision(compiled, ref, out64, 2, "compiled logits")
    for g, r, g64 in zip(grads, ref_grads, grads64):
        assert_low_precision(g, r, g64, 3, "compiled gradient")

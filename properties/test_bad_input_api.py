"""Property 14 (continued): misuse of gpt's API fails loudly, naming the argument and its allowed range.

For every misuse m in the list of issue 21 (sampling arguments out of range, a negative number of new tokens,
a negative cache batch size, idx together with inputs_embeds, a gap in the KV cache, a text / pickle file or a
directory as a checkpoint, speculative decoding with k < 1 or another vocabulary): m raises ValueError or
TypeError whose message names the argument. Narrow integer ids (int8, int16, uint8) are accepted and give
exactly the logits of the same ids as int64 (widening is exact); bool ids are refused by dtype.
"""
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from properties.harness import build, draw_case, gpt_only


pytestmark = pytest.mark.gpt_internal

MISUSES = ["top_k", "top_p", "temperature", "max_new_tokens", "too many tokens", "stop_tokens", "batch_size",
           "max_seq_length", "idx and inputs_embeds", "neither idx nor inputs_embeds", "cache gap", "text checkpoint",
           "pickle checkpoint", "directory checkpoint", "speculative k", "draft vocab_size", "logits shape",
           "bool ids"]


@pytest.mark.parametrize("misuse", MISUSES)
@settings(max_examples=max(2, settings.default.max_examples // 10))  # 18 cases x 2 draws under ci, x 40 nightly
@given(data=st.data())
def test_api_misuse_names_the_argument(subject, data, misuse):
    """misuse -> ValueError/TypeError matching the argument's name (and never a silent result)."""
    gpt_only(subject)
    from gpt.checkpoint import load_checkpoint
    from gpt.generate import generate, sample
    from gpt.speculative import speculative

    config, model, idx = draw_case(data, subject)
    idx = idx[:, : config.block_size - 1]
    bad_int = data.draw(st.integers(-5, 0), label="bad int")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.safetensors"
        cases = {
            "top_k": (lambda: generate(model, idx, 1, 1.0, top_k=bad_int), "top_k"),
            "top_p": (lambda: generate(model, idx, 1, 1.0, top_p=data.draw(st.sampled_from([0.0, -0.5, 1.5, float("nan")]),
                                                                           label="top_p")), "top_p"),
            "temperature": (lambda: generate(model, idx, 1, data.draw(st.sampled_from([-1.0, float("nan"), float("inf")]),
                                                                      label="T")), "temperature"),
            "max_new_tokens": (lambda: generate(model, idx, bad_int - 1), "max_new_tokens"),
            "too many tokens": (lambda: generate(model, idx, config.block_size), "max_new_tokens.*block_size"),
            "stop_tokens": (lambda: generate(model, idx, 1, stop_tokens=[config.vocab_size]), "stop_tokens"),
            "batch_size": (lambda: model.set_kv_cache(bad_int, config.block_size), "batch_size"),
            "max_seq_length": (lambda: model.set_kv_cache(1, bad_int), "max_seq_length"),
            "idx and inputs_embeds": (lambda: model(idx, inputs_embeds=model.embed(idx)), "idx.*inputs_embeds"),
            "neither idx nor inputs_embeds": (lambda: model(), "idx.*inputs_embeds"),
            "cache gap": (lambda: _decode_with_gap(model, idx, data), "input_pos.*gap"),
            "text checkpoint": (lambda: load_checkpoint(_write(path, b"not a checkpoint\n" * 3)), str(path)),
            "pickle checkpoint": (lambda: load_checkpoint(_write(path, pickle.dumps({"wte.weight": [1.0]}))), "pickle"),
            "directory checkpoint": (lambda: load_checkpoint(tmp), "directory"),
            "speculative k": (lambda: speculative(model, model, idx, 1, k=bad_int), "k "),
            "draft vocab_size": (lambda: speculative(model, _other_vocab(subject, config), idx, 1), "vocab_size"),
            "logits shape": (lambda: sample(torch.zeros(config.vocab_size, dtype=torch.float64), 1.0), "logits"),
            "bool ids": (lambda: model(idx > 0), "dtype"),
        }
        call, pattern = cases[misuse]
        with pytest.raises((ValueError, TypeError), match=pattern):
            call()


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def _other_vocab(subject, config):
    return build(subject, config.replace(vocab_size=config.vocab_size + 1), 0)


def _decode_with_gap(model, idx, data):
    """Prefill T tokens at 0, then decode one token at T + gap (gap >= 1): positions T..T+gap-1 are unwritten."""
    assume(model.config.block_size >= 3)  # room for a prompt, a gap and a token
    idx = idx[:, : model.config.block_size - 2]
    T = idx.size(1)
    gap = data.draw(st.integers(1, model.config.block_size - 1 - T), label="gap")
    model.set_kv_cache(idx.size(0), model.config.block_size)
    try:
        model(idx, input_pos=0)
        model(idx[:, :1], input_pos=T + gap)
    finally:
        model.clear_kv_cache()


@given(data=st.data(), dtype=st.sampled_from([torch.int8, torch.int16, torch.int32, torch.uint8]))
def test_narrow_integer_ids_are_widened_exactly(subject, data, dtype):
    """f(idx.to(d)) == f(idx) bitwise for d in int8, int16, int32, uint8 (ids < 128 fit every one of them)."""
    gpt_only(subject)
    config, model, idx = draw_case(data, subject)
    idx = idx % 128
    with torch.no_grad():
        assert torch.equal(model(idx.to(dtype)), model(idx)), f"ids as {dtype} give other logits than int64"


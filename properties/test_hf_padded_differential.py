"""Issue 14, property 7: differential against transformers with real inputs. Our GPT with converted weights
gives, with padding masks, per-row position ids and packed rows, the logits of the transformers model's own
padded / position_ids / padding-free forward, and decodes a left-padded batch through the cache like it,
for each HF family (GPT-2, GPT-NeoX, Llama, Mistral, Qwen2/3, Gemma 2, OLMo 2, Phi-3), in float64 to the summation-order bound.

Checks this project's conversion and mask code, so it runs on gpt subjects only (like test_hf_differential).
Logits at padded positions are implementation-defined and not compared.
"""
import pytest
import torch
from hypothesis import given, strategies as st

pytest.importorskip("transformers")

from gpt import GPT  # noqa: E402
from gpt.convert_hf import FAMILIES, to_hf  # noqa: E402
from properties.harness import assert_close64, gpt_only  # noqa: E402
from properties.hf_subjects import BY_FAMILY  # noqa: E402
from strategies import configs, decode_plans, packed_rows, padded_batches, ragged_starts, seeds  # noqa: E402

HF = {family: cls() for family, cls in BY_FAMILY.items()}


@given(data=st.data())
def test_padded_inputs_give_transformers_logits_float64(subject, data):
    """With m a padding mask (either side), P ragged row starts and S packed segments:
    GPT(x, m)[m = 1] == HF(x, m, position_ids = cumsum(m) - 1)[m = 1];
    GPT(x, position_ids=P) == HF(x, position_ids=P);
    GPT(pack, segment_ids=S) == HF(pack, position_ids restarting per segment) (HF's padding-free packing);
    and decoding a left-padded batch in drawn chunks through each side's cache agrees at the real tokens.
    float64 (transformers under hf_float64), summation-order bound."""
    gpt_only(subject)
    family = data.draw(st.sampled_from(FAMILIES), label="family")
    hf_subject = HF[family]
    config = data.draw(configs(hf_subject.space), label="config")
    torch.manual_seed(data.draw(seeds(), label="seed"))
    ours = GPT(config).double().eval()
    hf = to_hf(ours, family)
    batch = data.draw(padded_batches(config), label="padded batch")
    real = batch.mask.bool()
    B, T = batch.idx.shape
    pos = data.draw(ragged_starts(config, B, T), label="position_ids")
    packed = data.draw(packed_rows(config), label="packed rows")
    left = data.draw(padded_batches(config, sides=("left",)), label="left-padded batch")
    plan = data.draw(decode_plans(left.idx.size(1)), label="chunks")
    with torch.no_grad():
        got = hf_subject.logits(hf, batch.idx, attention_mask=batch.mask)
        assert_close64(got[real], ours(batch.idx, attention_mask=batch.mask)[real], config,
                       f"{family}: transformers padded forward vs ours")
        assert_close64(hf_subject.logits(hf, batch.idx, position_ids=pos), ours(batch.idx, position_ids=pos), config,
                       f"{family}: transformers with ragged position_ids vs ours")
        assert_close64(hf_subject.logits_packed(hf, packed.idx, packed.segment_ids),
                       ours(packed.idx, segment_ids=packed.segment_ids), config,
                       f"{family}: transformers padding-free packing vs our segment_ids")
        decoded = {}
        for name, subj, model in (("transformers", hf_subject, hf), ("ours", subject, ours)):
            subj.reset_cache(model, left.idx.size(0), left.idx.size(1))
            chunks, start = [], 0
            for n in plan:
                chunks.append(subj.decode(model, left.idx[:, start : start + n], start,
                                          attention_mask=left.mask[:, : start + n]))
                start += n
            decoded[name] = torch.cat(chunks, dim=1)[left.mask.bool()]
        assert_close64(decoded["transformers"], decoded["ours"], config,
                       f"{family}: left-padded cached decoding in chunks {plan}")


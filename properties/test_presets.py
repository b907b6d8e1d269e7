"""The presets of current open models have their published parameter counts: ``Config.param_count()`` of
each equals the count transformers gives for the converted config (``gpt.convert_hf.config_to_hf``), with
both models built on the meta device (no memory, no weights), and equals our own GPT's count there too.
Exact integer equality: a count is no floating-point result."""
import pytest
import torch

pytest.importorskip("transformers")

from gpt import GPT, Config  # noqa: E402
from gpt.convert_hf import config_to_hf  # noqa: E402
from gpt.hf_llama_families import SPECS  # noqa: E402

pytestmark = [pytest.mark.gpt_internal, pytest.mark.slow]  # ~2 s of CPU per 7B-scale meta model
# preset -> (transformers family, published count as stated in README.md)
PUBLISHED = {
    "llama-3.2-1b": ("llama", 1_235_814_400),
    "mistral-7b": ("mistral", 7_241_732_096),
    "qwen3-0.6b": ("qwen3", 596_049_920),
    "gemma-2-2b": ("gemma2", 2_614_341_888),
    "olmo-2-1b": ("olmo2", 1_484_916_736),
    "phi-3-mini": ("phi3", 3_821_079_552),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied tensor once


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_param_count_equals_transformers(name):
    """Config.from_name(name).param_count() == #params(HF model) == #params(GPT) == the README's number."""
    import transformers

    family, published = PUBLISHED[name]
    config = Config.from_name(name)
    assert config.padded_vocab_size == config.vocab_size, "HF has no vocabulary padding"
    with torch.device("meta"):
        hf = getattr(transformers, SPECS[family].hf_class)(config_to_hf(config, family))
        ours = GPT(config)
    assert (config.param_count(), _count(ours), _count(hf)) == (published,) * 3

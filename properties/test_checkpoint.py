"""Property 13: save/load round trip. A checkpoint reloads to bitwise identical logits, and a checkpoint
is refused by a model whose config differs."""
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from properties.harness import draw_case


@pytest.mark.needs("save_load")
@given(data=st.data())
def test_checkpoint_round_trip_and_mismatch(subject, data):
    """load(save(model)) gives the same logits exactly; loading into another config raises ValueError."""
    config, model, idx = draw_case(data, subject)
    field, value = data.draw(st.sampled_from([("n_layer", config.n_layer + 1), ("vocab_size", config.vocab_size + 1),
                                              ("tie_embeddings", not config.tie_embeddings),
                                              ("block_size", config.block_size + 1)]), label="changed field")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "model.safetensors")
        subject.save(model, path)
        restored = subject.load(path, config).to(torch.float64).eval()
        with torch.no_grad():
            assert torch.equal(subject.logits(restored, idx), subject.logits(model, idx)), "round trip changed logits"
        with pytest.raises(ValueError, match=field):
            subject.load(path, config.replace(**{field: value}))

"""Property 15.5: loading preserves outputs, dtypes and aliasing, and refuses every broken file by name.

Round trips: load(save(m)) (into a new model and into a given one), from_hf(to_hf(m)) and
load_hf_checkpoint(save_pretrained(to_hf(m))) give bitwise equal logits and the same dtype, and
tied(m) <=> the head and embedding are one tensor after every path (untied stays two tensors).
Refusals: a checkpoint missing any one tensor, with an extra one, with one of the wrong shape or dtype,
truncated at any byte, a text file, a pickle (never unpickled) or a directory raises ValueError whose
message names the file and, where one is to blame, the tensor.
"""
import json
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from properties.harness import build, draw_case, draw_config, gpt_only
from strategies import seeds, token_batches

pytestmark = pytest.mark.gpt_internal


def _tied(model) -> bool:
    return model.lm_head.weight is model.wte.weight


def _assert_same(restored, model, idx, what):
    assert _tied(restored) == model.config.tie_embeddings, (
        f"{what}: tie_embeddings={model.config.tie_embeddings} but head and embedding are "
        f"{'one tensor' if _tied(restored) else 'two tensors'}")
    assert restored.lm_head.weight.dtype == model.lm_head.weight.dtype, f"{what}: dtype changed"
    with torch.no_grad():
        assert torch.equal(restored.eval()(idx), model.eval()(idx)), f"{what}: logits changed"


@settings(max_examples=max(2, settings.default.max_examples // 2))
@given(data=st.data())
def test_checkpoint_round_trip_keeps_outputs_dtype_and_aliasing(subject, data):
    """load_checkpoint(save_checkpoint(m)) == m bitwise, same dtype, tied <=> one tensor (new and given model)."""
    gpt_only(subject)
    from gpt import GPT
    from gpt.checkpoint import load_checkpoint, save_checkpoint

    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16]), label="dtype")
    config, model, idx = draw_case(data, subject, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_checkpoint(model, path)
        _assert_same(load_checkpoint(path), model, idx, "load_checkpoint(path)")
        fresh = GPT(config).to(dtype)
        _assert_same(load_checkpoint(path, fresh), model, idx, "load_checkpoint(path, model)")


def _rewrite(path: Path, change) -> None:
    """Rewrite a safetensors file with ``change(tensors)`` applied, keeping its metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


class _Trap:
    """Unpickling this writes a file: the proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


@pytest.mark.parametrize("kind", ["missing", "extra", "shape", "dtype", "truncated", "text", "pickle", "directory",
                                  "tied differ"])
@settings(max_examples=max(2, settings.default.max_examples // 10))  # 9 kinds x 2 draws under ci, x 40 nightly
@given(data=st.data())
def test_broken_checkpoints_are_refused_by_name(subject, data, kind):
    """Each corruption of a saved checkpoint raises ValueError naming the file and the tensor at fault."""
    gpt_only(subject)
    from gpt.checkpoint import load_checkpoint, save_checkpoint

    config, model, _ = draw_case(data, subject)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_checkpoint(model, path)
        with safe_open(str(path), framework="pt") as f:
            names = sorted(f.keys())
        name = data.draw(st.sampled_from(names), label="tensor")
        blame = [str(path), name]
        if kind == "missing":
            _rewrite(path, lambda t: t.pop(name))
        elif kind == "extra":
            blame = [str(path), "blocks.99.extra.weight"]
            _rewrite(path, lambda t: t.__setitem__("blocks.99.extra.weight", torch.zeros(2, dtype=t[name].dtype)))
        elif kind == "shape":
            _rewrite(path, lambda t: t.__setitem__(name, torch.zeros(t[name].numel() + 1, dtype=t[name].dtype)))
        elif kind == "dtype":
            other = data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64]), label="other dtype")
            _rewrite(path, lambda t: t.__setitem__(name, t[name].to(other)))
        elif kind == "truncated":
            raw = path.read_bytes()
            header_end = 8 + int.from_bytes(raw[:8], "little")
            cut = data.draw(st.one_of(st.integers(header_end, len(raw) - 1), st.integers(0, header_end - 1)),
                            label="cut at")  # in the tensor data (first) or in the header
            path.write_bytes(raw[:cut])
            blame = [str(path)]
        elif kind == "text":
            path.write_text(data.draw(st.sampled_from(["hello", "{\"config\": 1}\n" * 40, ""]), label="text"))
            blame = [str(path)]
        elif kind == "pickle":
            marker = Path(tmp) / "unpickled.txt"
            if data.draw(st.booleans(), label="torch.save"):
                torch.save({"wte.weight": _Trap(str(marker))}, path)
            else:
                path.write_bytes(pickle.dumps(_Trap(str(marker))))
            blame = [str(path), "pickle"]
        elif kind == "directory":
            path.unlink()
            path.mkdir()
            blame = [str(path), "directory"]
        else:
            if not config.tie_embeddings:
                return
            kept = "wte.weight" if "wte.weight" in names else "lm_head.weight"  # save keeps one alias
            other = "lm_head.weight" if kept == "wte.weight" else "wte.weight"
            blame = [str(path), other]
            _rewrite(path, lambda t: t.__setitem__(other, t[kept] + 1))
        with pytest.raises(ValueError) as err:
            load_checkpoint(path)
        for word in blame:
            assert word in str(err.value), f"{kind}: message {str(err.value)!r} does not name {word!r}"
        if kind == "pickle":
            assert not marker.exists(), "a pickle was unpickled"


@settings(max_examples=max(2, settings.default.max_examples // 10))  # transformers builds: ~0.1 s each; depth in nightly
@given(data=st.data())
def test_hf_conversions_keep_outputs_dtype_and_aliasing(subject, data):
    """from_hf(to_hf(m)) and load_hf_checkpoint(save_pretrained(to_hf(m))) == m bitwise, same dtype, tied <=>
    one tensor (on the HF side too); a saved HF checkpoint with the drawn tensor missing, with an extra
    tensor, or with the drawn tensor misshapen (each of the three) is refused naming the directory and the
    HF tensor."""
    gpt_only(subject)
    pytest.importorskip("transformers")
    from gpt.convert_hf import from_hf, load_hf_checkpoint, to_hf
    from properties.hf_subjects import HFGPT2Subject, HFLlamaSubject, HFNeoXSubject

    family = data.draw(st.sampled_from([HFGPT2Subject, HFNeoXSubject, HFLlamaSubject]), label="family")()
    config = draw_config(data, family)
    model = build(subject, config, data.draw(seeds(), label="seed"))
    idx = data.draw(token_batches(config), label="idx")
    hf = to_hf(model, family.family)
    hf_tied = hf.lm_head.weight is hf.get_input_embeddings().weight
    assert hf_tied == config.tie_embeddings, f"to_hf: tie_embeddings={config.tie_embeddings}, HF tied={hf_tied}"
    _assert_same(from_hf(hf, padding_multiple=config.padding_multiple), model, idx, "from_hf(to_hf(m))")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        # config.json holds the model, not the kernel choice: ask for the same backend, so "bitwise" holds
        loaded = load_hf_checkpoint(tmp, padding_multiple=config.padding_multiple, attn_backend=config.attn_backend)
        _assert_same(loaded, model, idx, "load_hf_checkpoint")
        with safe_open(str(Path(tmp) / "model.safetensors"), framework="pt") as f:
            name = data.draw(st.sampled_from(sorted(f.keys())), label="HF tensor")
    for kind in ("missing", "extra", "shape"):  # every corruption of the drawn tensor, each on a fresh save
        if kind == "missing" and name == "lm_head.weight" and config.tie_embeddings:
            continue  # a tied checkpoint may omit the head: that is not a corruption
        blame = "model.layers.99.extra.weight" if kind == "extra" else name
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp)
            _rewrite(Path(tmp) / "model.safetensors", {
                "missing": lambda t: t.pop(name),
                "extra": lambda t: t.__setitem__(blame, torch.zeros(2, dtype=t[name].dtype)),
                "shape": lambda t: t.__setitem__(name, torch.zeros(t[name].numel() + 1, dtype=t[name].dtype)),
            }[kind])
            with pytest.raises(ValueError) as err:
                load_hf_checkpoint(tmp, padding_multiple=config.padding_multiple, attn_backend=config.attn_backend)
            assert tmp in str(err.value) and blame.split(".", 1)[-1] in str(err.value), (
                f"{kind} {name}: message {str(err.value)!r} names neither the directory nor the tensor")
    json.dumps(config.to_dict())

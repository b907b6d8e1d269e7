"""Strict weight loading shared by ``gpt.checkpoint`` and ``gpt.convert_hf``.

A safetensors file is checked from its header before any tensor is read: a directory, a text file, a
pickle or ``torch.save`` zip (never unpickled: unpickling runs arbitrary code), a header that is not
JSON, or a file shorter than its header promises (truncated) is refused with a ValueError naming the
file (and the tensor, where one is to blame). Loading into a model then refuses missing and unexpected
tensors by name, wrong shapes, and dtypes that disagree within one source, and copies values into the
model's existing tensors in place, so tied weights stay one shared tensor and untied ones stay apart.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping, Union

import torch
from torch import Tensor, nn

PathLike = Union[str, os.PathLike]
DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit
_PICKLE_HINT = ("gpt never unpickles (unpickling can run arbitrary code): convert it to safetensors with "
                "safetensors.torch.save_file in a trusted environment")


def read_header(path: PathLike) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file: name -> {dtype, shape, data_offsets}, and the metadata
    strings; every structural problem raises ValueError naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; a checkpoint is one .safetensors file "
                         "(for a Hugging Face checkpoint directory use gpt.convert_hf.load_hf_checkpoint)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        # a safetensors header (JSON) starts at byte 8 with "{"; its little-endian length may itself begin
        # with 0x80 0x02..0x05 (lengths 640..1408 bytes), so the pickle signature alone does not decide
        json_next = f.read(1) == b"{"
        pickled = head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04"
        if pickled and not json_next:
            raise ValueError(f"{path} is a pickle or torch.save file, not safetensors; {_PICKLE_HINT}")
        f.seek(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file: {size} bytes, shorter than the 8-byte header "
                             "length (empty or truncated)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise ValueError(f"{path} is not a safetensors file (a text file, or truncated): its header length "
                             f"field says {n} bytes, the file has {size - 8} after it")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object ({e})") from None
    metadata = header.pop("__metadata__", None) or {}
    data = size - 8 - n
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES or "shape" not in info \
                or len(info.get("data_offsets", ())) != 2:
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry {info!r}")
        begin, end = info["data_offsets"]
        numel = 1
        for s in info["shape"]:
            numel *= s
        if end - begin != numel * DTYPES[info["dtype"]].itemsize:
            raise ValueError(f"{path}: tensor {name!r} of shape {info['shape']} {info['dtype']} spans "
                             f"{end - begin} bytes, not {numel * DTYPES[info['dtype']].itemsize}")
        if end > data:
            raise ValueError(f"{path} is truncated: tensor {name!r} needs bytes up to {end} of the data section, "
                             f"the file has {data}")
    return header, metadata


def read_tensors(path: PathLike, device="cpu") -> dict[str, Tensor]:
    """Every tensor of a safetensors file, after ``read_header`` accepted it."""
    from safetensors import safe_open

    read_header(path)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def common_dtype(dtypes: Mapping[str, torch.dtype], source: str) -> torch.dtype:
    """The one floating dtype of every tensor in ``source``; ValueError naming the tensor that differs."""
    if not dtypes:
        raise ValueError(f"{source} holds no tensors")
    first_name, first = next(iter(dtypes.items()))
    for name, dtype in dtypes.items():
        if not dtype.is_floating_point:
            raise ValueError(f"{source}: tensor {name!r} has dtype {dtype}; weights must be floating point")
        if dtype != first:
            raise ValueError(f"{source}: tensor {name!r} has dtype {dtype}, but {first_name!r} has {first}; "
                             "a checkpoint holds one dtype")
    return first


def load_into(model: nn.Module, tensors: Mapping[str, Tensor], source: str) -> nn.Module:
    """Copy ``tensors`` into ``model``'s parameters and persistent buffers in place (cast to their dtype).

    Names that alias one tensor in the model (tied weights) form one group: the source may hold any of
    them, and all it holds must be equal. ValueError names every missing and unexpected tensor, and any
    tensor of the wrong shape or of a dtype that differs from the rest of the source.
    """
    common_dtype({k: v.dtype for k, v in tensors.items()}, source)
    groups: dict[int, list[tuple[str, Tensor]]] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(_persistent_buffers(model)):
        groups.setdefault(id(t), []).append((name, t))
    known = {name for group in groups.values() for name, _ in group}
    unexpected = sorted(set(tensors) - known)
    missing = [" = ".join(n for n, _ in g) for g in groups.values() if not any(n in tensors for n, _ in g)]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing tensors {missing}, unexpected tensors {unexpected}")
    for group in groups.values():
        present = [n for n, _ in group if n in tensors]
        for name in present:
            if tuple(tensors[name].shape) != tuple(group[0][1].shape):
                raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                 f"the model needs {tuple(group[0][1].shape)}")
        for name in present[1:]:
            if not torch.equal(tensors[name], tensors[present[0]]):
                raise ValueError(f"{source}: {present[0]!r} and {name!r} are one tied tensor in the model "
                                 "(tie_embeddings=True) but differ in the source")
    with torch.no_grad():
        for group in groups.values():  # one copy per group, from the first alias the source holds
            name, target = next(((n, t) for n, t in group if n in tensors), (None, None))
            if name is not None:
                target.copy_(tensors[name])
    return model


def _persistent_buffers(model: nn.Module):
    sd_keys = set(model.state_dict().keys())
    return [(n, b) for n, b in model.named_buffers(remove_duplicate=False) if n in sd_keys]

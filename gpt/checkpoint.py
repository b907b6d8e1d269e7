"""Safetensors checkpoints with the config stored in the file's metadata (never pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from .config import Config
from .model import GPT

PathLike = Union[str, os.PathLike]


def save_checkpoint(model: GPT, path: PathLike) -> None:
    """Write weights and config atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata={"config": json.dumps(model.config.to_dict())})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_config(path: PathLike) -> Config:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no gpt config in its metadata; was it written by save_checkpoint?")
    return Config.from_dict(json.loads(meta["config"]))


def checkpoint_dtype(path: PathLike) -> torch.dtype:
    """The dtype of the checkpoint's weights (read from the header, no tensor is loaded)."""
    with safe_open(str(path), framework="pt") as f:
        return _DTYPES[f.get_slice(next(iter(f.keys()))).get_dtype()]


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def load_checkpoint(path: PathLike, model: Optional[GPT] = None, device="cpu") -> GPT:
    """Load into ``model`` (its config must equal the file's; tensors take the model's dtype) or into a
    new GPT built from the file in the file's dtype."""
    config = read_config(path)
    if model is None:
        model = GPT(config).to(checkpoint_dtype(path))
    elif model.config.to_dict() != config.to_dict():
        diff = {k: (v, config.to_dict()[k]) for k, v in model.config.to_dict().items() if config.to_dict()[k] != v}
        raise ValueError(f"checkpoint config differs from the model's (model, file): {diff}")
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(f"checkpoint tensors do not match the model: missing {missing}, unexpected {unexpected}")
    return model

"""Safetensors checkpoints with the config stored in the file's metadata (never pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors.torch import save_model

from .config import Config
from .loading import DTYPES, common_dtype, load_into, read_header, read_tensors
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
    _, meta = read_header(path)
    if "config" not in meta:
        raise ValueError(f"{path} has no gpt config in its metadata; was it written by save_checkpoint?")
    return Config.from_dict(json.loads(meta["config"]))


def checkpoint_dtype(path: PathLike) -> torch.dtype:
    """The one dtype of the checkpoint's weights (read from the header, no tensor is loaded)."""
    header, _ = read_header(path)
    return common_dtype({name: DTYPES[info["dtype"]] for name, info in header.items()}, str(path))


def load_checkpoint(path: PathLike, model: Optional[GPT] = None, device="cpu") -> GPT:
    """Load into ``model`` (its config must equal the file's; tensors take the model's dtype) or into a
    new GPT built from the file in the file's dtype.

    Refused with a ValueError naming the file (and tensor): a directory, text or pickle file, a truncated
    file, a missing or unexpected tensor, a wrong shape, mixed dtypes, differing tied tensors.
    Nothing is unpickled; tied weights stay one tensor.
    """
    config = read_config(path)
    dtype = checkpoint_dtype(path)
    if model is None:
        model = GPT(config).to(device=device, dtype=dtype)
    elif model.config.to_dict() != config.to_dict():
        diff = {k: (v, config.to_dict()[k]) for k, v in model.config.to_dict().items() if config.to_dict()[k] != v}
        raise ValueError(f"checkpoint config differs from the model's (model, file): {diff}")
    return load_into(model, read_tensors(path, device), str(path))

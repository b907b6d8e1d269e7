"""Character-level data: the tiny-shakespeare corpus, a char tokenizer and synthetic tokens.

The corpus is never part of the repository. ``resolve_corpus`` finds it, in this order:

1. ``path`` (the config's ``data.path``), when that file exists;
2. ``$GPT_PROPERTIES_DATA``, when set (a missing file there is an error: it was set on purpose);
3. a verified copy in the cache directory (``$XDG_CACHE_HOME/gpt-properties`` or ``~/.cache/gpt-properties``);
4. a download from the public URL into that cache, checked against the known sha256 (when ``download``).

When none works, :class:`CorpusNotFoundError` says what was tried and how to provide the file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DATA_ENV = "GPT_PROPERTIES_DATA"
CACHE_SUBPATH = Path("tinyshakespeare") / "input.txt"


class CorpusNotFoundError(FileNotFoundError):
    """The corpus is neither on disk nor downloadable; the message says how to provide it."""


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt-properties"


def resolve_corpus(path: Union[str, Path, None] = None, *, cache_dir: Union[str, Path, None] = None,
                   download: bool = True, url: str = TINY_SHAKESPEARE_URL,
                   sha256: str = TINY_SHAKESPEARE_SHA256, timeout: float = 30.0) -> Path:
    """The path of a readable corpus file (see the module docstring for the search order)."""
    tried = []
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        tried.append(f"data.path={path} (no such file)")
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
        # an explicitly set variable that points nowhere is a mistake, not a reason to download
        raise CorpusNotFoundError(f"${DATA_ENV}={env} does not name a file. " + _how_to_provide(cache_dir))
    cached = Path(cache_dir or default_cache_dir()) / CACHE_SUBPATH
    if cached.is_file():
        if sha256 is None or sha256_of(cached) == sha256:
            return cached
        tried.append(f"cache {cached} (sha256 mismatch; delete it to re-download)")
    else:
        tried.append(f"cache {cached} (absent)")
    if download:
        try:
            return _download(url, cached, sha256, timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            tried.append(f"download {url} ({e})")
    else:
        tried.append("download (disabled: data.download=false)")
    raise CorpusNotFoundError("tiny-shakespeare corpus not found; tried: " + "; ".join(tried) + ". "
                              + _how_to_provide(cache_dir))


def _how_to_provide(cache_dir) -> str:
    cached = Path(cache_dir or default_cache_dir()) / CACHE_SUBPATH
    return (f"Provide it in one of these ways: pass data.path=/path/to/input.txt on the command line; "
            f"set {DATA_ENV}=/path/to/input.txt; put the file at {cached}; or run once online "
            f"(data.download=true) so it is downloaded from {TINY_SHAKESPEARE_URL}. "
            f"Or use --synthetic to train on generated tokens instead.")


def _download(url: str, dest: Path, sha256: Optional[str], timeout: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # write to a temporary file and rename only after the checksum matches: an interrupted or
    # tampered download never becomes the cached copy
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        got = sha256_of(tmp)
        if sha256 is not None and got != sha256:
            raise ValueError(f"sha256 mismatch: expected {sha256}, got {got}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


class CharTokenizer:
    """One id per distinct character, in sorted order (nanoGPT's shakespeare_char: 65 for the corpus)."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        try:
            return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def load_corpus(path=None, **resolve_kwargs) -> tuple[Tensor, CharTokenizer, Path]:
    """(token ids of the whole corpus, its tokenizer, the file used)."""
    file = resolve_corpus(path, **resolve_kwargs)
    text = file.read_text(encoding="utf-8")
    if len(text) < 2:
        raise ValueError(f"corpus {file} is too short to make a training pair")
    tok = CharTokenizer.from_text(text)
    return tok.encode(text), tok, file


def synthetic_tokens(n: int, vocab_size: int, seed: int = 0) -> Tensor:
    """``n`` uniform random ids: no structure to exploit, so overfitting them is pure memorisation."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (n,), generator=g)


def fixed_batch(data: Tensor, batch_size: int, seq_len: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One (x, y) pair of shape (batch_size, seq_len) from seeded random offsets; y is x shifted by one."""
    if data.numel() < seq_len + 1:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, got {data.numel()}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=g)
    x = torch.stack([data[s: s + seq_len] for s in starts.tolist()])
    y = torch.stack([data[s + 1: s + 1 + seq_len] for s in starts.tolist()])
    return x, y

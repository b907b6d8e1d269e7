"""Overfit one fixed batch: if the loss does not fall to about zero, gradient flow is broken.

    python -m gpt.overfit --config configs/tiny_shakespeare.yaml optim.max_iters=20
    python -m gpt.overfit --synthetic data.batch_size=2 out_dir=/tmp/overfit

The YAML is merged with dotted ``key=value`` overrides (OmegaConf.from_cli); unknown keys are errors, so
a typo never silently runs the default. Writes ``metrics.json`` and ``loss_curve.png`` to ``out_dir`` and
exits 1 with a plain message when the loss on the batch after the last update is above
``max_final_loss``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from .runtime import DTYPES, PeakMemory, autocast, resolve_device, versions
from .config import Config
from .loss import cross_entropy
from .train import TrainStep
from .data import CorpusNotFoundError, fixed_batch, load_corpus, sha256_of, synthetic_tokens

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "tiny_shakespeare.yaml"


# --------------------------------------------------------------------------- configuration
def load_config(argv=None):
    """(merged DictConfig, the YAML path used). Overrides are ``a.b=c`` items after the flags."""
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(prog="python -m gpt.overfit", description=__doc__.split("\n\n")[0],
                                     epilog="overrides: dotted key=value pairs, e.g. optim.max_iters=20")
    parser.add_argument("--config", default=None, help=f"YAML config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--synthetic", action="store_true", help="train on random tokens (data.synthetic=true)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments {bad}; overrides look like optim.max_iters=20")
    path = _find(args.config) if args.config else DEFAULT_CONFIG
    if not path.is_file():
        parser.error(f"config file {args.config} not found (also looked under {REPO_ROOT})")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)  # unknown override keys raise instead of being silently added
    OmegaConf.set_struct(cfg.model.overrides, False)  # ... except Config fields, checked by Config itself
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_cli(overrides))
    except Exception as e:  # omegaconf's ConfigKeyError and friends: report plainly
        raise SystemExit(f"bad override: {e}") from None
    if args.synthetic:
        cfg.data.synthetic = True
    return cfg, path


def _find(path: str) -> Path:
    """A path as given (relative to the working directory), else relative to the repository root."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def lr_at(it: int, optim) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` (min_lr == lr: constant), as nanoGPT."""
    if it < optim.warmup_iters:
        return optim.lr * (it + 1) / optim.warmup_iters
    span = max(1, optim.max_iters - optim.warmup_iters)
    ratio = min(1.0, (it - optim.warmup_iters) / span)
    return optim.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (optim.lr - optim.min_lr)


def make_batch(cfg, vocab_size: int):
    """(x, y, data description, vocab size) for the fixed batch."""
    d = cfg.data
    if d.batch_size < 1 or d.seq_len < 1:
        raise SystemExit(f"data.batch_size and data.seq_len must be >= 1, got {d.batch_size} and {d.seq_len}")
    if d.synthetic:
        # a few batches' worth, so the seeded offsets still choose among different windows
        data = synthetic_tokens(4 * d.batch_size * (d.seq_len + 1), vocab_size, seed=cfg.seed)
        x, y = fixed_batch(data, d.batch_size, d.seq_len, seed=cfg.seed)
        return x, y, {"source": "synthetic", "vocab_size": vocab_size}, vocab_size
    data, tok, file = load_corpus(_find(d.path) if d.path else None, cache_dir=d.cache_dir, download=d.download)
    x, y = fixed_batch(data, d.batch_size, d.seq_len, seed=cfg.seed)
    info = {"source": str(file.resolve()), "sha256": sha256_of(file), "tokens": data.numel(),
            "vocab_size": tok.vocab_size, "first_row": tok.decode(x[0])}
    return x, y, info, tok.vocab_size


# --------------------------------------------------------------------------- training
def train(cfg) -> dict:
    from omegaconf import OmegaConf
    from tqdm import tqdm

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    if cfg.dtype not in DTYPES:
        raise SystemExit(f"dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    dtype = DTYPES[cfg.dtype]
    if cfg.optim.max_iters < 1:
        raise SystemExit(f"optim.max_iters must be >= 1, got {cfg.optim.max_iters}")
    overrides = OmegaConf.to_container(cfg.model.overrides)
    preset_vocab = Config.from_name(cfg.model.preset, **overrides).vocab_size
    x, y, data_info, vocab_size = make_batch(cfg, preset_vocab)
    config = Config.from_name(cfg.model.preset, **{**overrides, "vocab_size": vocab_size})
    if cfg.data.seq_len > config.block_size:
        raise SystemExit(f"data.seq_len={cfg.data.seq_len} exceeds the model's block_size={config.block_size}")

    from .model import GPT

    mem = PeakMemory(device)
    model = GPT(config).to(device).train()
    x, y = x.to(device), y.to(device)
    o = cfg.optim
    # no weight decay: it pulls weights towards zero, against memorising the batch
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def forward(idx: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return model(idx)

    t = cfg.train
    step = TrainStep(model, micro_batches=int(t.micro_batches), checkpoint=bool(t.checkpoint),
                     compile=bool(t.compile), forward=forward, scaler=scaler)

    print(f"overfit: {config.name} ({config.param_count() / 1e6:.2f}M params), batch {tuple(x.shape)}, "
          f"{data_info['source']}, {device}, {cfg.dtype}, {o.max_iters} iters at lr {o.lr:g}", flush=True)
    losses, lrs, iter_ms = [], [], []
    t_train = time.perf_counter()
    # disable=None: a live bar on a terminal, none in CI logs (the per-iteration lines remain)
    bar = tqdm(range(o.max_iters), desc="overfit", unit="it", file=sys.stderr, dynamic_ncols=True, disable=None)
    for it in bar:
        t0 = time.perf_counter()
        lr = lr_at(it, o)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = step(x, y)  # forward and backward over train.micro_batches pieces, token-mean loss
        if scaler is not None:
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        losses.append(loss.item())  # .item() syncs, so the iteration time below is real on CUDA too
        lrs.append(lr)
        iter_ms.append((time.perf_counter() - t0) * 1e3)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        tqdm.write(f"iter {it + 1:>4}/{o.max_iters}: loss {losses[-1]:.4f}, lr {lr:.2e}, {iter_ms[-1]:.0f} ms",
                   file=sys.stdout)
    bar.close()
    train_s = time.perf_counter() - t_train
    with torch.no_grad():
        final_loss = cross_entropy(step.forward(x), y, reduction="mean").item()  # the loss after the last update, which the threshold judges
    tokens = x.numel() * o.max_iters
    return {
        "passed": bool(final_loss <= cfg.max_final_loss),  # False for NaN too
        "final_loss": final_loss, "max_final_loss": cfg.max_final_loss,
        "initial_loss": losses[0] if losses else final_loss, "ln_vocab_size": math.log(vocab_size),
        "losses": losses, "lrs": lrs, "iter_ms": iter_ms, "iters": o.max_iters,
        "train_time_s": train_s, "wall_time_s": time.perf_counter() - t_start,
        "tokens_per_s": tokens / train_s if train_s > 0 else None,
        "peak_memory_mib": mem.peak_mib(), "process_peak_memory_mib": mem.process_peak_mib(),
        "memory_kind": mem.kind,
        "device": str(device), "dtype": cfg.dtype,
        "model": {"preset": config.name, "params": config.param_count(), "n_layer": config.n_layer,
                  "n_head": config.n_head, "n_embd": config.n_embd, "vocab_size": config.vocab_size},
        "batch": {"batch_size": x.size(0), "seq_len": x.size(1)}, "data": data_info,
        "config": OmegaConf.to_container(cfg, resolve=True), "versions": versions(device),
    }


def plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = range(1, len(metrics["losses"]) + 1)
    ax.plot(steps, metrics["losses"], marker="o", markersize=3, label="loss before each update")
    ax.axhline(metrics["max_final_loss"], color="tab:red", linestyle="--", label="max_final_loss")
    ax.axhline(metrics["ln_vocab_size"], color="tab:gray", linestyle=":", label="ln(vocab_size)")
    if all(v > 0 for v in metrics["losses"]):
        ax.set_yscale("log")  # the interesting part is the last decade towards zero
    b, m = metrics["batch"], metrics["model"]
    ax.set(xlabel="iteration", ylabel="cross-entropy",
           title=f"overfit {b['batch_size']}x{b['seq_len']}, {m['preset']}: final {metrics['final_loss']:.4f}")
    ax.xaxis.get_major_locator().set_params(integer=True)  # iterations are whole numbers
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    cfg, config_path = load_config(argv)
    try:
        metrics = train(cfg)
    except CorpusNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics["config_file"] = str(config_path)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot(metrics, out / "loss_curve.png")
    print(f"final loss {metrics['final_loss']:.4f} after {metrics['iters']} iters "
          f"(from {metrics['initial_loss']:.4f}); {metrics['wall_time_s']:.1f} s wall, "
          f"{metrics['tokens_per_s']:.0f} tokens/s, peak memory {metrics['peak_memory_mib']:.0f} MiB; "
          f"wrote {out / 'metrics.json'} and {out / 'loss_curve.png'}")
    if not metrics["passed"]:
        print(f"FAILED: final loss {metrics['final_loss']:.4f} is above max_final_loss={cfg.max_final_loss} "
              f"after {metrics['iters']} iterations: the model could not memorise one batch, so gradient flow "
              f"is likely broken (or lr/max_iters do not suit this batch)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step throughput of the gpt core against Hugging Face GPT-2: ``python -m gpt.bench``.

One step is forward + cross-entropy + backward + AdamW step on one random batch. Steps are timed after
``--warmup`` untimed ones (which also absorb ``torch.compile``): with CUDA events on a GPU, with
``time.perf_counter`` on a CPU (CPU ops are synchronous). Reported per model: tokens/s, the median step
time, model FLOPs utilisation and peak memory; then ours as a ratio to the baseline.

MFU = flops_per_token(T) * tokens/s / peak, with ``Config.flops_per_token`` = 6N + 12 L H D T (PaLM,
appendix B) for both models (they have the same shapes). The peak is ``--peak-tflops`` or, by default,
*measured* with a large matmul in the chosen dtype: an achievable peak, so the MFU is higher than one
against a datasheet figure.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` over model build + steps (weights, grads,
AdamW state, activations). On CPU there is no allocator counter, so each model runs in a fresh
subprocess and its peak is the rise of the process high-water mark (``resource.getrusage`` ru_maxrss)
from just before the model is built to the end of the steps: it includes the same items plus allocator
slack, and is comparable between the two models but not with the CUDA figure.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import torch
from torch.nn import functional as F

from .bench_models import build_model, hf_incompatibility, takes_targets
from .config import Config, PRESETS
from .fused_loss import FUSED, PACKAGES, fused_available, head_cross_entropy, linear_cross_entropy
from .runtime import CPU_MEMORY_KIND, CUDA_MEMORY_KIND, DTYPES, PeakMemory, autocast, resolve_device, versions
from .step_compile import captured, compile_options, parse_inductor, uses_cudagraphs

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")


# --------------------------------------------------------------------------- measurement
def measure(spec: dict) -> dict:
    """Build one model and time ``spec['steps']`` training steps after ``spec['warmup']`` ones."""
    device = torch.device(spec["device"])
    dtype = DTYPES[spec["dtype"]]
    torch.manual_seed(spec["seed"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    config = Config.from_name(spec["preset"], attn_backend=spec["backend"])
    B, T = spec["batch"], spec["seq_len"]
    if spec["impl"] == "hf_gpt2":
        import transformers  # noqa: F401  imported before the memory baseline: the library is not the model
    mem = PeakMemory(device)

    module = build_model(spec["impl"], config)
    own_loss = spec["impl"] not in ("gpt", "hf_gpt2") and takes_targets(module)
    module.to(device).train()
    n_params = sum(p.numel() for p in module.parameters())
    # foreach (torch's default) unless --fused-adamw; both models get the same optimizer
    whole = bool(spec.get("graph_step")) and spec["impl"] == "gpt"  # ours only: one CUDA graph per step
    # foreach (torch's default) unless --fused-adamw; a captured step needs capturable state (on the GPU)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True if spec["fused_adamw"] else None,
                            capturable=whole)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None  # fp16 needs loss scaling

    g = torch.Generator().manual_seed(spec["seed"])
    data = torch.randint(0, config.vocab_size, (B, T + 1), generator=g).to(device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            if spec["impl"] == "hf_gpt2" and spec.get("hf_labels"):
                # Hugging Face's own loss path (labels=, shifted inside the model), as its users train
                return module(input_ids=x, labels=x, use_cache=False).loss
            if spec["impl"] == "gpt" and spec["loss"] != "logits":
                h = module(x, return_hidden=True)
                if spec["loss"] in FUSED:
                    return linear_cross_entropy(h, module.lm_head.weight[: config.vocab_size], y, impl=spec["loss"])
                return head_cross_entropy(h, module.lm_head.weight, config.vocab_size, y)
            if own_loss:  # the baseline's own loss path, e.g. nanoGPT's forward(idx, targets) -> (logits, loss)
                out = module(x, targets=y)
                return out[1] if isinstance(out, tuple) else out.loss
            logits = module(input_ids=x, use_cache=False).logits if spec["impl"] == "hf_gpt2" else module(x)
        # otherwise the loss is computed identically for both models, in float32
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    # with --compile the whole forward + loss is compiled, so the float32 upcast and the cross-entropy
    # fuse instead of materialising (B*T, vocab) float32 logits
    mode = spec["compile_mode"] if spec["impl"] == "gpt" else spec["baseline_compile_mode"]
    inductor = spec.get("inductor") if spec["impl"] == "gpt" else None
    options = compile_options(mode, inductor)
    loss_fn = torch.compile(loss_of, **options) if spec["compile"] else loss_of
    if spec["impl"] == "gpt" and spec["loss"] in FUSED:
        if device.type == "cuda" and not fused_available(spec["loss"]):
            raise SystemExit(f"--loss {spec['loss']} needs CUDA and {PACKAGES[spec['loss']]}")

    graphs = spec["compile"] and uses_cudagraphs(mode, inductor)

    def step() -> torch.Tensor:
        if graphs:  # the previous step's graph outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.detach()

    for _ in range(spec["warmup"] - int(whole)):  # captured() takes the last warm-up step itself
        loss = step()
    if whole:
        step = captured(step, device)
    times_ms = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(spec["steps"])]
        for start, end in events:
            start.record()
            loss = step()
            end.record()
        torch.cuda.synchronize(device)
        times_ms = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(spec["steps"]):
            t0 = time.perf_counter()
            loss = step()
            times_ms.append((time.perf_counter() - t0) * 1e3)
    total_s = sum(times_ms) / 1e3
    if spec.get("profile") and device.type == "cuda":
        profile_steps(step, device, os.path.join(spec["profile"], f"{spec['impl'].replace(':', '_')}.txt"),
                      statistics.median(times_ms))
    return {
        "impl": spec["impl"], "params": n_params,
        "step_ms_median": statistics.median(times_ms), "step_ms_mean": statistics.fmean(times_ms),
        "step_ms_min": min(times_ms), "step_ms_max": max(times_ms),
        "tokens_per_s": B * T * len(times_ms) / total_s,
        "peak_memory_mib": mem.peak_mib(), "last_loss": float(loss),
    }


def profile_steps(step: Callable, device: torch.device, path: str, step_ms: float, steps: int = 3) -> None:
    """Kernel-time table of ``steps`` steps (torch.profiler) and the kernel time per step as a share of the
    timed (unprofiled) median step ``step_ms``: how busy the GPU is, since the profiler slows the CPU side."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    events = prof.key_averages()
    # kernel rows only: an aten op's row repeats the time of the kernels it launched
    kernel_ms = sum(e.self_device_time_total for e in events
                    if e.device_type == torch.autograd.DeviceType.CUDA) / 1e3 / steps
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"kernels {kernel_ms:.1f} ms per step; timed median step {step_ms:.1f} ms; "
                f"GPU busy {100 * kernel_ms / step_ms:.1f}%\n\n")
        f.write(events.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90))


def measure_isolated(spec: dict) -> dict:
    """CPU: measure in a fresh interpreter so ru_maxrss reflects this model alone."""
    proc = subprocess.run([sys.executable, "-m", "gpt.bench", "--worker", json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker for {spec['impl']} failed (exit {proc.returncode}); see stderr above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peak_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """Achievable matmul TFLOP/s in ``dtype``: the fastest of several timed n x n x n products after warm-up
    (the best, not the median, since a peak is wanted and on a shared CPU most repeats are slowed by others)."""
    n, reps = (8192, 20) if device.type == "cuda" else (2048, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(reps + 3):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            dt = time.perf_counter() - t0
        if i >= 3:
            times.append(dt)
    return 2 * n**3 / min(times) / 1e12, f"measured {n}x{n}x{n} {dtype_name(dtype)} matmul"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gpt.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model preset (default: gpt2 on CUDA, shakespeare-char on CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 8 on CUDA, 4 on CPU)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence length (default: min(block_size, 1024) on CUDA, 64 on CPU)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="compute dtype; bfloat16/float16 via torch.autocast (default: bfloat16 on CUDA, "
                        "float32 on CPU)")
    p.add_argument("--backend", choices=("math", "sdpa", "flash"), default="sdpa",
                   help="our attention backend (the baseline always uses its SDPA attention)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) for both models")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                   help="torch.compile mode for our model (with --compile)")
    p.add_argument("--inductor", action="append", default=None, metavar="KEY=VALUE",
                   help="a torch._inductor.config setting for compiling our model, on top of --compile-mode "
                        "(e.g. triton.enable_persistent_tma_matmul=True); repeatable; the baselines keep theirs")
    p.add_argument("--graph-step", action="store_true",
                   help="CUDA: capture our whole step (forward, backward, AdamW with capturable=True) in one "
                        "CUDA graph after the warm-up and replay it")
    p.add_argument("--baseline-compile-mode", choices=COMPILE_MODES, default="default",
                   help="torch.compile mode for the baselines (default: torch.compile(model), as nanoGPT's "
                        "train.py compiles)")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="CUDA: after warm-up, write a per-kernel time table of 3 steps per model to DIR")
    p.add_argument("--loss", choices=("head", "logits") + FUSED, default="head",
                   help="ours: head = padded-vocabulary head + masked float32 cross-entropy (gpt.fused_loss); "
                        "logits = the model's (B, T, vocab_size) logits, then cross-entropy; liger = Liger-Kernel's "
                        "fused linear cross-entropy, cce = Apple's cut-cross-entropy (both CUDA; never hold the logits)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 10 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 3 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads (default: torch's, one per core; 1 on a busy shared machine)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s for MFU (default: measured with a large matmul in --dtype)")
    p.add_argument("--baseline", action="append", default=None, metavar="SPEC",
                   help="model to compare with: hf_gpt2 (Hugging Face GPT2LMHeadModel) or package.module:factory, "
                        "a function make(config) -> nn.Module mapping idx to logits, or, like nanoGPT, "
                        "forward(idx, targets) -> (logits, loss); e.g. examples.nanogpt_baseline:make with "
                        "your nanoGPT checkout on PYTHONPATH; repeatable (default hf_gpt2)")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    p.add_argument("--hf-labels", action="store_true",
                   help="baseline computes its loss the Hugging Face way, model(input_ids, labels=...), instead of "
                        "the identical float32 cross-entropy used for our model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the JSON result here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one isolated measurement
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    preset = args.preset or ("gpt2" if cuda else "shakespeare-char")
    block_size = PRESETS[preset]["block_size"]
    s = dict(preset=preset, device=str(device), batch=args.batch or (8 if cuda else 4),
             seq_len=args.seq_len or (min(block_size, 1024) if cuda else min(block_size, 64)),
             dtype=args.dtype or ("bfloat16" if cuda else "float32"), backend=args.backend,
             compile=args.compile, fused_adamw=args.fused_adamw, seed=args.seed, threads=args.threads,
             hf_labels=args.hf_labels, loss=args.loss, compile_mode=args.compile_mode,
             baseline_compile_mode=args.baseline_compile_mode, inductor=parse_inductor(args.inductor),
             profile=args.profile, graph_step=args.graph_step,
             baselines=args.baseline or ["hf_gpt2"],
             steps=args.steps if args.steps is not None else (20 if cuda else 10),
             warmup=args.warmup if args.warmup is not None else (5 if cuda else 3))
    if not 1 <= s["seq_len"] <= block_size:
        raise SystemExit(f"--seq-len must be in [1, block_size={block_size}] for preset {preset}, got {s['seq_len']}")
    if s["batch"] < 1 or s["steps"] < 1 or s["warmup"] < 0:
        raise SystemExit("--batch and --steps must be >= 1 and --warmup >= 0")
    if s["graph_step"] and (not cuda or s["dtype"] == "float16" or s["warmup"] < 1
                            or uses_cudagraphs(args.compile_mode, s["inductor"])):
        raise SystemExit("--graph-step needs a CUDA device, --dtype bfloat16 or float32 (float16's loss scaler "
                         "syncs with the CPU), --warmup >= 1 and no CUDA graphs of inductor's own (--compile-mode, --inductor)")
    if s["backend"] == "flash" and (not cuda or s["dtype"] == "float32"):
        raise SystemExit("--backend flash needs a CUDA device and --dtype bfloat16 or float16")
    return s


def run(settings: dict, peak_tflops: Optional[float], baseline: bool) -> dict:
    device = torch.device(settings["device"])
    dtype = DTYPES[settings["dtype"]]
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])  # for the peak matmul; workers set their own
    config = Config.from_name(settings["preset"])
    flops_per_token = config.flops_per_token(settings["seq_len"])
    if peak_tflops is None:
        peak_tflops, peak_source = measure_peak_tflops(device, dtype)
    else:
        peak_source = "--peak-tflops"
    skipped = {} if baseline else {b: "--no-baseline" for b in settings["baselines"]}
    if baseline and "hf_gpt2" in settings["baselines"] and hf_incompatibility(config):
        skipped["hf_gpt2"] = hf_incompatibility(config)
    impls = ["gpt"] + [b for b in settings["baselines"] if b not in skipped]
    results = {}
    for impl in impls:
        spec = {**settings, "impl": impl}
        if device.type == "cuda":
            results[impl] = measure(spec)
            gc.collect()
            torch.cuda.empty_cache()
            if settings["compile"]:
                torch._dynamo.reset()
        else:
            results[impl] = measure_isolated(spec)
        r = results[impl]
        r["mfu"] = flops_per_token * r["tokens_per_s"] / (peak_tflops * 1e12)
    ratios = {b: {"tokens_per_s": results["gpt"]["tokens_per_s"] / results[b]["tokens_per_s"],
                  "peak_memory": results["gpt"]["peak_memory_mib"] / results[b]["peak_memory_mib"]
                  if results[b]["peak_memory_mib"] > 0 else None} for b in impls[1:]}
    notes = []
    if "hf_gpt2" in results and not config.bias:
        notes.append(f"preset has bias=False; GPT2LMHeadModel always has biases "
                     f"({results['hf_gpt2']['params'] - results['gpt']['params']:+d} parameters)")
    return {"settings": settings, "tokens_per_step": settings["batch"] * settings["seq_len"],
            "flops_per_token": flops_per_token, "peak_tflops": peak_tflops, "peak_source": peak_source,
            "memory_kind": CUDA_MEMORY_KIND if device.type == "cuda" else CPU_MEMORY_KIND,
            "results": results, "ratios_ours_over_baseline": ratios,
            "baseline_skipped": "; ".join(f"{b}: {why}" for b, why in skipped.items()) or None,
            "notes": notes, "versions": versions(device)}


def display_name(impl: str) -> str:
    names = {"gpt": "gpt (ours)", "hf_gpt2": "hf GPT2LMHeadModel"}
    return names.get(impl, impl.partition(":")[0].rpartition(".")[2])  # a factory: its module's name


def compile_text(s: dict) -> str:
    graph = ", whole step in one CUDA graph (ours)" if s.get("graph_step") else ""
    if not s["compile"]:
        return "off" + graph
    extra = "".join(f" {k}={v}" for k, v in (s.get("inductor") or {}).items())
    return (f"mode {s.get('compile_mode', 'default')}{extra} (ours), "
            f"{s.get('baseline_compile_mode', 'default')} (baselines){graph}")


def format_table(report: dict) -> str:
    s = report["settings"]
    lines = [f"gpt.bench: {s['preset']}, batch {s['batch']} x seq {s['seq_len']}, {s['dtype']}, "
             f"backend {s['backend']}, compile {compile_text(s)}, "
             f"AdamW {'fused' if s['fused_adamw'] else 'foreach'}, "
             f"our loss {s['loss']}, {s['device']} "
             f"({report['versions']['torch_threads']} threads), {s['steps']} steps after {s['warmup']} warm-up",
             f"peak {report['peak_tflops']:.3g} TFLOP/s ({report['peak_source']}); "
             f"{report['flops_per_token'] / 1e6:.1f} MFLOP/token (6N + 12LHDT)",
             "",
             f"{'model':<22}{'params':>10}{'step ms (med)':>15}{'tokens/s':>12}{'MFU':>8}{'peak mem MiB':>14}"]
    for impl, r in report["results"].items():
        lines.append(f"{display_name(impl):<22}{r['params'] / 1e6:>9.2f}M{r['step_ms_median']:>15.1f}"
                     f"{r['tokens_per_s']:>12.0f}{100 * r['mfu']:>7.1f}%{r['peak_memory_mib']:>14.1f}")
    for impl, ratio in report["ratios_ours_over_baseline"].items():
        mem = "n/a" if ratio["peak_memory"] is None else f"{ratio['peak_memory']:.2f}x"
        name = f"ours / {display_name(impl).split()[-1]}"
        lines.append(f"{name:<22}{'':>10}{'':>15}{ratio['tokens_per_s']:>11.2f}x{'':>8}{mem:>14}")
    if report["baseline_skipped"]:
        lines.append(f"baseline skipped: {report['baseline_skipped']}")
    lines.append(f"memory: {report['memory_kind']}")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    report = run(settings_from(args), args.peak_tflops, baseline=not args.no_baseline)
    print(format_table(report))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

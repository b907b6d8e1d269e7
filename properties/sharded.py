"""Data-parallel training over several steps: DDP and FSDP2 ranks, the single-process replay, the check.

A job (run by each rank of ``properties.distributed.DDPPool``) trains ``steps`` steps of AdamW with
``gpt.train.TrainStep`` on its rows of a global batch whose ranks hold *different* numbers of non-ignored
targets; the token count is all-reduced, so every rank divides by the global count N, and the loss is
multiplied by the world size R because DDP/FSDP average the ranks' gradients:
    grad = (1/R) sum_r grad (R sum_{t in r} l_t / N) = grad ((1/N) sum_t l_t).
Each rank reports, per step, the full (unsharded) parameters before the step, the gradients and the AdamW
state after it. The check replays every step in one process from the rank's own state ("teacher forcing"),
so each step is compared with the float64 one-step bound instead of a bound compounded over steps.

FSDP2 (``torch.distributed.fsdp.fully_shard``, each block then the root) runs on gloo/CPU in torch 2.13;
the job also checks tied embeddings (one parameter object after sharding and after a
``torch.distributed.checkpoint`` save/load) and that the step after reloading equals the step without.

Broken variants (power checks): ``dp_ranks_one`` (loss not multiplied by R: divided by R twice),
``local_tokens`` (each rank divides by its own token count: a per-rank mean), ``untie`` (FSDP: the head
gets its own copy of the embedding, the facebookresearch/lingua#75 class).
"""
from __future__ import annotations

import shutil
import tempfile
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from gpt.config import Config

ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
EPS64 = torch.finfo(torch.float64).eps
BROKEN = ("dp_ranks_one", "local_tokens", "untie")


def _full(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if t is None:
        return None
    t = t.full_tensor() if hasattr(t, "full_tensor") else t
    return t.detach().cpu().clone()


def _opt_state(opt, model) -> dict:
    """name -> (step, exp_avg, exp_avg_sq), unsharded."""
    out = {}
    for name, p in model.named_parameters():
        st = opt.state.get(p)
        if st:
            out[name] = (float(st["step"]), _full(st["exp_avg"]), _full(st["exp_avg_sq"]))
    return out


def _snapshot(model) -> dict:
    return {n: _full(p) for n, p in model.named_parameters()}


def _global_tokens(n: int) -> int:
    # NCCL reduces CUDA tensors only; gloo CPU ones
    t = torch.tensor([n], dtype=torch.long, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return int(t.item())


def rank_job(job: dict, rank: int, world_size: int, device: torch.device, subject) -> dict:
    """Train job["steps"] steps on this rank's rows with job["engine"] (ddp | fsdp); see the module doc."""
    from gpt.train import TrainStep

    config, broken, engine = Config.from_dict(job["config"]), job.get("broken"), job["engine"]
    share = job["idx"].size(0) // world_size
    rows = slice(rank * share, (rank + 1) * share)
    idx, y = job["idx"][rows].to(device), job["targets"][rows].to(device)
    model = subject.build(config, job["seed"], dtype=torch.float64, device=device).train()
    if broken == "untie" and config.tie_embeddings:
        model.lm_head.weight = nn.Parameter(model.wte.weight.detach().clone())
    model, net = _wrap(model, subject, engine, device, world_size)
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    step = TrainStep(model, forward=net, dp_ranks=1 if broken == "dp_ranks_one" else world_size,
                     global_tokens=None if broken == "local_tokens" else _global_tokens)
    out = dict(steps=[], tied=_tied(model))
    for _ in range(job["steps"]):
        before = _snapshot(model)
        opt.zero_grad(set_to_none=True)
        step(idx, y)
        grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        opt.step()
        out["steps"].append(dict(params=before, grads=grads, state=_opt_state(opt, model)))
    out["final"] = _snapshot(model)
    if engine == "fsdp" and job.get("checkpoint"):
        out.update(_checkpoint_roundtrip(job, model, opt, step, idx, y, subject, config, device, world_size))
    return out


def _wrap(model, subject, engine: str, device, world_size: int):
    """(the trained module, its forward idx -> logits)."""
    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        from properties.distributed import _Logits

        net = DistributedDataParallel(_Logits(subject, model),  # unused: MoE experts (properties.distributed)
                                      device_ids=[device] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
        return model, net
    if engine == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)  # the root holds wte / lm_head: a tied pair stays one parameter
        return model, lambda x: subject.logits(model, x)
    raise ValueError(f"engine must be 'ddp' or 'fsdp', got {engine!r}")


def _tied(model) -> Optional[bool]:
    if not hasattr(model, "lm_head") or not hasattr(model, "wte"):
        return None
    return model.lm_head.weight is model.wte.weight


def _checkpoint_roundtrip(job, model, opt, step, idx, y, subject, config, device, world_size) -> dict:
    """Save model + optimizer with torch.distributed.checkpoint, load into a freshly sharded model, take one
    step on each; returns both results (they must be bitwise equal) and whether the reload is tied."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from gpt.train import TrainStep

    path = [tempfile.mkdtemp(prefix="gpt-properties-dcp-") if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(path)
    try:
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=path[0])
        fresh = subject.build(config, job["seed"] + 1, dtype=torch.float64, device=device).train()
        fresh, net = _wrap(fresh, subject, "fsdp", device, world_size)
        fopt = torch.optim.AdamW(fresh.parameters(), **ADAMW)
        msd2, osd2 = get_state_dict(fresh, fopt)
        state = {"model": msd2, "optim": osd2}
        dcp.load(state, checkpoint_id=path[0])
        set_state_dict(fresh, fopt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        loaded = _snapshot(fresh)
        fstep = TrainStep(fresh, forward=net, dp_ranks=world_size, global_tokens=_global_tokens)
        for m, o, s in ((model, opt, step), (fresh, fopt, fstep)):
            o.zero_grad(set_to_none=True)
            s(idx, y)
            o.step()
        return dict(reload_tied=_tied(fresh), loaded=loaded, continued=_snapshot(model),
                    reloaded_step=_snapshot(fresh))
    finally:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(path[0], ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the check
def adamw_step_tolerance(grad_tol: float, p: torch.Tensor, g: torch.Tensor, state: Optional[tuple]) -> torch.Tensor:
    """Elementwise bound on |p' - p'_ref| after one AdamW step from the same p and moments, when the
    gradients differ by <= ``grad_tol`` (float64).

    With m = b1 m0 + (1-b1) g, v = b2 v0 + (1-b2) g^2, m^ = m/(1-b1^t), v^ = v/(1-b2^t),
    update = lr m^ / (sqrt(v^) + eps): over |dg| <= d, m^ moves by <= a d with a = (1-b1)/(1-b1^t);
    sqrt(v^) moves by <= c d with c = sqrt((1-b2)/(1-b2^t)) (sqrt(b2 v0 + (1-b2) x^2) is sqrt(1-b2)-Lipschitz
    in x) and stays >= s_lo = sqrt((b2 v0 + (1-b2) max(|g|-d, 0)^2) / (1-b2^t)); |m^| <= M =
    (b1 |m0| + (1-b1)(|g|+d)) / (1-b1^t). So the update moves by
        <= lr (a d / (s_lo + eps) + M c d / (s_lo + eps)^2),
    plus a few float64 roundings of the step, 8 u (|p| + lr M / (s_lo + eps)).
    ``state`` = (step, exp_avg, exp_avg_sq) before this step, or None for the first.
    """
    lr, (b1, b2), eps = ADAMW["lr"], ADAMW["betas"], ADAMW["eps"]
    t, m0, v0 = (0.0, torch.zeros_like(p), torch.zeros_like(p)) if state is None else state
    t += 1
    a, c = (1 - b1) / (1 - b1 ** t), ((1 - b2) / (1 - b2 ** t)) ** 0.5
    s_lo = ((b2 * v0 + (1 - b2) * (g.abs() - grad_tol).clamp(min=0) ** 2) / (1 - b2 ** t)).sqrt()
    M = (b1 * m0.abs() + (1 - b1) * (g.abs() + grad_tol)) / (1 - b1 ** t)
    move = lr * (a * grad_tol / (s_lo + eps) + M * c * grad_tol / (s_lo + eps) ** 2)
    return move + 8 * EPS64 * (p.abs() + lr * M / (s_lo + eps) + 1)


def replay_check(ranks: list[dict], subject, config: Config, seed: int, idx, targets, device="cpu") -> dict:
    """Assert, for every step s of rank 0's run: (a) every rank holds bitwise the same full parameters and
    gradients; (b) the gradient at rank 0's parameters equals the single-process full-batch gradient within
    ``grad_tolerance``; (c) one single-process AdamW step from rank 0's parameters and moments lands on rank
    0's next parameters within :func:`adamw_step_tolerance`. Returns the worst error ratios."""
    from gpt.train import TrainStep
    from properties.distributed import grad_tolerance

    r0 = ranks[0]
    if r0["tied"] is not None:
        assert r0["tied"] == config.tie_embeddings, (
            f"tie_embeddings={config.tie_embeddings} but after sharding lm_head.weight "
            f"{'is' if r0['tied'] else 'is not'} wte.weight (tied embeddings must stay one parameter)")
    worst = dict(grad=0.0, param=0.0)
    model = subject.build(config, seed, dtype=torch.float64, device=device).train()
    params = dict(model.named_parameters())
    n_steps = len(r0["steps"])
    for s, rec in enumerate(r0["steps"]):
        for r, other in enumerate(ranks[1:], start=1):
            for key in ("params", "grads"):
                for name, t in rec[key].items():
                    o = other["steps"][s][key][name]
                    assert (t is None and o is None) or torch.equal(t, o), (
                        f"step {s}: ranks 0 and {r} hold different {key[:-1]} {name}")
        assert rec["params"].keys() == params.keys(), (
            f"parameter names differ: sharded {sorted(rec['params'])} vs single process {sorted(params)}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(rec["params"][name])
        model.zero_grad(set_to_none=True)
        TrainStep(model, forward=lambda x: subject.logits(model, x))(idx, targets)
        ref = {n: None if p.grad is None else p.grad.detach().clone() for n, p in params.items()}
        g_tol = grad_tolerance(config, idx.numel(), ref)
        for name, g in ref.items():
            got = rec["grads"][name]
            assert (g is None) == (got is None), f"step {s}: {name} has a gradient in one run only"
            if g is None:
                continue
            err = (got - g).abs().max().item() if g.numel() else 0.0
            worst["grad"] = max(worst["grad"], err / g_tol)
            assert err <= g_tol, (f"step {s}: gradient of {name} differs from the single-process full-batch "
                                  f"gradient by {err:.3e} > bound {g_tol:.3e} (max |gradient| "
                                  f"{g.abs().max().item():.3e})")
        nxt = r0["steps"][s + 1]["params"] if s + 1 < n_steps else r0["final"]
        prev_state = r0["steps"][s - 1]["state"] if s else {}
        for name, p in rec["params"].items():
            g = ref[name]
            if g is None:
                continue
            st = prev_state.get(name)
            expect = _adamw_ref(p, g, st)
            bound = adamw_step_tolerance(g_tol, p, g, st)
            ratio = ((nxt[name] - expect).abs() / bound).max().item() if p.numel() else 0.0
            worst["param"] = max(worst["param"], ratio)
            assert ratio <= 1, (f"step {s}: after AdamW, {name} differs from the single-process step by "
                                f"{ratio:.2f}x the bound")
    return worst


def _adamw_ref(p, g, state) -> torch.Tensor:
    q = nn.Parameter(p.clone())
    opt = torch.optim.AdamW([q], **ADAMW)
    if state is not None:
        t, m, v = state
        opt.state[q] = dict(step=torch.tensor(t),
                            exp_avg=m.clone(), exp_avg_sq=v.clone())
    q.grad = g.clone()
    opt.step()
    return q.detach()

"""DistributedDataParallel against one process: a persistent pool of ranks, the step, the check.

The property (``properties/test_ddp.py``): one DDP training step over ``world_size`` ranks, each holding an
equal share of the batch, gives the gradients of one process on the whole batch (mean loss over all of it),
and after one optimizer step every rank holds the same parameters, equal to the single process's.

Starting ranks costs seconds (each imports torch and joins a process group), a DDP step on the tiny models
milliseconds, so :class:`DDPPool` starts the ranks once (``torch.multiprocessing``: forked from a forkserver
that has imported torch once, or spawned; a ``FileStore`` in a temporary directory, so no TCP port to race
for; one thread per rank) and feeds them one job per Hypothesis example through pipes; each rank answers
with its gradients and parameters, serialised with ``torch.save``. A rank that raises, dies or hangs (60 s)
fails the example with its traceback, and the next example starts a fresh pool.

A failure is reproduced from the printed case, without pytest::

    from gpt.config import Config
    from properties.distributed import DDPCase, reproduce
    reproduce(DDPCase(config=Config(...), seed=..., idx=[[...]], optimizer='sgd'), backend='gloo')
"""
from __future__ import annotations

import importlib
import io
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from gpt.config import Config

# one optimizer step with each; the hyperparameters are typical, the tolerance below depends on lr and eps
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adamw": (torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
}
EPS64 = torch.finfo(torch.float64).eps


@dataclass
class DDPCase:
    """One example: the model (config, init seed), the global batch and the optimizer. Its repr rebuilds it."""

    config: Config
    seed: int
    idx: list  # (B, T) token ids as nested lists, B a multiple of the world size
    optimizer: str = "sgd"  # a key of OPTIMIZERS

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, targets): the next-token targets are drawn from ``seed``."""
        idx = torch.tensor(self.idx, dtype=torch.long)
        gen = torch.Generator().manual_seed(self.seed)
        return idx, torch.randint(0, self.config.vocab_size, idx.shape, generator=gen)


# ---------------------------------------------------------------------------------------------- one step
class _Logits(nn.Module):
    """Routes DDP's forward through the subject, so DDP wraps any subject's model unchanged."""

    def __init__(self, subject, model: nn.Module) -> None:
        super().__init__()
        self.subject, self.model = subject, model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.subject.logits(self.model, idx)


def _sum_without_average_hook(state, bucket):
    """BROKEN on purpose: all-reduces the gradient bucket but forgets to divide by the world size."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def _no_allreduce_hook(state, bucket):
    """BROKEN on purpose: keeps each rank's local gradient (a missing all-reduce)."""
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def _hooks() -> dict:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # "allreduce" is torch's reference hook, identical to DDP's built-in reduction: a control
    return {"allreduce": allreduce_hook, "sum_without_average": _sum_without_average_hook,
            "no_allreduce": _no_allreduce_hook}


BROKEN_HOOKS = ("sum_without_average", "no_allreduce")


def train_step(subject, config: Config, seed: int, idx: torch.Tensor, targets: torch.Tensor, optimizer: str,
               device, ddp: bool = False, hook: Optional[str] = None) -> dict:
    """Build the model, take one step of the mean cross-entropy over ``idx``, return grads and new params.

    With ``ddp`` the model is wrapped in DistributedDataParallel (the caller is one rank of the default
    process group and ``idx`` is its share); ``hook`` names a comm hook registered on it.
    """
    device = torch.device(device)
    model = subject.build(config, seed, dtype=torch.float64, device=device).train()
    net: nn.Module = _Logits(subject, model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: an MoE routes each rank's tokens to a data-dependent subset of experts;
        # without it DDP waits for gradients that never come and leaves whole buckets unreduced
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
        if hook is not None:
            net.register_comm_hook(None, _hooks()[hook])
    logits = net(idx.to(device))
    loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
    cls, kw = OPTIMIZERS[optimizer]
    cls(model.parameters(), **kw).step()
    params = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    return dict(loss=loss.item(), grads=grads, params=params)


# ---------------------------------------------------------------------------------------------- the check
def grad_tolerance(config: Config, n_tokens: int, ref_grads: dict) -> float:
    """Bound on |DDP gradient - single-process gradient| in float64: summation order only.

    In exact arithmetic the two are equal: with R ranks of N/R tokens each, DDP averages the rank
    gradients of the per-rank mean loss, (1/R) sum_r (R/N) sum_{t in r} grad l_t = (1/N) sum_t grad l_t.
    In float64 they differ only in how sums are ordered (dividing by R = 2 is exact):
      * each token's forward/backward is a chain of dot products of length <= n through n_layer blocks,
        computed with a different blocking for a batch of B/R rows than of B (harness.float64_tol: 4 L n u);
      * every weight gradient reduces N = B*T per-token terms, split here into R partial sums joined by
        the all-reduce: two orders of one length-N sum differ by <= 2 N u sum|terms| (Higham, ch. 4).
    The terms are bounded by the O(1) activations times |d loss / d logit| <= 1 (softmax minus one-hot),
    averaged over N tokens, so they are O(1); max|grad| covers gradients larger than that. Hence
        tol = 4 (L n + N) u (1 + max_theta |grad_ref|),   u = 2^-52,
    about 1e-13 here, while a broken reduction moves gradients by their own size (1e-4 and up).
    """
    n = max(config.n_embd, config.intermediate_size, config.block_size, config.n_head * config.head_size)
    scale = max((_absmax(g) for g in ref_grads.values()), default=0.0)
    return 4 * (config.n_layer * n + n_tokens) * EPS64 * (1.0 + scale)


def param_tolerance(optimizer: str, grad_tol: float, ref_params: dict, ref_grads: dict) -> dict:
    """Elementwise bound on |DDP params - single-process params| after one step, given |dg| <= ``grad_tol``.

    Both start from bitwise-equal weights (same seed), so only the gradient difference propagates.
    SGD (momentum's first step is the gradient itself): p - lr (g + wd p) moves by lr |dg|.
    AdamW's first step is p (1 - lr wd) - lr g / (|g| + eps) (the bias-corrected moments are g and g^2);
    f(g) = g / (|g| + eps) has slope eps / (|g| + eps)^2, largest where |g| is smallest, so over the
    interval |g| +- grad_tol it moves by <= lr grad_tol eps / (max(|g| - grad_tol, 0) + eps)^2
    (at most lr grad_tol / eps, for gradients near 0). Plus a few roundings of the update, 4 u (1 + max|p|).
    Returns name -> bound tensor (the shape of the parameter).
    """
    kw = OPTIMIZERS[optimizer][1]
    scale = max((_absmax(p) for p in ref_params.values()), default=0.0)
    rounding = 4 * EPS64 * (1.0 + scale)
    bounds = {}
    for name, p in ref_params.items():
        g = ref_grads.get(name)
        g = torch.zeros_like(p) if g is None else g
        if optimizer == "adamw":
            slope = kw["eps"] / ((g.abs() - grad_tol).clamp(min=0) + kw["eps"]) ** 2
        else:
            slope = torch.ones_like(p)
        bounds[name] = kw["lr"] * slope * grad_tol + rounding
    return bounds


def _absmax(t: Optional[torch.Tensor]) -> float:
    return t.abs().max().item() if t is not None and t.numel() else 0.0


def _max_err(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    if a.shape != b.shape:
        return float("inf")
    return (a - b).abs().max().item() if a.numel() else 0.0


def check_ddp_step(ranks: list[dict], ref: dict, config: Config, n_tokens: int, optimizer: str) -> dict:
    """Assert the property for the rank results of one DDP step against the single-process step.

    1. rank 0's gradients equal the single process's within :func:`grad_tolerance`;
    2. every rank holds bitwise the same gradients (the all-reduce hands one result to all ranks);
    3. after the optimizer step every rank holds bitwise the same parameters, and rank 0's equal the
       single process's within :func:`param_tolerance`.
    Returns the worst errors and the tolerances (for reporting).
    """
    g_tol = grad_tolerance(config, n_tokens, ref["grads"])
    p_tol = param_tolerance(optimizer, g_tol, ref["params"], ref["grads"])
    worst = dict(grad_err=0.0, grad_tol=g_tol, param_err_over_tol=0.0)
    rank0 = ranks[0]
    assert rank0["grads"].keys() == ref["grads"].keys(), (
        f"parameter names differ: DDP {sorted(rank0['grads'])} vs single process {sorted(ref['grads'])}")
    for name, g in ref["grads"].items():
        err = _max_err(rank0["grads"][name], g)
        worst["grad_err"] = max(worst["grad_err"], err)
        assert err <= g_tol, (f"DDP gradient of {name} differs from the single-process gradient on the whole "
                              f"batch: max |difference| {err:.3e} > tolerance {g_tol:.3e} "
                              f"(max |single-process gradient| {_absmax(g):.3e})")
    for r, other in enumerate(ranks[1:], start=1):
        for name, g in rank0["grads"].items():
            same = (g is None and other["grads"][name] is None) or (
                g is not None and other["grads"][name] is not None and torch.equal(other["grads"][name], g))
            assert same, (f"ranks 0 and {r} hold different DDP gradients of {name}: max |difference| "
                          f"{_max_err(other['grads'][name], g):.3e} (the all-reduce must give every rank one result)")
    for name, p in ref["params"].items():
        q, bound = rank0["params"][name], p_tol[name]
        assert q.shape == p.shape, f"DDP parameter {name} has shape {tuple(q.shape)}, expected {tuple(p.shape)}"
        if not p.numel():
            continue
        diff = (q - p).abs()
        ratio = (diff / bound).max().item()
        worst["param_err_over_tol"] = max(worst["param_err_over_tol"], ratio)
        i = int((diff / bound).argmax())
        assert ratio <= 1, (f"after one {optimizer} step, DDP parameter {name} differs from the single-process "
                            f"one: |difference| {diff.flatten()[i].item():.3e} > tolerance "
                            f"{bound.flatten()[i].item():.3e} at flat index {i}")
    for r, other in enumerate(ranks[1:], start=1):
        for name, p in rank0["params"].items():
            assert torch.equal(other["params"][name], p), (
                f"after one {optimizer} step, ranks 0 and {r} hold different {name}: max |difference| "
                f"{_max_err(other['params'][name], p):.3e} (replicas drifted apart)")
    return worst


def check_case(pool: "DDPPool", subject, subject_spec: str, case: DDPCase, hook: Optional[str] = None) -> dict:
    """Run ``case`` on the pool's ranks and in this process, and assert the property (see check_ddp_step)."""
    idx, targets = case.tensors()
    B, T = idx.shape
    if B % pool.world_size:
        raise ValueError(f"batch size {B} is not a multiple of the world size {pool.world_size}")
    ranks = pool.run(dict(subject=subject_spec, config=case.config.to_dict(), seed=case.seed, idx=idx,
                          targets=targets, optimizer=case.optimizer, hook=hook))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the ranks: tiny ops, and OpenMP threads would spin against the ranks
    try:
        ref = train_step(subject, case.config, case.seed, idx, targets, case.optimizer, pool.reference_device)
    finally:
        torch.set_num_threads(threads)
    return check_ddp_step(ranks, ref, case.config, B * T, case.optimizer)


def reproduce(case: DDPCase, backend: str = "gloo", subject: str = "gpt", hook: Optional[str] = None,
              world_size: int = 2) -> dict:
    """Check one printed case outside pytest; raises AssertionError on a mismatch, else returns the errors."""
    from properties.subject import load_subject

    pool = DDPPool(backend, world_size, devices=default_devices(backend, world_size))
    try:
        worst = check_case(pool, load_subject(subject), subject, case, hook)
    finally:
        pool.close()
    print(f"DDP step == single-process step: {worst}")
    return worst


# ---------------------------------------------------------------------------------------------- the pool
def default_devices(backend: str, world_size: int) -> list[torch.device]:
    """gloo: all ranks on the CPU. nccl: one GPU per rank, starting at the current (pinned) device."""
    if backend != "nccl":
        return [torch.device("cpu")] * world_size
    n, first = torch.cuda.device_count(), torch.cuda.current_device()
    return [torch.device("cuda", (first + r) % n) for r in range(world_size)]


def _pack(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unpack(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


_SUBJECTS: dict = {}


def _rank_job(job: dict, rank: int, world_size: int, device: torch.device) -> dict:
    from properties.subject import load_subject

    spec = job["subject"]
    if spec not in _SUBJECTS:
        _SUBJECTS[spec] = load_subject(spec)
    kind = job.get("kind", "ddp_step")
    if kind == "train":  # multi-step DDP / FSDP2 training (properties.sharded)
        from properties.sharded import rank_job

        return rank_job(job, rank, world_size, device, _SUBJECTS[spec])
    if kind == "tp":  # tensor parallel forward and backward (properties.tensor_parallel)
        from properties.tensor_parallel import rank_job

        return rank_job(job, rank, world_size, device, _SUBJECTS[spec])
    share = job["idx"].size(0) // world_size
    rows = slice(rank * share, (rank + 1) * share)
    return train_step(_SUBJECTS[spec], Config.from_dict(job["config"]), job["seed"], job["idx"][rows],
                      job["targets"][rows], job["optimizer"], device, ddp=True, hook=job["hook"])


def _serve(rank: int, world_size: int, backend: str, init_method: str, device: str, conn) -> None:
    """A rank's main loop: join the process group, then answer jobs until an empty message or EOF."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    try:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=120))
        for module in ("torch._dynamo", "properties.subject"):  # DDP's constructor imports torch._dynamo:
            importlib.import_module(module)  # 1-2 s, paid here once rather than in the first example
        conn.send(("ready", b""))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            try:
                payload = conn.recv_bytes()
            except EOFError:
                break
            if not payload:
                break
            try:
                conn.send(("ok", _pack(_rank_job(_unpack(payload), rank, world_size, dev))))
            except BaseException:
                conn.send(("error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def _context():
    """forkserver where there is one: a server process imports torch, torch._dynamo and this module once
    (about 5 s of CPU) and forks every rank from it, so the ranks, and any restart, start in well under a
    second; spawn elsewhere. Both give each rank a fresh interpreter state without a CUDA context."""
    mp = torch.multiprocessing
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch._dynamo", "properties.subject", "properties.distributed"])
    return ctx


class DDPPool:
    """``world_size`` ranks of one process group, started on first use and kept for many jobs."""

    def __init__(self, backend: str = "gloo", world_size: int = 2, devices: Optional[list] = None,
                 start_timeout: float = 300.0, job_timeout: float = 60.0) -> None:
        self.backend, self.world_size = backend, world_size
        self.devices = [torch.device(d) for d in (devices or [torch.device("cpu")] * world_size)]
        if len(self.devices) != world_size:
            raise ValueError(f"{world_size} ranks need {world_size} devices, got {self.devices}")
        self.reference_device = self.devices[0]  # where the single-process step runs
        self.start_timeout, self.job_timeout = start_timeout, job_timeout
        self._procs: list = []
        self._conns: list = []
        self._tmp: Optional[str] = None

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def start(self) -> None:
        self.close()
        ctx = _context()
        self._tmp = tempfile.mkdtemp(prefix="gpt-properties-ddp-")
        init_method = "file://" + os.path.join(self._tmp, "store")
        for rank, device in enumerate(self.devices):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, name=f"ddp-{self.backend}-rank{rank}", daemon=True,
                               args=(rank, self.world_size, self.backend, init_method, str(device), child))
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        for rank in range(self.world_size):
            self._receive(rank, self.start_timeout, "start")

    def run(self, job: dict) -> list[dict]:
        """Send ``job`` to every rank; each rank's result dict (rank 0 first)."""
        if not self.alive:
            self.start()
        payload = _pack(job)
        for conn in self._conns:
            conn.send_bytes(payload)
        return [_unpack(self._receive(rank, self.job_timeout, "job")) for rank in range(self.world_size)]

    def _receive(self, rank: int, timeout: float, what: str) -> bytes:
        conn, proc = self._conns[rank], self._procs[rank]
        try:
            if not conn.poll(timeout):
                raise TimeoutError(f"DDP rank {rank} ({self.backend}) gave no answer to its {what} in {timeout:.0f} s")
            status, body = conn.recv()
        except EOFError:
            proc.join(5)
            self.close()
            raise RuntimeError(f"DDP rank {rank} ({self.backend}) died during its {what} "
                               f"(exit code {proc.exitcode})") from None
        except BaseException:
            self.close()
            raise
        if status == "error":
            self.close()  # the other ranks may be stuck in a collective: start afresh next time
            raise RuntimeError(f"DDP rank {rank} ({self.backend}) failed its {what}:\n{body}")
        return body

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send_bytes(b"")
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "DDPPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



_SHARED: dict = {}


def shared_pool(backend: str, world_size: int, devices: list) -> DDPPool:
    """One pool per (backend, world size, devices) and process, shared by every test module that needs ranks
    (DDP, multi-step DDP/FSDP2 training): start-up is paid once per session. Closed at interpreter exit."""
    import atexit

    key = (backend, world_size, tuple(str(d) for d in devices))
    if key not in _SHARED:
        _SHARED[key] = DDPPool(backend, world_size, devices)
        atexit.register(_SHARED[key].close)
    return _SHARED[key]

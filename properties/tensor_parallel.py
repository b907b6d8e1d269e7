"""Tensor parallelism with PyTorch's own engine: a rank's job and the check (property 7).

``parallelize_module`` with Megatron's plan: per block, the fused qkv projection and the MLP's input
projections column-parallel (each rank computes its heads / its slice of the hidden units), the attention
output and MLP output projections row-parallel (partial sums all-reduced), and a vocabulary-parallel head
(``lm_head`` column-parallel over the vocabulary, logits gathered). The fused qkv weight is laid out
[q heads | k groups | v groups], so a contiguous column split would hand rank 0 all of q and half of k: its
rows are first permuted so that shard r holds [q heads of r | k groups of r | v groups of r], and each
attention module is told its local head counts. Gradients are compared after undoing the permutation.

Broken variant (power check): ``no_permute``, the naive column split of the fused qkv.
"""
from __future__ import annotations

import torch

from gpt.config import Config


def qkv_permutation(config: Config, world_size: int) -> torch.Tensor:
    """Row order of the fused qkv weight under which a contiguous split gives each rank its own heads."""
    nh, g, hs = config.n_head, config.n_query_groups, config.head_size
    q = torch.arange(nh * hs).view(world_size, -1)
    k = nh * hs + torch.arange(g * hs).view(world_size, -1)
    v = (nh + g) * hs + torch.arange(g * hs).view(world_size, -1)
    return torch.cat([torch.cat([q[r], k[r], v[r]]) for r in range(world_size)])


def _plan(model, config: Config) -> dict:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {"lm_head": ColwiseParallel(output_layouts=Replicate())}
    for i, block in enumerate(model.blocks):
        plan[f"blocks.{i}.attn.qkv"] = ColwiseParallel()
        plan[f"blocks.{i}.attn.proj"] = RowwiseParallel()
        for name in ("fc", "fc_1", "fc_2"):
            if hasattr(block.mlp, name):
                plan[f"blocks.{i}.mlp.{name}"] = ColwiseParallel()
        plan[f"blocks.{i}.mlp.proj"] = RowwiseParallel()
    return plan


def check_config(config: Config, world_size: int) -> None:
    if config.n_query_groups % world_size or config.tie_embeddings:
        raise ValueError(f"tensor parallel over {world_size} ranks needs n_query_groups divisible by it and "
                         f"untied embeddings, got {config.n_query_groups} and tie_embeddings={config.tie_embeddings}")


def rank_job(job: dict, rank: int, world_size: int, device: torch.device, subject) -> dict:
    """Forward and backward of the mean cross-entropy over the whole batch on every rank, tensor-parallel."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import parallelize_module
    from gpt.loss import cross_entropy

    config = Config.from_dict(job["config"])
    check_config(config, world_size)
    model = subject.build(config, job["seed"], dtype=torch.float64, device=device).train()
    perm = qkv_permutation(config, world_size).to(device)
    local = config.replace(n_head=config.n_head // world_size, n_query_groups=config.n_query_groups // world_size,
                           head_size=config.head_size)
    with torch.no_grad():
        for block in model.blocks:
            if job.get("broken") != "no_permute":
                block.attn.qkv.weight.copy_(block.attn.qkv.weight[perm])
                if block.attn.qkv.bias is not None:
                    block.attn.qkv.bias.copy_(block.attn.qkv.bias[perm])
            block.attn.config = local  # the attention reads its head counts from here: the local ones
    mesh = init_device_mesh(device.type, (world_size,))
    parallelize_module(model, mesh, _plan(model, config))
    logits = model(job["idx"].to(device))
    cross_entropy(logits, job["targets"].to(device), reduction="mean").backward()
    inv = torch.argsort(perm).cpu()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        g = g.detach().cpu()
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            g = g[inv]  # back to the [q | k | v] layout of the single-process model
        grads[name] = g
    return dict(logits=logits.detach().cpu(), grads=grads)

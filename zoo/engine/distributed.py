"""Several processes: torchrun's environment, the process group, model wrapping (DDP / FSDP), reductions.

``torchrun --nproc_per_node N train.py ...`` starts N processes with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_distributed` reads them and joins the process group (NCCL
when the run's device is CUDA, gloo on the CPU), one GPU per process (``cuda:LOCAL_RANK``). Without those
variables a run is a single process and nothing here communicates.

- ``train.parallel: ddp`` wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel` (every process
  holds the whole model, gradients are averaged).
- ``train.parallel: fsdp`` shards parameters, gradients and optimizer state with FSDP2's ``fully_shard``: every
  module whose class name ends in ``Block`` (the transformer blocks of timm-style models) is one unit, the root
  holds the rest. For variants whose weights + optimizer state do not fit one GPU.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from zoo.errors import InputError

__all__ = ["DistEnv", "all_reduce_max", "all_reduce_sum", "broadcast_object", "init_distributed", "shutdown",
           "wrap_model"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # this run created the process group (and destroys it at the end)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def launch_env() -> DistEnv:
    """This process's place as torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` state it (a single process
    without them); no process group is joined."""
    return DistEnv(rank=_env_int("RANK", 0), world_size=_env_int("WORLD_SIZE", 1),
                   local_rank=_env_int("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; returns the environment and this process's
    device (``cuda:LOCAL_RANK`` for a CUDA run)."""
    launch = launch_env()
    world, rank, local_rank = launch.world_size, launch.rank, launch.local_rank
    if world <= 1:
        return DistEnv(), device
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} CUDA devices; "
                               f"use torchrun --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
        here = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"RANK={rank} WORLD_SIZE={world}")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, initialized_here=here), device


def shutdown(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise sum of `values` over processes (float64, so counts stay exact)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(value: int, env: DistEnv, device: torch.device) -> int:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as separate FSDP units: those whose class name ends in ``Block``, outermost only."""
    units: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside or module is model:
            continue
        if type(module).__name__.endswith("Block") and any(True for _ in module.parameters()):
            units.append(module)
            inside.update(id(m) for m in module.modules())
    return units


def wrap_model(model: nn.Module, parallel: str, env: DistEnv, device: torch.device) -> nn.Module:
    """The model the training step calls: DDP when several processes and `parallel` is 'ddp'; sharded in place
    with ``fully_shard`` when `parallel` is 'fsdp' (then the returned module *is* `model`)."""
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        if not dist.is_initialized():
            raise RuntimeError("train.parallel 'fsdp' needs a process group: launch with torchrun "
                               "(torchrun --nproc_per_node 1 train.py ... for one process)")
        for unit in fsdp_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    if parallel != "ddp":
        raise ValueError(f"train.parallel {parallel!r} is not one of 'ddp', 'fsdp'")
    if not env.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

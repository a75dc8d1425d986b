"""Beyond one process, with torch.distributed: `torchrun ... gan-privacy audit`.

torchrun starts N copies of the command and sets RANK, WORLD_SIZE, MASTER_ADDR...
(`--standalone` on one machine, its usual rendezvous across machines). Each copy
loads the image lists, then:
- the MAE trains with DistributedDataParallel: every rank draws the same batch order,
  masks and augmentation (one seeded generator) and computes the loss of its slice of
  each batch; DDP averages the gradients, so a step is the single process's full
  batch step, computed in parts;
- the generated images' decoding and encoding are split by cache pack (runs of
  file-key prefixes, contiguous in the set's order), in contiguous shares, and the
  features gathered on rank 0 (cached packs are read by the rank that owns them);
- rank 0 alone encodes the candidates, runs the scans, the attacks, the metrics and
  writes the outputs; the other ranks write nothing and exit 0.
gloo on CPUs, NCCL on GPUs (each rank on the GPU of its LOCAL_RANK).

Without torchrun's variables (or with WORLD_SIZE=1) nothing here starts a process
group: the audit is the single process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    """This process's place among the audit's processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that scores, measures and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return World(int(os.environ.get("RANK", "0") or 0), size) if size > 1 else SINGLE


def join(device: torch.device) -> World:
    """Join torchrun's process group (gloo on a CPU, NCCL on GPUs), once per process;
    the single process's world without torchrun. The device's GPU is the one of this
    rank's LOCAL_RANK."""
    import torch
    import torch.distributed as dist

    world = world_from_env()
    if not world.distributed:
        return world
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: its own GPU under torchrun (LOCAL_RANK)."""
    import torch

    if device.type == "cuda" and world_from_env().distributed:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def pack_shares(keys: list[str], prefix: int, parts: int) -> list[range]:
    """Contiguous position ranges, one per rank, that never split a cache pack (the
    images whose file keys share a prefix; the set is in file-key order) and hold about
    the same number of images each."""
    bounds = [0]
    for i in range(1, len(keys)):
        if keys[i][:prefix] != keys[i - 1][:prefix]:
            bounds.append(i)
    bounds.append(len(keys))
    shares, start = [], 0
    for part in range(1, parts + 1):
        goal = len(keys) * part / parts
        end = min((b for b in bounds if b >= start), key=lambda b: abs(b - goal))
        end = len(keys) if part == parts else max(end, start)
        shares.append(range(start, end))
        start = end
    return shares


def gather_to_all(world: World, value: object) -> list[object]:
    """Every rank's `value`, in rank order, on every rank (tensors travel pickled:
    the features of a share, a list of skipped files)."""
    import torch.distributed as dist

    if not world.distributed:
        return [value]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def broadcast(world: World, value: object) -> object:
    """Rank 0's `value` on every rank."""
    import torch.distributed as dist

    if not world.distributed:
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

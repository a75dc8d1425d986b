"""Where and how the audit computes: the device, CPU threads, bf16 autocast, and
progress lines.

Kept apart from the models and the pipeline so that every module that moves tensors
(encoders, MAE training, the scans) asks the same questions in one way.

Shared CPUs: torch's OpenMP threads spin while they wait for work, so with another
busy process on the same cores (a shared CI runner, pytest -n 2) each of them burns
the time slices the other needs: a pixel audit took 101 s instead of 12. Passive
waiting (OMP_WAIT_POLICY=PASSIVE, read once when torch loads OpenMP) and as many
threads as the process may use (affinity, cgroup quota, xdist workers) keep it steady:
26 s. The command line and the plugin call `prefer_passive_waiting()` before anything
imports torch, so this module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AuditInputError

if TYPE_CHECKING:
    import ctypes

    import torch

# progress(stage, done, total): called as long stages advance
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A Progress that shows nothing."""


def prefer_passive_waiting() -> bool:
    """Make torch's threads sleep, not spin, while they wait, unless the user chose a
    policy or torch is loaded already. Returns whether passive waiting is in effect."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def cpu_budget(alone: bool = False) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a
    container's --cpus), shared among the pytest-xdist workers of one run and among
    torchrun's processes on this machine (unless `alone`: rank 0 once the others are
    done)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    # torchrun's processes on this machine share it too
    if not alone:
        workers *= int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, workers))


def _cgroup_quota() -> float | None:
    """CPUs granted by the cgroup v2 `cpu.max` (or v1 cfs quota), None when unlimited."""
    try:
        fields = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


@contextmanager
def cpu_threads(n: int | None = None) -> Iterator[int]:
    """Run with torch's intra-op threads set to `n` (default: `cpu_budget()`), then
    give the caller back its own setting."""
    import torch

    before = torch.get_num_threads()
    n = n or cpu_budget()
    limit_heap_arenas()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


HEAP_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_heap_arenas() -> None:
    """At most HEAP_ARENAS glibc heaps for this process's threads (unless the user set
    MALLOC_ARENA_MAX). Each thread that allocates gets a heap of its own otherwise (up
    to 8 per core), and each keeps what it freed: measured, a cold ImageCLEF-size
    audit with --features pixels peaked at 1,628 MiB with 2 heaps and 3,086 MiB without
    the limit, as fast. Elsewhere than glibc, nothing."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, HEAP_ARENAS)


def return_freed_memory() -> None:
    """Give the memory freed so far back to the system (glibc's malloc_trim; elsewhere
    nothing). Blocks of a few MB, allocated and freed by the thousand, stay in the heap
    otherwise: measured, 1 GB more resident memory at ImageCLEF size."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, or None on another system or C library (musl has neither call)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist, or not glibc
    except (OSError, AttributeError):
        return None
    return libc


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a usage error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AuditInputError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return torch.device(name)


def device_identity(device: torch.device) -> list[str]:
    """What about a device changes numbers: its kind and its model (a GPU's name, a
    CPU's architecture)."""
    import torch

    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return [device.type, where]


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast where the hardware does bf16 matrix multiplies natively (a CUDA GPU
    that supports it; a CPU with AMX or AVX512-BF16: 7x the float32 rate here), else
    float32, which is faster than emulated bf16."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    # private helpers of torch.cpu; where a torch lacks them, float32
    names = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in names)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on the device's kind, or a no-op when `bf16` is False."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


class ProgressPrinter:
    """A Progress that calls `write(text)` as stages advance: one line rewritten in
    place on a terminal, a few plain lines (0, 25, 50, 75, 100 %) in a CI log."""

    def __init__(self, write: Callable[[str], object], interactive: bool):
        self.write, self.interactive = write, interactive
        self._stage, self._last_quarter, self._last_time = "", -1, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._stage, self._last_quarter = stage, -1
        percent = 100 * done // max(total, 1)
        line = f"gan-audit: {stage} {done}/{total} ({percent}%)"
        if self.interactive:
            now = time.perf_counter()
            if done == total or now - self._last_time > 0.2:  # don't flood the terminal
                self._last_time = now
                self.write("\r" + line + ("\n" if done == total else ""))
        elif percent // 25 > self._last_quarter:
            self._last_quarter = percent // 25
            self.write(line + "\n")


class Stopwatch:
    """Seconds per stage, for a result's timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self.last, 3)
        self.last = now

    def move(self, seconds: float, source: str, target: str) -> None:
        """Count `seconds` of the stage `source` as the stage `target`'s (a streamed
        encoding runs inside the attacks that read it)."""
        self.timings[source] = round(self.timings[source] - seconds, 3)
        self.timings[target] = round(self.timings[target] + seconds, 3)

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        return self.timings

"""Where and how the audit computes: the device, bf16 autocast, and progress lines.

Kept apart from the models and the pipeline so that every module that moves tensors
(encoders, MAE training, the scans) asks the same questions in one way.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

from .errors import AuditInputError

# progress(stage, done, total): called as long stages advance
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A Progress that shows nothing."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a usage error."""
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
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return [device.type, where]


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast where the hardware does bf16 matrix multiplies natively (a CUDA GPU
    that supports it; a CPU with AMX or AVX512-BF16: 7x the float32 rate here), else
    float32, which is faster than emulated bf16."""
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
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


class ProgressPrinter:
    """A Progress that calls `write(text)` as stages advance: one line rewritten in
    place on a terminal, a few plain lines (0, 25, 50, 75, 100 %) in a CI log."""

    def __init__(self, write: Callable[[str], None], interactive: bool):
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
